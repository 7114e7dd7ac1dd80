"""`atlas inspect`: the report through the real CLI, and the quality figures against ground truth
(a transcoder that *is* the MLP of a ReLU model must explain all of its variance)."""

from __future__ import annotations

import json
import re

import pytest
import torch

from atlas.inspect import SENTENCES, fraction_of_variance_explained, measure_quality
from atlas.transcoders import TranscoderSet
from atlas.transcoders.build import build_layer


def test_fve_hand_cases():
    y = torch.tensor([[1.0, 2.0], [3.0, 0.0], [5.0, 4.0]])
    assert fraction_of_variance_explained(y, y) == 1.0
    assert fraction_of_variance_explained(y, y.mean(0, keepdim=True).expand_as(y)) == pytest.approx(0.0)
    # ȳ = (3, 2); residual Σ = 1 + 1 = 2; total Σ‖y - ȳ‖² = (4+0) + (0+4) + (4+4) = 16
    y_hat = y + torch.tensor([[1.0, 0.0], [0.0, -1.0], [0.0, 0.0]])
    assert fraction_of_variance_explained(y, y_hat) == pytest.approx(1 - 2 / 16)


def test_transcoder_equal_to_a_relu_mlp_explains_all_variance():
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from atlas.models import gpt2_tokenizer

    torch.manual_seed(0)
    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=32,
        d_head=8,
        n_heads=4,
        d_mlp=48,
        d_vocab=50257,
        n_ctx=64,
        act_fn="relu",
        normalization_type="LN",
        default_prepend_bos=True,
    )
    model = HookedTransformer(cfg, tokenizer=gpt2_tokenizer())
    for p in model.parameters():  # TransformerLens leaves biases at zero: make them matter
        torch.nn.init.normal_(p, std=0.3)
    tset = TranscoderSet("exact")
    for layer in (0, 1):
        # TransformerLens' ln2.hook_normalized is (x - mean) / scale, *before* the gain w and bias b:
        # the MLP of that input is relu((x̂ w + b) W_in + b_in) W_out + b_out.
        mlp, ln = model.blocks[layer].mlp, model.blocks[layer].ln2
        W_enc = ln.w.detach()[:, None] * mlp.W_in.detach()  # [d_model, d_mlp]
        b_enc = mlp.b_in.detach() + ln.b.detach() @ mlp.W_in.detach()  # [d_mlp]
        tset.layers[layer] = build_layer(
            "exact",
            layer,
            format="test",
            uri="exact",
            W_enc=W_enc,
            b_enc=b_enc,
            W_dec=mlp.W_out.detach(),
            b_dec=mlp.b_out.detach(),
        )
    quality = measure_quality(model, tset, SENTENCES[:2])
    caches = [model.run_with_cache(model.to_tokens(t))[1] for t in SENTENCES[:2]]
    for layer in (0, 1):
        pre = torch.cat([c[f"blocks.{layer}.mlp.hook_pre"][0, 1:] for c in caches])  # [n_tok, d_mlp], BOS dropped
        assert quality[layer].fve == pytest.approx(1.0, abs=1e-6)
        assert quality[layer].n_tokens == pre.shape[0]
        assert quality[layer].l0 == pytest.approx((pre > 0).sum(-1).float().mean().item(), abs=1e-4)  # active neurons
        assert 0 < quality[layer].l0 < 48
    # a transcoder for the *other* layer explains (much) less: the hooks are really read per layer
    swapped = TranscoderSet(
        "swapped",
        {
            0: build_layer(
                "s",
                0,
                format="test",
                uri="s",
                W_enc=tset[1].W_enc,
                b_enc=tset[1].b_enc,
                W_dec=tset[1].W_dec,
                b_dec=tset[1].b_dec,
            )
        },
    )
    assert measure_quality(model, swapped, SENTENCES[:2])[0].fve < 0.9


def test_inspect_cli_prints_the_set_and_its_quality(cli, write_transcoder_files):
    w = write_transcoder_files("saelens", layers=(0, 1), d_sae=80)
    out = cli(
        "inspect",
        "--model",
        "random:tiny",
        "--transcoders",
        w.spec,
        "--layers",
        "0-1",
        "--text",
        "Hello world, this is a test.",
        "--text",
        "A second sentence.",
    ).stdout
    assert "set 'saelens-transcoder', 2 layer(s)" in out
    assert "on 2 sentences" in out
    for layer in (0, 1):
        row = next(line for line in out.splitlines() if line.startswith(f"{layer} "))
        cells = row.split()
        assert cells[:10] == [
            str(layer),
            f"blocks.{layer}.ln2.hook_normalized",
            f"blocks.{layer}.hook_mlp_out",
            "64",
            "80",
            "64",
            "relu",
            "no",
            "float32",
            "saelens",
        ]
        assert re.fullmatch(r"-?\d+\.\d{4}", cells[10]) and 0 <= float(cells[11]) <= 80
    report = json.loads(
        cli(
            "inspect",
            "--model",
            "random:tiny",
            "--transcoders",
            w.spec,
            "--layers",
            "0-1",
            "--text",
            "Hello world, this is a test.",
            "--json",
        ).stdout
    )
    assert report["set_name"] == "saelens-transcoder" and report["n_texts"] == 1
    for layer, row in zip((0, 1), report["layers"]):
        assert (row["layer"], row["d_in"], row["d_sae"], row["format"]) == (layer, 64, 80, "saelens")
        assert row["fve"] <= 1 and 0 <= row["l0"] <= 80 and row["n_tokens"] > 0


def test_inspect_cli_mismatch_and_bad_input_exit_2_with_one_line(cli, tmp_path, write_transcoder_files):
    w = write_transcoder_files("gemmascope", layers=(0,), d_in=48)
    proc = cli("inspect", "--model", "random:tiny", "--transcoders", w.spec, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: transcoder 'gemmascope-transcoder' layer 0 ({w.tensors and next(w.path.rglob('params.npz'))}): "
        "input width 48 does not match the model's d_model 64"
    ]
    proc = cli("inspect", "--model", "random:tiny", "--transcoders", f"dunefsky:{tmp_path / 'none'}", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"error: no such file or directory: {tmp_path / 'none'}" in proc.stderr


def test_quality_on_empty_and_overlong_texts(tiny_model, write_transcoder_files):
    from atlas.errors import AtlasError
    from atlas.transcoders import load_transcoders

    tset = load_transcoders(write_transcoder_files("circuit-tracer", skip=True).spec, model=tiny_model)
    with pytest.raises(AtlasError, match="no tokens to measure on"):
        measure_quality(tiny_model, tset, [""])
    q = measure_quality(tiny_model, tset, ["word " * 400])  # longer than n_ctx 128: truncated
    assert q[0].n_tokens == tiny_model.cfg.n_ctx - 1 and q[1].l0 > 0
