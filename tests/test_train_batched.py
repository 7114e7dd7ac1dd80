"""atlas/train_batched.py: the batched trainer against the single-layer trainer, determinism, resume,
and atlas/train_budget.py's refusal of a build that cannot fit in memory."""

from __future__ import annotations

import pytest
import torch

from atlas.errors import TranscoderError
from tests.factories import tiny_train_config


def _layer_data(seed: int, n: int = 2048, d: int = 16):
    """Two different 'layers': a non-trivial offset and gain on x, an MLP-like y with a bias."""
    g = torch.Generator().manual_seed(seed)
    x = 3 + (1 + seed) * torch.randn(n, d, generator=g)
    y = torch.relu(x @ torch.randn(d, d, generator=g)) + 0.5 + 0.1 * torch.randn(n, d, generator=g)
    return x, y


def test_batched_tracks_the_single_layer_trainer(tmp_path):
    """Same data, seed and batch order: the stacked trainer computes the single-layer arithmetic (bmm vs mm)."""
    from atlas import train
    from atlas.train_batched import train_layers

    cfg = tiny_train_config(d_sae=32, k=4, batch_size=64, epochs=1, dead_after_tokens=256)  # AuxK fires too
    data = {0: _layer_data(0), 3: _layer_data(1)}
    batched = train_layers(cfg, data, tmp_path / "b.pt", "batched")
    for layer, (x, y) in data.items():
        single, norm, stats = train.train_layer(cfg, x, y, tmp_path / f"s{layer}.pt", "single")
        w = batched.weights[layer]
        for a, b in (
            (w.W_enc, single.W_enc),
            (w.b_enc, single.b_enc),
            (w.W_dec, single.W_dec),
            (w.b_dec, single.b_dec),
        ):
            torch.testing.assert_close(a, b.detach(), rtol=1e-3, atol=1e-4)
        assert w.threshold == pytest.approx(single.threshold, rel=1e-3)
        assert batched.stats[layer]["train_fve_last10pct"] == pytest.approx(stats["train_fve_last10pct"], abs=1e-4)
        torch.testing.assert_close(batched.norms[layer][0], norm[0])


def test_two_batched_runs_give_identical_weights(tmp_path):
    from atlas.train_batched import train_layers

    cfg = tiny_train_config(d_sae=32, k=4, batch_size=64, epochs=1)
    data = {0: _layer_data(0), 1: _layer_data(1)}
    a = train_layers(cfg, data, tmp_path / "a.pt", "a")
    b = train_layers(cfg, data, tmp_path / "b.pt", "b")
    for layer in data:
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            assert torch.equal(getattr(a.weights[layer], name), getattr(b.weights[layer], name)), (layer, name)
        assert a.weights[layer].threshold == b.weights[layer].threshold
    # and the layers did learn different transcoders from the same initial weights
    assert not torch.equal(a.weights[0].W_enc, a.weights[1].W_enc)


def test_batched_resume_from_checkpoint(tmp_path):
    from atlas.train_batched import train_layers

    cfg = tiny_train_config(d_sae=32, k=4, batch_size=64, epochs=2)  # 64 steps: a checkpoint at step 50
    data = {0: _layer_data(0), 1: _layer_data(1)}
    ckpt = tmp_path / "c.pt"
    full = train_layers(cfg, data, ckpt, "full")
    assert torch.load(ckpt, weights_only=False)["step"] == 50
    resumed = train_layers(cfg, data, ckpt, "resumed")  # as if killed after step 50
    for layer in data:
        torch.testing.assert_close(full.weights[layer].W_dec, resumed.weights[layer].W_dec)


