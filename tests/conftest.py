"""Shared fixtures: factories for real parts at tiny size (models, transcoder files, databases)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import NamedTuple

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent


class CliResult(NamedTuple):
    returncode: int   # the exit status, as the shell would see it
    stdout: str       # what the command printed: its summary, or its report with --json
    stderr: str       # progress lines, `error: ...`, and an unexpected exception's traceback


def run_cli(*args: str, env: dict | None = None, check: bool = True, timeout: float = 600) -> CliResult:
    """Run `python -m cli ARGS` in a subprocess, as a user would run `atlas ARGS` (for tests of the
    real entry point: exit status, start-up imports, signals)."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=REPO, timeout=timeout)
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


# ---- transcoders ---------------------------------------------------------------------------------
# write_transcoder_files(fmt, root, ...) writes a real transcoder set in one of the published file
# formats, with known random tensors, for `tiny_model` (d_model 64) by default. It returns a
# WrittenTranscoders: .spec ('FORMAT:PATH', ready for atlas.transcoders.load_transcoders or the
# CLI), .path, and .tensors {layer: {key: tensor}} exactly as stored, in the format's own layout
# (Dunefsky: input bias b_dec + output bias b_dec_out; circuit-tracer: W_enc stored [F, d]).

TRANSCODER_FILE_FORMATS = ("saelens", "dunefsky", "gemmascope", "circuit-tracer")


class WrittenTranscoders:
    def __init__(self, fmt: str, path: Path, tensors: dict):
        self.format, self.path, self.tensors = fmt, path, tensors
        self.spec = f"{fmt}:{path}"


def _random_transcoder_tensors(gen, d_in: int, d_sae: int, d_out: int, jumprelu: bool, skip: bool) -> dict:
    import torch

    t = {"W_enc": torch.randn(d_in, d_sae, generator=gen) * 0.3,       # [d_in, d_sae]
         "b_enc": torch.randn(d_sae, generator=gen) * 0.2,             # [d_sae]
         "W_dec": torch.randn(d_sae, d_out, generator=gen) * 0.1,      # [d_sae, d_out]
         "b_dec": torch.randn(d_out, generator=gen) * 0.05}            # [d_out]
    if jumprelu:
        t["threshold"] = torch.rand(d_sae, generator=gen) * 0.5        # [d_sae], >= 0
    if skip:
        t["W_skip"] = torch.randn(d_out, d_in, generator=gen) * 0.05   # [d_out, d_in]
    return t


def _fake_sae_training_config(layer: int, d_in: int):
    """A config object of a class in a module (`sae_training.config`) that is removed from
    sys.modules again by the caller, as that module is absent on a user's machine."""
    import dataclasses
    import types

    import torch

    pkg, mod = types.ModuleType("sae_training"), types.ModuleType("sae_training.config")

    @dataclasses.dataclass
    class LanguageModelSAERunnerConfig:
        hook_point: str
        out_hook_point: str
        d_in: int
        dtype: object

    LanguageModelSAERunnerConfig.__module__ = mod.__name__
    LanguageModelSAERunnerConfig.__qualname__ = "LanguageModelSAERunnerConfig"
    mod.LanguageModelSAERunnerConfig = LanguageModelSAERunnerConfig
    pkg.config = mod
    sys.modules.update({"sae_training": pkg, "sae_training.config": mod})
    return LanguageModelSAERunnerConfig(f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out",
                                        d_in, torch.float32)


