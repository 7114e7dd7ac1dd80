"""Gemma Scope 2 per-layer transcoders: files written with known tensors (no hub), their forward rule,
their hook points on a Gemma-3-shaped model with non-trivial norm gains, the release path's hooks, the
gemma-3-270m preset, and bad input."""

from __future__ import annotations

import json

import pytest
import torch

from atlas.errors import TranscoderError
from atlas.transcoders import load_transcoders
from atlas.transcoders.loading import TranscoderSpec
from atlas.transcoders.writers import write_layer
from tests.normed_models import normed_model, reference_mlp_points

D, F = 32, 40


def _tensors(gen, affine: bool, d_in=D, d_out=D, f=F):
    t = {
        "w_enc": torch.randn(d_in, f, generator=gen) * 0.4,
        "w_dec": torch.randn(f, d_out, generator=gen) * 0.2,
        "b_enc": torch.randn(f, generator=gen) * 0.3,
        "b_dec": torch.randn(d_out, generator=gen) * 0.05,
        "threshold": torch.rand(f, generator=gen) * 0.3,
    }
    if affine:
        t["affine_skip_connection"] = torch.randn(d_in, d_out, generator=gen) * 0.2  # [d_in, d_out]
    return t


def _config(layer: int, affine: bool) -> dict:
    return {
        "architecture": "jump_relu",
        "model_name": "gemma-v3-270m-pt",
        "affine_connection": affine,
        "hf_hook_point_in": f"model.layers.{layer}.pre_feedforward_layernorm.output",
        "hf_hook_point_out": f"model.layers.{layer}.post_feedforward_layernorm.output",
    }


def write_set(root, layers=(0, 1, 2), affine=False, seed=0, config=True):
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for l in layers:
        out[l] = _tensors(gen, affine)
        write_layer("gemmascope2", root, l, out[l], cfg=_config(l, affine) if config else None)
    return out


