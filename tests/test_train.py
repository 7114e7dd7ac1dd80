"""atlas/train.py + ingest/transcoders.py on random:tiny: training beats the zero baseline, the saved
directory is a SAELens JumpReLU transcoder, metrics reach the atlas, and runs resume."""

from __future__ import annotations

import json

import pytest
import torch

from atlas.config import CorpusConfig
from atlas.errors import TranscoderError
from tests.factories import tiny_train_config


@pytest.fixture
def corpus_cfg(text_corpus):
    return CorpusConfig(source=str(text_corpus(n_docs=150, words_per_doc=200)), seq_len=32, heldout_fraction=0.2)


def test_train_register_and_reuse(tmp_path, corpus_cfg, atlas_db):
    from sae_lens import SAE, JumpReLUTranscoder

    from atlas.db import connect_readonly
    from atlas.train import load_trained
    from ingest.transcoders import run

    cfg = tiny_train_config()
    out = tmp_path / "tc"
    out_dir, metrics = run(cfg, corpus_cfg, model_id="tiny", db_path=atlas_db, out_dir=out)
    assert sorted(metrics) == [0, 1]
    for layer, m in metrics.items():
        assert m["fve"] > 0.2, m  # the zero / mean baseline has fve 0
        assert 1 <= m["l0"] <= 4 * cfg.k, m
        assert 0 <= m["dead_share"] <= 1
        assert m["loss_recovered"] > 0, m  # better than zeroing the MLP output
        saved = out / f"layer_{layer}"
        sae = SAE.load_from_disk(saved)
        assert isinstance(sae, JumpReLUTranscoder)
        assert sae.cfg.metadata.hook_name == f"blocks.{layer}.ln2.hook_normalized"
        assert sae.cfg.metadata.hook_name_out == f"blocks.{layer}.hook_mlp_out"
        assert json.loads((saved / "training_config.json").read_text())["train"]["d_sae"] == cfg.d_sae
        assert json.loads((saved / "metrics.json").read_text())["fve"] == pytest.approx(m["fve"])

    # the stored metrics are the ones measured
    con = connect_readonly(atlas_db)
    rows = dict(
        con.execute(
            "SELECT s.layer, m.value FROM source_metrics m JOIN sources s USING (sid) "
            "WHERE m.method = 'reconstruction' AND m.metric = 'fve'"
        ).fetchall()
    )
    assert rows == pytest.approx({0: metrics[0]["fve"], 1: metrics[1]["fve"]})
    assert con.execute("SELECT count(*) FROM features").fetchone()[0] == 2 * cfg.d_sae
    assert con.execute("SELECT activation, format FROM sources").fetchall() == [("jumprelu", "saelens-dir")] * 2
    con.close()

    # the per-layer quality report reads every layer's metrics back
    from ingest.transcoders import RECON_KEYS, format_quality, quality

    report = quality(atlas_db, "tiny", cfg.set_name)
    assert [r["layer"] for r in report] == [0, 1]
    for r in report:
        assert {k: r[k] for k in RECON_KEYS} == pytest.approx({k: metrics[r["layer"]][k] for k in RECON_KEYS})
        assert r["meets_targets"] == (r["fve"] >= 0.70 and r["loss_recovered"] >= 0.85)
    table = format_quality(report)
    assert len(table.splitlines()) >= 3 and f"{metrics[1]['fve']:.3f}" in table
    assert quality(atlas_db, "tiny", "other-set") == []

    # the loaded set works on the model and checks against it
    from atlas.models import load_model

    model = load_model("random:tiny")
    tset = load_trained(out, [0, 1], cfg.set_name)
    tset.check_against(model)

    # a second run (one more layer asked for nothing) retrains nothing
    stamp = {l: (out / f"layer_{l}" / "sae_weights.safetensors").stat().st_mtime_ns for l in (0, 1)}
    _, again = run(cfg, corpus_cfg, model_id="tiny", db_path=atlas_db, out_dir=out)
    assert again == metrics
    assert stamp == {l: (out / f"layer_{l}" / "sae_weights.safetensors").stat().st_mtime_ns for l in (0, 1)}
    con = connect_readonly(atlas_db)
    assert con.execute("SELECT count(*) FROM sources").fetchone()[0] == 2
    con.close()

    # asking for layer 1 alone reuses it (the layer list is not part of the config hash)
    _, only1 = run(tiny_train_config(layers=(1,)), corpus_cfg, model_id="tiny", out_dir=out)
    assert only1 == {1: metrics[1]}