def write_transcoder_set(fmt: str, root: Path, layers=(0, 1), d_in: int = 64, d_sae: int = 96,
                         d_out: int | None = None, jumprelu: bool | None = None, skip: bool = False,
                         seed: int = 0) -> WrittenTranscoders:
    import torch

    from atlas.transcoders.writers import write_layer

    if fmt not in TRANSCODER_FILE_FORMATS:
        raise ValueError(f"unknown transcoder file format {fmt!r}")
    jumprelu = (fmt == "gemmascope") if jumprelu is None else jumprelu
    gen = torch.Generator().manual_seed(seed)
    written = {}
    for layer in layers:
        t = _random_transcoder_tensors(gen, d_in, d_sae, d_out or d_in, jumprelu, skip)
        if fmt == "dunefsky":  # input-centering bias b_dec [d_in], output bias b_dec_out [d_out]
            t = {**t, "b_dec": torch.randn(d_in, generator=gen) * 0.5, "b_dec_out": t["b_dec"]}
            try:
                write_layer(fmt, root, layer, t, cfg=_fake_sae_training_config(layer, d_in))
            finally:
                del sys.modules["sae_training"], sys.modules["sae_training.config"]
        elif fmt == "circuit-tracer":  # W_enc stored [d_sae, d_in]
            t = {**t, "W_enc": t["W_enc"].T.contiguous()}
            write_layer(fmt, root, layer, t)
        else:
            write_layer(fmt, root, layer, t)
        written[layer] = t
    return WrittenTranscoders(fmt, Path(root), written)


@pytest.fixture
def write_transcoder_files(tmp_path):
    """Factory: write_transcoder_files(fmt, layers=(0, 1), d_sae=96, jumprelu=None, skip=False, seed=0,
    root=None) -> WrittenTranscoders (files under tmp_path unless root is given)."""
    def make(fmt: str, root: Path | None = None, **kwargs) -> WrittenTranscoders:
        return write_transcoder_set(fmt, root or tmp_path / f"tc-{fmt}", **kwargs)

    return make
# ---- WeightLens ------------------------------------------------------------------------------------


def build_transcoder_set(model, d_sae: int = 64, seed: int = 0, set_name: str = "test", jumprelu: bool = False,
                         layers=None):
    """A TranscoderSet of random SAELens transcoders (ln2.hook_normalized -> hook_mlp_out) for `model`."""
    import torch
    from sae_lens import (JumpReLUTranscoder, JumpReLUTranscoderConfig, Transcoder, TranscoderConfig)

    from atlas.transcoders.transcoder_set import LayerTranscoder, TranscoderSet

    gen = torch.Generator().manual_seed(seed)
    d = model.cfg.d_model
    out = TranscoderSet(set_name)
    for layer in (range(model.cfg.n_layers) if layers is None else layers):
        cfg_cls, cls = (JumpReLUTranscoderConfig, JumpReLUTranscoder) if jumprelu else (TranscoderConfig, Transcoder)
        sae = cls(cfg_cls(d_in=d, d_sae=d_sae, d_out=d, apply_b_dec_to_input=False))
        with torch.no_grad():
            sae.W_enc.copy_(torch.randn(d, d_sae, generator=gen) / d ** 0.5)
            sae.W_dec.copy_(torch.randn(d_sae, d, generator=gen) / d ** 0.5)
            sae.b_enc.copy_(torch.randn(d_sae, generator=gen) * 0.1)
        sae.eval()
        out.layers[layer] = LayerTranscoder(layer, sae, f"blocks.{layer}.ln2.hook_normalized",
                                            f"blocks.{layer}.hook_mlp_out", "test", f"memory:{set_name}/{layer}")
    return out


@pytest.fixture
def transcoder_set_factory():
    return build_transcoder_set


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
# ---- circuitlens ---------------------------------------------------------------------------------