def test_bf16_autocast_trains(tmp_path, caplog):
    """bf16 matmuls: close to, not equal to, the fp32 run (the option is real, and still learns); on a
    CPU without bf16 units the run says that it is emulated and slow."""
    from atlas.train_batched import train_layers

    g = torch.Generator().manual_seed(0)
    x = 3 + torch.randn(4096, 16, generator=g)
    data = {0: (x, torch.relu((x - 3) @ torch.randn(16, 16, generator=g)) + 0.5)}
    kw = dict(d_sae=64, k=8, batch_size=64, epochs=3, lr=3e-3)
    fp32 = train_layers(tiny_train_config(**kw), data, tmp_path / "a.pt", "fp32")
    bf16 = train_layers(tiny_train_config(**kw, bf16=True), data, tmp_path / "b.pt", "bf16")
    assert bf16.stats[0]["bf16"] is True
    assert fp32.stats[0]["train_fve_last10pct"] > 0.3  # measured 0.446 (fp32), 0.447 (bf16)
    assert abs(bf16.stats[0]["train_fve_last10pct"] - fp32.stats[0]["train_fve_last10pct"]) < 0.05
    assert not torch.equal(bf16.weights[0].W_enc, fp32.weights[0].W_enc)
    emulated = torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "AVX2")
    assert any("emulated" in r.getMessage() for r in caplog.records) == emulated


def test_memory_budget_refuses_before_starting():
    from atlas import train_budget
    from atlas.config import TrainConfig

    cfg = TrainConfig(layers=tuple(range(18)), n_tokens=65_536)
    p = train_budget.check(cfg, 18, 640, available=64 * 2**30)
    assert 6 * 2**30 < p.total_bytes < 12 * 2**30  # 18 layers x 73.7k tokens x 2 x 640 x 4 B = 6.3 GiB + state
    with pytest.raises(TranscoderError, match=r"needs about .* GiB .* available.*--width"):
        train_budget.check(TrainConfig(n_tokens=50_000_000), 18, 640, available=16 * 2**30)


def test_harvest_is_one_forward_stopping_at_the_last_layer(tiny_model):
    """collect(): one forward per batch for all layers; nothing after the deepest needed block runs."""
    from atlas.train import collect

    calls = {"resid_pre0": 0, "block1": 0, "ln_final": 0}

    def counter(name):
        def hook(act, hook):
            calls[name] += 1

        return hook

    tokens = torch.randint(0, 1000, (3, 4, 9))  # 3 batches of 4 sequences
    with tiny_model.hooks(
        fwd_hooks=[
            ("blocks.0.hook_resid_pre", counter("resid_pre0")),
            ("blocks.1.hook_resid_pre", counter("block1")),
            ("ln_final.hook_normalized", counter("ln_final")),
        ]
    ):
        out = collect(tiny_model, list(tokens), [0], 3 * 4 * 9, "harvest")
    assert calls == {"resid_pre0": 3, "block1": 0, "ln_final": 0}
    x, y = out[0]
    assert x.shape == y.shape == (3 * 4 * 8, tiny_model.cfg.d_model)  # BOS dropped


def test_two_builds_give_identical_transcoder_files(tmp_path, text_corpus):
    """The whole job twice (harvest, batched training, saving) into two directories: the same bytes."""
    from atlas.config import CorpusConfig
    from ingest.transcoders import run

    corpus = CorpusConfig(source=str(text_corpus(n_docs=150, words_per_doc=200)), seq_len=32, heldout_fraction=0.2)
    cfg = tiny_train_config(layers=(), n_tokens=2048, epochs=1)  # every layer of random:tiny
    a, ma = run(cfg, corpus, model_id="tiny", out_dir=tmp_path / "a")
    b, mb = run(cfg, corpus, model_id="tiny", out_dir=tmp_path / "b")
    assert sorted(ma) == [0, 1]
    for layer in ma:
        wa = (a / f"layer_{layer}" / "sae_weights.safetensors").read_bytes()
        assert wa == (b / f"layer_{layer}" / "sae_weights.safetensors").read_bytes()
        assert ma[layer]["fve"] == mb[layer]["fve"]
