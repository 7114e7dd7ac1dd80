"""Shared fixtures: real parts at tiny size (models, transcoder files, databases), built by tests/factories.py."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import HTTPServer
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.factories import (  # noqa: F401
    REPO,
    TRANSCODER_FILE_FORMATS,
    JsonHandler,
    WrittenTranscoders,
    random_transcoder_set,
    tiny_train_config,
    write_text_corpus,
    write_transcoder_set,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# the repository's cache (converted model, corpus, tokenizers) whatever the working directory:
# atlas.config.cache_dir() defaults to ./.cache/atlas
os.environ.setdefault("ATLAS_CACHE", str(REPO / ".cache" / "atlas"))


class CliResult(NamedTuple):
    returncode: int  # the exit status, as the shell would see it
    stdout: str  # what the command printed: its summary, or its report with --json
    stderr: str  # progress lines, `error: ...`, and an unexpected exception's traceback


def run_cli(*args: str, env: dict | None = None, check: bool = True, timeout: float = 600) -> CliResult:
    """Run `python -m cli ARGS` in a subprocess, as a user would run `atlas ARGS` (for tests of the
    real entry point: exit status, start-up imports, signals)."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "cli", *args], capture_output=True, text=True, env=full_env, cwd=REPO, timeout=timeout
    )
    return _checked(args, check, CliResult(proc.returncode, proc.stdout, proc.stderr))


def run_cli_in_process(*args: str, env: dict | None = None, check: bool = True, timeout: float = 600) -> CliResult:
    """Run `atlas ARGS` in this process with typer's CliRunner (``env`` set for the call, cwd the repository);
    ``timeout`` is left to pytest-timeout. An exception other than the CLI's own exit shows as a traceback
    on stderr with status 1, as it would from the real entry point."""
    import contextlib
    import traceback

    from typer.testing import CliRunner

    from cli.main import app

    with contextlib.chdir(REPO):
        r = CliRunner().invoke(app, list(args), env=env)
    stderr = r.stderr
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        stderr += "".join(traceback.format_exception(r.exception))
    return _checked(args, check, CliResult(r.exit_code, r.stdout, stderr))


def _checked(args, check: bool, result: CliResult) -> CliResult:
    if check and result.returncode != 0:
        raise AssertionError(f"atlas {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def cli():
    """`atlas ARGS` in this process (CliRunner): where the process boundary is not what a test is about."""
    return run_cli_in_process


@pytest.fixture
def cli_process():
    """`atlas ARGS` as a subprocess of the real entry point (`python -m cli`)."""
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


# ---- transcoders (tests/factories.py) ---------------------------------------------------------------


@pytest.fixture
def write_transcoder_files(tmp_path):
    """Factory: write_transcoder_files(fmt, layers=(0, 1), d_sae=96, jumprelu=None, skip=False, seed=0,
    root=None) -> WrittenTranscoders (files under tmp_path unless root is given)."""

    def make(fmt: str, root: Path | None = None, **kwargs) -> WrittenTranscoders:
        return write_transcoder_set(fmt, root or tmp_path / f"tc-{fmt}", **kwargs)

    return make


# ---- api -----------------------------------------------------------------------------------------
# A tiny synthetic atlas (bench/synthetic_atlas.py), published behind a `current` symlink, and a
# real uvicorn server on a free loopback port serving it.


TINY_ATLAS = dict(n_layers=4, d_sae=64, k_up=6, n_tokens=3, n_examples=2)


@pytest.fixture(scope="session")
def synthetic_atlas(tmp_path_factory):
    """Factory: (name, **spec overrides) -> (working file, published `current` link); cached per name."""
    from atlas.publish import publish
    from bench.synthetic_atlas import SyntheticSpec, build

    made = {}

    def make(name: str = "tiny", **overrides):
        if name not in made:
            root = tmp_path_factory.mktemp(f"atlas-{name}")
            work = build(root / "work.duckdb", SyntheticSpec(**{**TINY_ATLAS, **overrides}))
            publish(work, root / "current.duckdb")
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


@pytest.fixture(scope="session")
def make_transcoders():
    """Factory: random_transcoder_set(model, d_sae=48, kind='relu', seed=0, layers=None, init=None)."""
    return random_transcoder_set


class _ChatHandler(JsonHandler):
    seen: list = []

    def do_POST(self):
        body = self.read_json()
        _ChatHandler.seen.append((self.path, body, self.headers.get("Authorization")))
        if body["model"] == "broken":
            self.send_response(500)
            self.end_headers()
            return
        self.reply_json(200, {"choices": [{"message": {"role": "assistant", "content": "  river banks  "}}]})


@pytest.fixture
def chat_server():
    """A real OpenAI-compatible chat-completions server on loopback: (base url, list of requests seen).
    It answers 'river banks'; the model name 'broken' gets HTTP 500."""
    server = HTTPServer(("127.0.0.1", 0), _ChatHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _ChatHandler.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", _ChatHandler.seen
    server.shutdown()


# ---- demo (tests/factories.py) ----------------------------------------------------------------------


@pytest.fixture
def text_corpus(tmp_path):
    """Factory: ``text_corpus(n_docs=..., words_per_doc=...)`` -> a directory of txt/jsonl/parquet text."""

    def make(**kwargs) -> Path:
        return write_text_corpus(tmp_path / f"corpus{len(list(tmp_path.glob('corpus*')))}", **kwargs)

    return make
