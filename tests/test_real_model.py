"""The one real-model test: Gemma 3 270M from the cache `make assets` builds (CI's `make test` builds it).

It fails, not skips, when the assets are missing: the embedded default must work wherever tests pass.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

from tests.conftest import REPO

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def gemma():
    os.environ.setdefault("ATLAS_CACHE", str(REPO / ".cache" / "atlas"))
    from atlas.assets import corpus_path
    from atlas.models import converted_dir

    if not (converted_dir() / "complete").is_file() or not corpus_path().is_file():
        pytest.fail(f"the Gemma 3 270M assets are not in {converted_dir().parent.parent.parent}: run `make assets`")
    from atlas.models import load_model

    return load_model("default")


def test_gemma_predicts_mary(gemma):
    tokens = gemma.to_tokens("When Mary and John went to the store, John gave a drink to")
    with torch.no_grad():
        probs = gemma(tokens)[0, -1].softmax(-1)
    top = int(probs.argmax())
    assert gemma.tokenizer.decode([top]) == " Mary"
    assert float(probs[top]) > 0.5


def test_builtin_corpus_mixes_the_three_sources():
    import pyarrow.parquet as pq

    from atlas.assets import corpus_path

    table = pq.read_table(corpus_path(), columns=["source"])
    sources = set(table.column("source").to_pylist())
    assert "World English Bible" in sources and "fortunes" in sources
    assert any(s.startswith("Jane Austen") for s in sources)
    first = table.column("source").to_pylist()[:200]  # mixed, not one source after another
    assert len({s.split(":")[0] for s in first}) == 3


def test_trained_transcoder_beats_the_zero_baseline(gemma, tmp_path):
    from atlas.config import CorpusConfig, TrainConfig
    from atlas.train import train_transcoders

    cfg = TrainConfig(
        layers=(2,),
        d_sae=512,
        k=16,
        n_tokens=8192,
        epochs=4,
        batch_size=128,
        dead_after_tokens=2048,
        eval_tokens=2048,
        eval_loss_tokens=256,
    )
    metrics = train_transcoders(gemma, "gemma-3-270m", cfg, CorpusConfig(), tmp_path)[2]
    assert metrics["training"]["steps"] >= 200
    assert metrics["fve"] > 0.2, metrics  # the zero (and mean) baseline: 0
    assert 1 <= metrics["l0"] <= 64
    assert all(map(math.isfinite, (metrics["loss_clean"], metrics["loss_patched"], metrics["loss_zero_ablation"])))