def test_resume_from_checkpoint_gives_the_same_transcoder(tmp_path):
    from atlas import train

    torch.manual_seed(0)
    x = torch.randn(2048, 16)
    y = torch.relu(x @ torch.randn(16, 16)) + 0.1 * torch.randn(2048, 16)
    cfg = tiny_train_config(d_sae=32, k=4, batch_size=64, epochs=2)  # 64 steps: a checkpoint at step 50
    ckpt = tmp_path / "layer.checkpoint.pt"
    full, norm, _ = train.train_layer(cfg, x, y, ckpt, "train")
    assert ckpt.is_file() and torch.load(ckpt, weights_only=False)["step"] == 50
    resumed, _, stats = train.train_layer(cfg, x, y, ckpt, "resume")  # as if killed after step 50
    for a, b in zip(full.params, resumed.params):
        torch.testing.assert_close(a, b)
    assert stats["steps"] == 64


def test_saved_transcoder_reads_raw_activations(tmp_path):
    """The normalization folded into the weights: SAELens output == the trainer's output in model units."""
    from atlas import train

    torch.manual_seed(1)
    x = 5 + 3 * torch.randn(1024, 16)  # a large constant offset, as in Gemma's ln2 input
    y = 40 * torch.tanh(x @ torch.randn(16, 16) / 10)
    cfg = tiny_train_config(d_sae=32, k=4, batch_size=64, epochs=1)
    trainer, (mx, sx, sy), _ = train.train_layer(cfg, x, y, tmp_path / "c.pt", "train")
    sae = train.to_saelens(trainer, (mx, sx, sy), 0, "m")
    with torch.no_grad():
        z = ((x - mx) / sx) @ trainer.W_enc + trainer.b_enc
        f = torch.where(z > trainer.threshold, z, torch.zeros_like(z))
        expected = (f @ trainer.W_dec + trainer.b_dec) * sy
        torch.testing.assert_close(sae.decode(sae.encode(x)), expected, rtol=1e-4, atol=1e-3)


def test_layer_out_of_range_is_a_clear_error(tmp_path, corpus_cfg, tiny_model):
    from atlas.train import train_transcoders

    with pytest.raises(TranscoderError, match=r"layers \[5\] do not exist"):
        train_transcoders(tiny_model, "random:tiny", tiny_train_config(layers=(5,)), corpus_cfg, tmp_path)


def test_cli_train_transcoders(cli, tmp_path, corpus_cfg):
    train = (
        "train-transcoders",
        "--model",
        "random:tiny",
        "--layers",
        "1",
        "--width",
        "64",
        "--tokens",
        "2048",
        "--corpus",
        corpus_cfg.source,
        "--out",
        str(tmp_path / "tc"),
    )
    proc = cli(
        *train,
        "--db",
        str(tmp_path / "a.duckdb"),
        env={"ATLAS_CACHE": str(tmp_path / "cache")},
        check=False,
    )
    # the CLI's defaults use seq_len 128; the tiny corpus has enough text for it
    assert proc.returncode == 0, proc.stderr
    assert "layer 1: fve" in proc.stdout
    assert (tmp_path / "tc" / "layer_1" / "cfg.json").is_file()
    again = cli(
        *train,
        "--json",
        env={"ATLAS_CACHE": str(tmp_path / "cache")},
    )  # trained already: reused
    report = json.loads(again.stdout)
    assert report["out_dir"] == str(tmp_path / "tc") and list(report["layers"]) == ["1"]
    assert report["layers"]["1"]["fve"] == pytest.approx(
        json.loads((tmp_path / "tc" / "layer_1" / "metrics.json").read_text())["fve"]
    )
    bad = cli(
        "train-transcoders", "--model", "random:tiny", "--layers", "x", env={"ATLAS_CACHE": str(tmp_path)}, check=False
    )
    assert bad.returncode == 2 and "--layers 'x'" in bad.stderr and "Traceback" not in bad.stderr
