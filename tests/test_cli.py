"""The command line: fast help without heavy imports, clear one-line errors from the real entry point,
readable summaries and --json reports, defaults taken from the config dataclasses."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import tomllib

from tests.conftest import REPO

HEAVY = ("torch", "transformer_lens", "sae_lens", "transformers", "ray")


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom cli.main import app\n"
        "for args in (['--help'], ['ingest', 'activations', '--help'], ['demo', '--help']):\n"
        "    r = CliRunner().invoke(app, args)\n    assert r.exit_code == 0, r.output\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


def test_the_console_script_is_the_cli_main():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, name = scripts["atlas"].partition(":")
    from cli.main import main

    assert getattr(importlib.import_module(module), name) is main


def test_db_init_and_status(cli, tmp_path):
    path = tmp_path / "a.duckdb"
    assert "schema at revision" in cli("db", "init", str(path)).stdout
    status = cli("db", "status", str(path)).stdout
    assert "edges" in status and "features" in status
    report = json.loads(cli("db", "status", str(path), "--json").stdout)
    assert report["revision"] == report["head_revision"] and report["path"] == str(path)
    assert report["rows"]["features"] == 0 and "edges" in report["rows"]


def test_errors_are_one_line_with_exit_code_2(cli_process, tmp_path):
    """The real entry point (`python -m cli`, as the console script runs it)."""
    proc = cli_process("db", "status", str(tmp_path / "missing.duckdb"), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: no atlas database at")
    assert "Traceback" not in proc.stderr


def test_in_process_errors_read_as_from_the_entry_point(cli, tmp_path):
    proc = cli("db", "upgrade", str(tmp_path / "missing.duckdb"), check=False)
    assert (
        proc.returncode == 2
        and proc.stderr
        == f"error: no atlas database at {tmp_path / 'missing.duckdb'}; "
        f"create one with `atlas db init {tmp_path / 'missing.duckdb'}`\n"
    )


def test_option_defaults_are_the_config_defaults(cli):
    """What `--help` shows as a default is the config dataclass's default (no literal restated)."""
    from dataclasses import replace

    import typer.main

    from atlas.config import ActivationsConfig, CircuitLensConfig, CorpusConfig, DemoConfig, ScoringConfig
    from cli.main import app

    root = typer.main.get_command(app)
    defaults = lambda *path: {p.name: p.default for p in _command(root, path).params}  # noqa: E731
    acts = defaults("ingest", "activations")
    assert (
        replace(
            ActivationsConfig(),
            seq_len=acts["seq_len"],
            batch_size=acts["batch_size"],
            n_samples=acts["n_samples"],
            n_top=acts["n_top"],
            era=not acts["no_era"],
        )
        == ActivationsConfig()
    )
    circuits = defaults("ingest", "circuitlens")
    assert (circuits["batch_size"], circuits["eps"], circuits["min_samples"], circuits["seq_len"]) == (
        CircuitLensConfig.batch_size,
        CircuitLensConfig.eps,
        CircuitLensConfig.min_samples,
        ActivationsConfig.seq_len,
    )
    assert defaults("ingest", "scores")["seq_len"] == ScoringConfig.seq_len
    demo = defaults("demo")
    assert (demo["port"], demo["serve"], demo["corpus"]) == (DemoConfig.port, DemoConfig.serve, CorpusConfig.source)
    assert defaults("train-transcoders")["model_id"] == DemoConfig.model_id
    assert "default 5.5" in " ".join(cli("ingest", "weightlens", "--help").stdout.split())


def _command(group, path):
    for name in path:
        group = group.commands[name]
    return group