def build_transcoders(model, d_sae: int = 48, kind: str = "relu", seed: int = 0, layers=None, set_name: str = "test"):
    """A TranscoderSet of SAELens transcoders with random weights (kind: relu, jumprelu, skip, jumprelu-skip),
    reading ln2.hook_normalized and writing hook_mlp_out of each layer (default: every layer)."""
    import torch
    from sae_lens import (JumpReLUSkipTranscoder, JumpReLUSkipTranscoderConfig, JumpReLUTranscoder,
                          JumpReLUTranscoderConfig, SkipTranscoder, SkipTranscoderConfig, Transcoder,
                          TranscoderConfig)

    from atlas.transcoders.transcoder_set import LayerTranscoder, TranscoderSet

    classes = {"relu": (Transcoder, TranscoderConfig), "jumprelu": (JumpReLUTranscoder, JumpReLUTranscoderConfig),
               "skip": (SkipTranscoder, SkipTranscoderConfig),
               "jumprelu-skip": (JumpReLUSkipTranscoder, JumpReLUSkipTranscoderConfig)}
    cls, cfg_cls = classes[kind]
    d = model.cfg.d_model
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for l in (layers if layers is not None else range(model.cfg.n_layers)):
        tc = cls(cfg_cls(d_in=d, d_sae=d_sae, d_out=d, apply_b_dec_to_input=False))
        with torch.no_grad():
            tc.W_enc.copy_(torch.randn(d, d_sae, generator=gen) * 0.4)
            tc.b_enc.copy_(torch.randn(d_sae, generator=gen) * 0.3 - 0.8)
            tc.W_dec.copy_(torch.randn(d_sae, d, generator=gen) * 0.1)
            tc.b_dec.copy_(torch.randn(d, generator=gen) * 0.05)
            if "jumprelu" in kind:
                tc.threshold.copy_(torch.rand(d_sae, generator=gen) * 0.5)
            if "skip" in kind:
                tc.W_skip.copy_(torch.randn(d, d, generator=gen) * 0.05)
        tc.eval()
        out[l] = LayerTranscoder(l, tc, f"blocks.{l}.ln2.hook_normalized", f"blocks.{l}.hook_mlp_out", "test", f"mem:{l}")
    return TranscoderSet(set_name, out)


@pytest.fixture(scope="session")
def make_transcoders():
    return build_transcoders


class _ChatHandler(BaseHTTPRequestHandler):
    seen: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _ChatHandler.seen.append((self.path, body, self.headers.get("Authorization")))
        if body["model"] == "broken":
            self.send_response(500)
            self.end_headers()
            return
        reply = {"choices": [{"message": {"role": "assistant", "content": "  river banks  "}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


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
# ---- demo: text files and tiny training configurations ------------------------------------------------

_WORDS = ("the a river city stone light king garden letter morning silver quiet old young north "
          "window road horse bread winter summer sister brother friend house ship song bird field "
          "walked saw found gave kept opened closed carried wrote read heard remembered").split()


def write_text_corpus(directory: Path, n_docs: int = 60, words_per_doc: int = 120, seed: int = 0) -> Path:
    """A directory with a .txt, a .jsonl and a .parquet file of deterministic pseudo-English documents."""
    import json
    import random

    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    docs = []
    for d in range(n_docs):
        sentences = []
        for _ in range(words_per_doc // 8):
            words = [rng.choice(_WORDS) for _ in range(8)]
            sentences.append(" ".join(words).capitalize() + ".")
        docs.append(f"Document {d}. " + " ".join(sentences))
    directory.mkdir(parents=True, exist_ok=True)
    third = n_docs // 3
    (directory / "a.txt").write_text("\n\n".join(docs[:third]) + "\n")
    (directory / "b.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs[third:2 * third]))
    pq.write_table(pa.table({"text": docs[2 * third:]}), directory / "c.parquet")
    return directory


@pytest.fixture
def text_corpus(tmp_path):
    """Factory: ``text_corpus(n_docs=..., words_per_doc=...)`` -> a directory of txt/jsonl/parquet text."""
    def make(**kwargs) -> Path:
        return write_text_corpus(tmp_path / f"corpus{len(list(tmp_path.glob('corpus*')))}", **kwargs)
    return make


def tiny_train_config(**overrides):
    """A TrainConfig for random:tiny that trains in seconds."""
    from atlas.config import TrainConfig

    base = dict(model="random:tiny", set_name="tiny-tc", layers=(0, 1), d_sae=128, k=8, n_tokens=4096, epochs=3,
                batch_size=128, lr=3e-3, aux_k=32, dead_after_tokens=1024, eval_tokens=1024, eval_loss_tokens=256,
                collect_batch=16)
    return TrainConfig(**{**base, **overrides})
