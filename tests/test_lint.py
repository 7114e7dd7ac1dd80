"""The tree stays as ruff (lint and format) and mypy leave it: the configuration is pyproject.toml's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True)


@pytest.mark.parametrize("argv", [("check", "."), ("format", "--check", ".")], ids=["lint", "format"])
def test_ruff_finds_nothing(argv):
    res = _run(str(BIN / "ruff"), *argv)
    assert res.returncode == 0, res.stdout + res.stderr


def test_mypy_finds_nothing():
    # the files and settings are pyproject.toml's [tool.mypy]; the cache (.mypy_cache/, gitignored) makes
    # a repeated run take seconds instead of over a minute
    res = _run(str(BIN / "mypy"))
    assert res.returncode == 0, res.stdout + res.stderr
