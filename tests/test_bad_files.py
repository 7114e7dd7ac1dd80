"""Bad model and transcoder files get one clear line from the CLI (issue 16, item 5): GGUF files
with a short header, a damaged metadata table or truncated tensor data; transcoders with d_sae = 0."""

from __future__ import annotations

import numpy as np
import pytest

from atlas.errors import ModelLoadError


def write_gguf(path, n: int = 4096):
    """A small valid GGUF file: one float32 tensor of n values and one metadata entry."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint32("test.value", 7)
    w.add_tensor("t", np.arange(n, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_gguf_files_are_checked_step_by_step(tmp_path):
    from atlas.gguf_check import check_gguf

    good = write_gguf(tmp_path / "good.gguf")
    check_gguf(good)
    data = good.read_bytes()
    cases = {
        "short.gguf": (data[:20], "shorter than a GGUF header"),
        "version.gguf": (data[:4] + (9).to_bytes(4, "little") + data[8:], "GGUF version 9"),
        "counts.gguf": (data[:8] + (10**12).to_bytes(8, "little") + data[16:], "its header claims"),
        "metadata.gguf": (data[:60], "its GGUF metadata cannot be read"),
        "tensor.gguf": (data[: len(data) - 8000], "truncated"),
        "magic.gguf": (b"GGML" + data[4:], "not a GGUF file"),
    }
    for name, (content, expected) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ModelLoadError, match=expected):
            check_gguf(tmp_path / name)


def test_cli_bad_gguf_is_one_line(cli, tmp_path, write_transcoder_files):
    good = write_gguf(tmp_path / "good.gguf").read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(good[: len(good) - 8000])
    tc = write_transcoder_files("saelens", layers=(0,))
    proc = cli("inspect", "--model", f"gguf:{bad}", "--transcoders", tc.spec, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {bad} is truncated")


def test_cli_zero_width_transcoder_is_a_named_error(cli, tmp_path, write_transcoder_files):
    tc = write_transcoder_files("saelens", layers=(0,), d_sae=0)
    proc = cli(
        "ingest",
        "weightlens",
        "--model",
        "random:tiny",
        "--transcoders",
        tc.spec,
        "--db",
        str(tmp_path / "a.duckdb"),
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "has d_sae = 0 features" in proc.stderr
