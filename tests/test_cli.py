"""The command line as a user runs it: fast help without heavy imports, clear one-line errors."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

HEAVY = ("torch", "transformer_lens", "sae_lens", "transformers")


def test_help_does_not_import_heavy_libraries():
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom atlas.cli import app\n"
            "r = CliRunner().invoke(app, ['--help'])\nassert r.exit_code == 0, r.output\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


def test_db_init_and_status(cli, tmp_path):
    path = tmp_path / "a.duckdb"
    assert "schema at revision" in cli("db", "init", str(path)).stdout
    status = cli("db", "status", str(path)).stdout
    assert "edges" in status and "features" in status


def test_errors_are_one_line_with_exit_code_2(cli, tmp_path):
    proc = cli("db", "status", str(tmp_path / "missing.duckdb"), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: no atlas database at")
    assert "Traceback" not in proc.stderr
