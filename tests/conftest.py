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
