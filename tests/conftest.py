"""Shared fixtures: factories for real parts at tiny size (models, transcoder files, databases)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env: dict | None = None, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m atlas.cli ARGS` in a subprocess, as a user would run `atlas ARGS`."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "atlas.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=REPO, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"atlas {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def tiny_model():
    """A 2-layer random HookedTransformer with the real GPT-2 tokenizer (read-only: do not mutate)."""
    from atlas.models import load_model

    return load_model("random:tiny")


@pytest.fixture
def atlas_db(tmp_path):
    """A fresh atlas database file built by the migrations."""
    from atlas import db

    path = tmp_path / "atlas.duckdb"
    db.upgrade(path)
    return path


# ---- api -----------------------------------------------------------------------------------------
# A tiny synthetic atlas (bench/synthetic_atlas.py), published behind a `current` symlink, and a
# real uvicorn server on a free loopback port serving it.


TINY_ATLAS = dict(n_layers=4, d_sae=64, k_up=6, n_tokens=3, n_examples=2)


@pytest.fixture(scope="session")
def synthetic_atlas(tmp_path_factory):
    """Factory: (name, **spec overrides) -> (working file, published `current` link); cached per name."""
    from bench.synthetic_atlas import SyntheticSpec, build

    from atlas import db

    made = {}

    def make(name: str = "tiny", **overrides):
        if name not in made:
            root = tmp_path_factory.mktemp(f"atlas-{name}")
            work = build(root / "work.duckdb", SyntheticSpec(**{**TINY_ATLAS, **overrides}))
            db.publish(work, root / "current.duckdb")
            made[name] = (work, root / "current.duckdb")
        return made[name]

    return make


@pytest.fixture(scope="session")
def api_server():
    """Factory: (db path, ApiLimits) -> base URL of a uvicorn server on loopback (stopped at the end)."""
    import socket
    import threading
    import time

    import uvicorn

    from api.app import build_app
    from api.limits import ApiLimits

    servers = []

    def start(path, limits: ApiLimits = ApiLimits()) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        app = build_app(path, limits)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        servers.append((server, thread))
        url = f"http://127.0.0.1:{port}"
        start.apps[url] = app
        return url

    start.apps = {}
    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)
