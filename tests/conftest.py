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
