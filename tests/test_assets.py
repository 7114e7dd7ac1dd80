"""atlas/assets.py error paths and the SWORD / fortunes readers, on files written here."""

from __future__ import annotations

import struct
import zlib

import pytest

from atlas.config import AssetsConfig
from atlas.errors import AssetError, ModelLoadError


def test_corrupt_gguf_is_a_clear_error(tmp_path):
    from atlas.models import load_model

    bad_magic = tmp_path / "model.gguf"
    bad_magic.write_bytes(b"NOPE" + bytes(64))
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        load_model(f"gguf:{bad_magic}")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF" + struct.pack("<I", 3) + bytes(20))
    with pytest.raises(ModelLoadError, match="could not read the GGUF file .*truncated.gguf"):
        load_model(f"gguf:{truncated}")


def test_missing_weights_package_says_to_run_make_assets(tmp_path):
    from atlas.assets import ensure_gguf

    with pytest.raises(AssetError, match="not installed: run `make assets`"):
        ensure_gguf(AssetsConfig(gguf_package="atlas_no_such_weights_package"), root=tmp_path)


def test_default_model_missing_says_to_run_make_assets(tmp_path, monkeypatch):
    from atlas.models import load_model

    monkeypatch.setenv("ATLAS_CACHE", str(tmp_path))
    with pytest.raises(ModelLoadError, match="make assets"):
        load_model("default")


def test_unfetchable_debian_package_is_a_clear_error(tmp_path):
    from atlas.assets import debian_package_root

    with pytest.raises(AssetError, match="could not fetch the Debian package 'atlas-no-such-package'.*atlas assets"):
        debian_package_root("atlas-no-such-package", root=tmp_path, apt_update=False)


def test_cli_prints_asset_errors_as_one_line(cli, tmp_path):
    proc = cli(
        "train-transcoders",
        "--corpus",
        str(tmp_path / "missing.txt"),
        "--model",
        "random:tiny",
        "--layers",
        "1",
        env={"ATLAS_CACHE": str(tmp_path)},
        check=False,
    )
    assert proc.returncode == 2
    assert "no corpus file or directory" in proc.stderr and "Traceback" not in proc.stderr


def _write_ztext(module, verses_by_chapter):
    """A SWORD zText module: one zlib block, verses indexed by .bzv, a chapter tag opening each chapter."""
    raw, entries = b"", [(0, 0, 0), (0, 0, 0)]  # SWORD's leading empty entries
    for chapter, verses in verses_by_chapter:
        for i, verse in enumerate(verses):
            text = (f'<chapter osisID="{chapter}" sID="{chapter}"/>' if i == 0 else "") + verse
            data = text.encode()
            entries.append((0, len(raw), len(data)))
            raw += data
    block = zlib.compress(raw)
    module.mkdir(parents=True)
    (module / "nt.bzz").write_bytes(block)
    (module / "nt.bzs").write_bytes(struct.pack("<III", 0, len(block), len(raw)))
    (module / "nt.bzv").write_bytes(b"".join(struct.pack("<IIH", *e) for e in entries))


def test_sword_ztext_reader(tmp_path):
    from atlas.textsources import read_sword_ztext

    _write_ztext(
        tmp_path / "usr/share/sword/modules/texts/ztext/test",
        [
            (
                "John.1",
                [
                    '<w lemma="x">In</w> the beginning<note placement="foot">a note</note> was the Word.',
                    "<title>Heading</title>And the Word was with God.",
                ],
            ),
            ("John.2", ["On the third day there was a wedding."]),
        ],
    )
    docs = read_sword_ztext(tmp_path, "Bible")
    assert docs == [
        ("Bible", "John.1", "In the beginning was the Word. And the Word was with God."),
        ("Bible", "John.2", "On the third day there was a wedding."),
    ]


def test_fortunes_reader_and_empty_package(tmp_path):
    from atlas.textsources import read_fortunes

    directory = tmp_path / "usr/share/games/fortunes"
    directory.mkdir(parents=True)
    (directory / "wisdom").write_text("A first one.\n%\nA second\n  on two lines.\n%\n")
    (directory / "wisdom.dat").write_bytes(b"\x00\x01binary index")
    assert read_fortunes(tmp_path) == [
        ("fortunes", "wisdom", "A first one."),
        ("fortunes", "wisdom", "A second\n  on two lines."),
    ]
    with pytest.raises(AssetError, match="no fortune files"):
        read_fortunes(tmp_path / "elsewhere")