@pytest.mark.parametrize("affine", [False, True])
def test_forward_rule_and_hook_points_on_a_gemma3_shaped_model(tmp_path, affine):
    model = normed_model("gemma3", seed=1)
    written = write_set(tmp_path / "transcoder_all", affine=affine)
    tset = load_transcoders(f"gemmascope2:{tmp_path}", model)
    assert tset.layer_ids == [0, 1, 2] and tset.set_name == "gemmascope-2-transcoder"
    tokens = torch.randint(0, 300, (3, 9), generator=torch.Generator().manual_seed(2))
    for l, t in written.items():
        tc = tset[l]
        assert type(tc.sae).__name__ == ("JumpReLUSkipTranscoder" if affine else "JumpReLUTranscoder")
        assert (tc.hook_in, tc.hook_out) == (f"blocks.{l}.mlp.hook_in", f"blocks.{l}.hook_mlp_out")
        # the file's rule: z = x w_enc + b_enc, a = z 1[z > θ], y = a w_dec + b_dec + x A
        _, x, y_mlp = reference_mlp_points(model, tokens, l)
        z = x @ t["w_enc"] + t["b_enc"]
        a = z * (z > t["threshold"])
        assert 0 < (a > 0).float().mean() < 1
        y = a @ t["w_dec"] + t["b_dec"] + (x @ t["affine_skip_connection"] if affine else 0)
        torch.testing.assert_close(tc.encode(x), a, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(tc.sae(x), y, atol=1e-5, rtol=1e-5)
        # the points: the pre-MLP norm's output (after its gain) and the post-MLP norm's output
        _, cache = model.run_with_cache(tokens, names_filter=[tc.hook_in, tc.hook_out])
        torch.testing.assert_close(cache[tc.hook_in], x, atol=1e-4, rtol=1e-4)
        post = model.blocks[l].ln2_post.w.detach()
        y_post = y_mlp / (y_mlp.pow(2).mean(-1, keepdim=True) + model.cfg.eps).sqrt() * post
        torch.testing.assert_close(cache[tc.hook_out], y_post, atol=1e-4, rtol=1e-4)


def test_one_file_per_layer_chosen_and_one_folder_as_location(tmp_path):
    gen = torch.Generator().manual_seed(3)
    root = tmp_path / "transcoder_all"
    names = [
        "layer_0_width_262k_l0_small",
        "layer_0_width_16k_l0_big",
        "layer_0_width_16k_l0_small_affine",
        "layer_0_width_16k_l0_small",
        "layer_0_width_16k_l0_medium",
    ]
    from safetensors.torch import save_file

    for name in names:
        (root / name).mkdir(parents=True)
        save_file(_tensors(gen, "affine" in name), root / name / "params.safetensors")
        (root / name / "config.json").write_text(json.dumps(_config(0, "affine" in name)))
    tc = load_transcoders(f"gemmascope2:{tmp_path}")[0]
    assert tc.uri.endswith("transcoder_all/layer_0_width_16k_l0_small/params.safetensors")
    one = load_transcoders(f"gemmascope2:{root / 'layer_0_width_16k_l0_big'}")[0]
    assert one.uri.endswith("layer_0_width_16k_l0_big/params.safetensors") and not one.has_skip
    auto = load_transcoders(str(root / "layer_0_width_16k_l0_small_affine"))[0]  # auto-detected
    assert auto.format == "gemmascope2" and auto.has_skip


def test_without_config_the_default_points_are_used(tmp_path):
    write_set(tmp_path, layers=(1,), config=False)
    tc = load_transcoders(f"gemmascope2:{tmp_path}")[1]
    assert (tc.hook_in, tc.hook_out) == ("blocks.1.mlp.hook_in", "blocks.1.hook_mlp_out")


def test_release_config_hooks_are_read_from_the_hf_names():
    """SAELens's Gemma Scope 2 converter names the input blocks.l.hook_mlp_in (TransformerLens: before
    ln2); atlas places it at the HF point the config records, the pre-MLP norm's output."""
    from atlas.transcoders.build import build_sae
    from atlas.transcoders.saelens_format import _as_layer

    gen = torch.Generator().manual_seed(4)
    t = _tensors(gen, True)
    sae = build_sae(
        "release",
        W_enc=t["w_enc"],
        b_enc=t["b_enc"],
        W_dec=t["w_dec"],
        b_dec=t["b_dec"],
        threshold=t["threshold"],
        W_skip=t["affine_skip_connection"].T,
        hook_in="blocks.5.hook_mlp_in",
        hook_out="blocks.5.hook_mlp_out",
    )
    cfg = {
        "hook_name": "blocks.5.hook_mlp_in",
        "hook_name_out": "blocks.5.hook_mlp_out",
        "hf_hook_name": "model.layers.5.pre_feedforward_layernorm.output",
        "hf_hook_name_out": "model.layers.5.post_feedforward_layernorm.output",
    }
    tc = _as_layer(sae, 5, cfg, "release", "r/id", "saelens-release")
    assert (tc.hook_in, tc.hook_out) == ("blocks.5.mlp.hook_in", "blocks.5.hook_mlp_out")
    tc = _as_layer(sae, 5, {"metadata": {k: v for k, v in cfg.items()}}, "release", "r/id", "saelens-release")
    assert tc.hook_in == "blocks.5.mlp.hook_in"


def test_gemma_3_270m_preset_names_real_release_ids():
    from atlas.transcoders.saelens_format import discover_release, release_ids

    spec = TranscoderSpec.parse("preset:gemma-3-270m")
    assert spec.format == "saelens-release" and spec.set_name == "gemmascope-2-transcoder-16k"
    release, ids = release_ids(spec.location)  # checked against SAELens's own directory, offline
    assert release == "gemma-scope-2-270m-pt-transcoders-all" and len(ids) == 18
    assert [l for l, _ in discover_release(spec.location)] == list(range(18))
    assert all("width_16k" in i and "affine" not in i for i in ids)


# ---- bad input ----------------------------------------------------------------------------------------


def test_config_hook_point_the_model_lacks(tmp_path):
    write_set(tmp_path, layers=(0,))
    with pytest.raises(TranscoderError, match=r"post_feedforward_layernorm.*needs the model's 'blocks.0.ln2_post'"):
        load_transcoders(f"gemmascope2:{tmp_path}", normed_model("ln"))  # LayerNorm model: no post-MLP norm
    cfg = tmp_path / "layer_0_width_40_l0_small" / "config.json"
    cfg.write_text(json.dumps({**_config(0, False), "hf_hook_point_in": "model.layers.0.self_attn.q_norm.output"}))
    with pytest.raises(TranscoderError, match=r"q_norm.output.*not one atlas can place"):
        load_transcoders(f"gemmascope2:{tmp_path}")
    cfg.write_text(
        json.dumps({**_config(0, False), "hf_hook_point_in": "model.layers.7.pre_feedforward_layernorm.output"})
    )
    with pytest.raises(TranscoderError, match=r"not in layer 0"):
        load_transcoders(f"gemmascope2:{tmp_path}")
    write_set(tmp_path / "deep", layers=(5,))
    with pytest.raises(TranscoderError, match=r"layer 5 .*the model has layers 0\.\.2"):
        load_transcoders(f"gemmascope2:{tmp_path / 'deep'}", normed_model("gemma3"))


def test_mismatched_shapes_and_wrong_affine_skip(tmp_path):
    gen = torch.Generator().manual_seed(5)
    t = _tensors(gen, True)
    write_layer("gemmascope2", tmp_path / "a", 0, {**t, "b_enc": torch.zeros(F + 1)}, cfg=_config(0, True))
    with pytest.raises(TranscoderError, match=r"b_enc has shape \(41,\), expected \(40,\)"):
        load_transcoders(f"gemmascope2:{tmp_path / 'a'}")
    write_layer(
        "gemmascope2", tmp_path / "b", 0, {**t, "affine_skip_connection": torch.zeros(D, D + 2)}, cfg=_config(0, True)
    )
    with pytest.raises(TranscoderError, match=r"affine_skip_connection has shape \(32, 34\), expected \[d_in, d_out\]"):
        load_transcoders(f"gemmascope2:{tmp_path / 'b'}")
    write_layer(
        "gemmascope2", tmp_path / "c", 0, {k: v for k, v in t.items() if k != "threshold"}, cfg=_config(0, True)
    )
    with pytest.raises(TranscoderError, match=r"missing key\(s\) \['threshold'\]"):
        load_transcoders(f"gemmascope2:{tmp_path / 'c'}")
    write_layer("gemmascope2", tmp_path / "d", 0, {**t, "w_dec": torch.zeros(F, 3, D)}, cfg=_config(0, True))
    with pytest.raises(TranscoderError, match=r"w_dec has shape \(40, 3, 32\).*cross-layer"):
        load_transcoders(f"gemmascope2:{tmp_path / 'd'}")
    write_set(tmp_path / "e", layers=(0,))
    with pytest.raises(TranscoderError, match=r"input width 32 does not match the model's d_model 64"):
        from atlas.models import load_model

        load_transcoders(f"gemmascope2:{tmp_path / 'e'}", load_model("random:tiny"))
