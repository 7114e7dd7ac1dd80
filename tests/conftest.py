"""Shared fixtures: factories for real parts at tiny size (models, transcoder files, databases)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
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
