"""Each transcoder file format: write a file with known tensors (conftest.write_transcoder_files),
load it, and compare encode / reconstruction with the format's own forward rule computed here by
hand. Then the errors: every bad input ends in a named error that names the path and key."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch

from atlas.errors import AssetError, TranscoderError
from atlas.transcoders import PRESETS, TranscoderSpec, load_transcoders, save_saelens


@pytest.fixture(scope="module")
def x():
    return torch.randn(7, 64, generator=torch.Generator().manual_seed(1))  # [batch, d_in]


def _check_sparsity(a: torch.Tensor) -> None:
    """The activation rule is only tested if some, not all, features are active."""
    frac = (a > 0).float().mean().item()
    assert 0.05 < frac < 0.95, frac


def test_saelens_dir_matches_relu_rule_and_round_trips(write_transcoder_files, x):
    w = write_transcoder_files("saelens")
    tset = load_transcoders(w.spec)
    assert tset.layer_ids == [0, 1] and tset.set_name == "saelens-transcoder"
    for layer, t in w.tensors.items():
        tc = tset[layer]
        assert type(tc.sae).__name__ == "Transcoder" and tc.activation == "relu" and not tc.has_skip
        assert (tc.hook_in, tc.hook_out) == (f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out")
        for key in ("W_enc", "b_enc", "W_dec", "b_dec"):
            assert torch.equal(getattr(tc, key), t[key]), key
        a = torch.relu(x @ t["W_enc"] + t["b_enc"])
        _check_sparsity(a)
        torch.testing.assert_close(tc.encode(x), a)
        torch.testing.assert_close(tc.sae(x), a @ t["W_dec"] + t["b_dec"])


def test_dunefsky_pickle_folds_input_bias_without_importing_its_module(write_transcoder_files, x):
    w = write_transcoder_files("dunefsky")
    assert "sae_training" not in sys.modules and importlib.util.find_spec("sae_training") is None
    tset = load_transcoders(w.spec)
    assert "sae_training" not in sys.modules
    assert tset.set_name == "tres-dc" and tset.layer_ids == [0, 1]
    for layer, t in w.tensors.items():
        tc = tset[layer]
        # The file's forward rule: z = (x - b_dec) W_enc + b_enc; y = a W_dec + b_dec_out.
        a = torch.relu((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"])
        _check_sparsity(a)
        unfolded = torch.relu(x @ t["W_enc"] + t["b_enc"])
        assert not torch.allclose(a, unfolded, atol=1e-3)  # the fold matters for these tensors
        torch.testing.assert_close(tc.encode(x), a, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(tc.sae(x), a @ t["W_dec"] + t["b_dec_out"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(tc.b_dec, t["b_dec_out"])
        assert tc.hook_in == f"blocks.{layer}.ln2.hook_normalized"  # read from the pickled config object


def test_dunefsky_config_without_input_centering_is_not_folded(write_transcoder_files, x):
    w = write_transcoder_files("dunefsky", layers=(0,))
    t = w.tensors[0]
    torch.save(
        {"cfg": {"apply_b_dec_to_input": False, "hook_point": "blocks.0.ln2.hook_normalized"}, "state_dict": t},
        next(w.path.glob("*.pt")),
    )
    tc = load_transcoders(w.spec)[0]
    torch.testing.assert_close(tc.encode(x), torch.relu(x @ t["W_enc"] + t["b_enc"]))


def test_dunefsky_unpickler_never_calls_what_the_file_names(tmp_path, write_transcoder_files):
    """A pickle that asks for os.system gets an inert placeholder: nothing runs."""
    import os

    w = write_transcoder_files("dunefsky", layers=(0,))
    path = next(w.path.glob("*.pt"))
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    obj = {"cfg": Evil(), "state_dict": w.tensors[0]}
    torch.save(obj, path)
    tc = load_transcoders(w.spec)[0]
    assert not marker.exists()
    torch.testing.assert_close(tc.W_enc, w.tensors[0]["W_enc"])


def test_gemmascope_npz_matches_jumprelu_rule(write_transcoder_files, x):
    w = write_transcoder_files("gemmascope")
    tset = load_transcoders(w.spec)
    for layer, t in w.tensors.items():
        tc = tset[layer]
        assert type(tc.sae).__name__ == "JumpReLUTranscoder" and tc.activation == "jumprelu"
        z = x @ t["W_enc"] + t["b_enc"]
        a = z * (z > t["threshold"])
        _check_sparsity(a)
        assert ((z > 0) & (z <= t["threshold"])).any()  # the threshold, not just ReLU, is tested
        torch.testing.assert_close(tc.encode(x), a)
        torch.testing.assert_close(tc.sae(x), a @ t["W_dec"] + t["b_dec"])
        torch.testing.assert_close(tc.threshold, t["threshold"])


def test_gemmascope_chooses_one_file_per_layer_deterministically(write_transcoder_files):
    w = write_transcoder_files("gemmascope", layers=(0,))
    base = w.path / "layer_0"
    for width, l0 in (("96", 120), ("200", 100)):  # narrowest width first, then L0 closest to 100
        write_transcoder_files("gemmascope", root=w.path / "tmp", layers=(0,), d_sae=int(width), seed=l0)
        src = w.path / "tmp" / "layer_0" / f"width_{width}" / "average_l0_50" / "params.npz"
        dst = base / f"width_{width}" / f"average_l0_{l0}"
        dst.mkdir(parents=True, exist_ok=True)
        src.rename(dst / "params.npz")
    tc = load_transcoders(f"gemmascope:{base.parent}", layers=[0])[0]
    assert tc.uri.endswith("layer_0/width_96/average_l0_120/params.npz")


@pytest.mark.parametrize("skip,jumprelu", [(True, False), (False, False), (True, True)])
def test_circuit_tracer_transposes_encoder_and_adds_skip(write_transcoder_files, x, skip, jumprelu):
    w = write_transcoder_files("circuit-tracer", skip=skip, jumprelu=jumprelu)
    tset = load_transcoders(w.spec)
    for layer, t in w.tensors.items():
        tc = tset[layer]
        assert tc.has_skip == skip and tc.activation == ("jumprelu" if jumprelu else "relu")
        assert (tc.hook_in, tc.hook_out) == (f"blocks.{layer}.hook_resid_mid", f"blocks.{layer}.mlp.hook_out")
        z = torch.nn.functional.linear(x, t["W_enc"], t["b_enc"])  # circuit-tracer encodes with F.linear
        a = z * (z > t["threshold"]) if jumprelu else torch.relu(z)
        _check_sparsity(a)
        torch.testing.assert_close(tc.encode(x), a)
        y = a @ t["W_dec"] + t["b_dec"] + (x @ t["W_skip"].T if skip else 0)
        torch.testing.assert_close(tc.sae(x), y)


def test_circuit_tracer_config_yaml_sets_hooks(write_transcoder_files):
    w = write_transcoder_files("circuit-tracer", layers=(1,))
    (w.path / "config.yaml").write_text("feature_input_hook: mlp.hook_in\nfeature_output_hook: mlp.hook_out\n")
    tc = load_transcoders(w.spec)[1]
    # circuit-tracer's mlp.hook_in / mlp.hook_out: the MLP module's input and output (tests/test_hook_points.py)
    assert (tc.hook_in, tc.hook_out) == ("blocks.1.mlp.hook_in", "blocks.1.mlp.hook_out")


def test_save_saelens_reads_back_exactly_with_custom_hooks(tmp_path, write_transcoder_files, tiny_model, x):
    src = load_transcoders(write_transcoder_files("circuit-tracer", skip=True, jumprelu=True).spec)
    tc = src[1]
    tc.hook_in = "blocks.1.ln2.hook_normalized"
    save_saelens(tc, tmp_path / "set" / "mine")  # directory name without a layer: layer from the hook
    back = load_transcoders(f"saelens:{tmp_path / 'set'}", model=tiny_model)[1]
    assert type(back.sae).__name__ == "JumpReLUSkipTranscoder"
    assert (back.hook_in, back.hook_out) == (tc.hook_in, tc.hook_out)
    for key in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "W_skip"):
        assert torch.equal(getattr(back.sae, key), getattr(tc.sae, key)), key
    torch.testing.assert_close(back.sae(x), tc.sae(x))


def test_single_files_as_locations(write_transcoder_files):
    w = write_transcoder_files("gemmascope", layers=(0, 1))
    tset = load_transcoders(str(next(w.path.glob("layer_1/*/*/params.npz"))))  # auto, layer from the path
    assert tset.layer_ids == [1] and tset[1].format == "gemmascope"
    w = write_transcoder_files("circuit-tracer", layers=(0, 1))
    (w.path / "config.yaml").write_text("feature_input_hook: mlp.hook_in\nfeature_output_hook: hook_mlp_out\n")
    tset = load_transcoders(f"circuit-tracer:{w.path / 'layer_1.safetensors'}")
    assert tset.layer_ids == [1] and (tset[1].hook_in, tset[1].hook_out) == (
        "blocks.1.mlp.hook_in",
        "blocks.1.hook_mlp_out",
    )


def test_layers_select_and_auto_detects_format(write_transcoder_files):
    w = write_transcoder_files("gemmascope", layers=(0, 1))
    tset = load_transcoders(TranscoderSpec.parse(str(w.path), layers=[1], set_name="mine"))
    assert tset.layer_ids == [1] and tset.set_name == "mine" and tset[1].format == "gemmascope"


def test_presets_parse():
    spec = TranscoderSpec.parse("gpt2-small")
    assert (spec.format, spec.location, spec.set_name) == ("dunefsky", "hf://pchlenski/gpt2-transcoders", "tres-dc")
    spec = TranscoderSpec.parse("preset:gemma-2-2b", layers=[3])
    assert (spec.format, spec.location, spec.set_name, spec.layers) == (
        "saelens-release",
        "gemma-scope-2b-pt-transcoders",
        "gemmascope-transcoder-16k",
        (3,),
    )
    assert set(PRESETS) == {"gpt2-small", "gemma-2-2b", "gemma-3-270m"}


# ---- errors ---------------------------------------------------------------------------------------


def test_missing_path_and_unknown_format(tmp_path):
    with pytest.raises(AssetError, match="no such file or directory: .*nowhere"):
        load_transcoders(f"dunefsky:{tmp_path / 'nowhere'}")
    with pytest.raises(
        AssetError, match="unknown format .onnx.; use FORMAT:LOCATION with FORMAT one of saelens, dunefsky"
    ):
        TranscoderSpec.parse(f"onnx:{tmp_path}")
    with pytest.raises(AssetError, match="unknown transcoder preset 'gpt5'"):
        TranscoderSpec.parse("preset:gpt5")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(AssetError, match="no transcoder files of a known format at .*layer_.l.\\.safetensors"):
        load_transcoders(str(tmp_path))


def test_file_that_is_not_its_format(tmp_path, write_transcoder_files):
    bad = tmp_path / "final_sparse_autoencoder_gpt2-small_blocks.0.ln2.hook_normalized_24576.pt"
    bad.write_text("this is not a pickle")
    with pytest.raises(TranscoderError, match="not a readable torch pickle"):
        load_transcoders(f"dunefsky:{bad}")
    torch.save([1, 2, 3], bad)
    with pytest.raises(TranscoderError, match="holds a list, not a dict with a 'state_dict'"):
        load_transcoders(f"dunefsky:{bad}")
    torch.save({"state_dict": {"W_enc": torch.zeros(4, 8)}}, bad)
    with pytest.raises(TranscoderError, match="no tensor 'b_enc'"):
        load_transcoders(f"dunefsky:{bad}")
    (tmp_path / "layer_0.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(TranscoderError, match="layer_0.safetensors: not a readable safetensors file"):
        load_transcoders(f"circuit-tracer:{tmp_path}")


def test_wrong_keys_shapes_and_nan(write_transcoder_files):
    w = write_transcoder_files("gemmascope", layers=(0,))
    npz = next(w.path.rglob("params.npz"))
    t = {k: v.numpy() for k, v in w.tensors[0].items()}
    np.savez(npz, **{k: v for k, v in t.items() if k != "threshold"})
    with pytest.raises(TranscoderError, match=r"params.npz: missing key\(s\) \['threshold'\]"):
        load_transcoders(w.spec)
    np.savez(npz, **{**t, "W_dec": t["W_dec"][:, :10]})
    with pytest.raises(TranscoderError, match=r"b_dec has shape \(64,\), expected \(10,\)"):
        load_transcoders(w.spec)
    np.savez(npz, **{**t, "b_enc": t["b_enc"][:5]})
    with pytest.raises(TranscoderError, match=r"params.npz: b_enc has shape \(5,\), expected \(96,\)"):
        load_transcoders(w.spec)
    bad = t["W_dec"].copy()
    bad[3, 4] = np.nan
    np.savez(npz, **{**t, "W_dec": bad})
    with pytest.raises(TranscoderError, match="params.npz: W_dec holds NaN or infinite values"):
        load_transcoders(w.spec)


def test_nan_in_saelens_and_dunefsky_files(write_transcoder_files, tmp_path):
    from safetensors.torch import load_file, save_file

    w = write_transcoder_files("saelens", layers=(0,))
    weights = w.path / "layer_0" / "sae_weights.safetensors"
    state = load_file(weights)
    state["b_enc"][2] = float("inf")
    save_file(state, weights)
    with pytest.raises(TranscoderError, match="layer_0: b_enc holds NaN or infinite values"):
        load_transcoders(w.spec)
    w = write_transcoder_files("dunefsky", root=tmp_path / "d", layers=(0,))
    path = next(w.path.glob("*.pt"))
    state = {**w.tensors[0], "b_dec": w.tensors[0]["b_dec"].clone()}
    state["b_dec"][0] = float("nan")
    torch.save({"state_dict": state}, path)
    with pytest.raises(TranscoderError, match=r"hook_normalized_96\.pt: b_dec holds NaN"):
        load_transcoders(w.spec)


def test_missing_layer_and_bad_dtype(write_transcoder_files):
    w = write_transcoder_files("circuit-tracer", layers=(0,))
    with pytest.raises(TranscoderError, match="transcoder dtype 'fp8' is not one of float32, bfloat16"):
        load_transcoders(w.spec, dtype="fp8")
    assert load_transcoders(w.spec, dtype="bfloat16")[0].dtype == "bfloat16"
    with pytest.raises(TranscoderError, match=r"no transcoder file for layer\(s\) \[5\].*found layers \[0\]"):
        load_transcoders(TranscoderSpec.parse(w.spec, layers=[0, 5]))


def test_width_and_hook_mismatch_against_model(tmp_path, write_transcoder_files, tiny_model):
    w = write_transcoder_files("saelens", layers=(0,), d_in=32)
    with pytest.raises(TranscoderError, match="input width 32 does not match the model's d_model 64"):
        load_transcoders(w.spec, model=tiny_model)
    w = write_transcoder_files("dunefsky", root=tmp_path / "d", layers=(5,))
    with pytest.raises(TranscoderError, match=r"layer 5 .*the model has layers 0\.\.1"):
        load_transcoders(w.spec, model=tiny_model)
    tc = load_transcoders(write_transcoder_files("saelens", root=tmp_path / "s", layers=(0,)).spec)[0]
    tc.hook_out = "blocks.0.hook_mlp_output"
    save_saelens(tc, tmp_path / "h" / "layer_0")
    with pytest.raises(TranscoderError, match="hook 'blocks.0.hook_mlp_output' does not exist in the model"):
        load_transcoders(f"saelens:{tmp_path / 'h'}", model=tiny_model)


def test_saelens_dir_holding_a_plain_sae(tmp_path):
    from sae_lens import StandardSAE, StandardSAEConfig

    StandardSAE(StandardSAEConfig(d_in=8, d_sae=16)).save_model(tmp_path / "layer_0")
    with pytest.raises(TranscoderError, match="is a SAELens StandardSAE .*not a transcoder"):
        load_transcoders(f"saelens:{tmp_path}")


def test_hub_location_downloads_only_the_needed_layer_files(monkeypatch, write_transcoder_files, x):
    """The hub cannot be reached here: huggingface_hub's two calls are served from a local folder
    laid out like the repo, to check which files atlas asks for."""
    import huggingface_hub

    w = write_transcoder_files("gemmascope", layers=(0, 1, 2))
    repo = w.path.parent / "repo"
    repo.mkdir()
    w.path.rename(repo / "sub")
    fetched = []

    def list_repo_files(self, repo_id, revision=None, **kw):
        assert (repo_id, revision) == ("owner/name", "v1")
        return sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file())

    def hf_hub_download(repo_id, filename, revision=None, **kw):
        fetched.append(filename)
        return str(repo / filename)

    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", list_repo_files)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    tset = load_transcoders("gemmascope:hf://owner/name@v1/sub", layers=[1])
    assert fetched == ["sub/layer_1/width_96/average_l0_50/params.npz"]
    assert tset[1].uri == "hf://owner/name/sub/layer_1/width_96/average_l0_50/params.npz"
    t = w.tensors[1]
    z = x @ t["W_enc"] + t["b_enc"]
    torch.testing.assert_close(tset[1].encode(x), z * (z > t["threshold"]))


def test_release_ids_map_to_layers():
    from atlas.transcoders.saelens_format import discover_release

    found = discover_release("gemma-scope-2b-pt-transcoders")
    assert [l for l, _ in found] == list(range(26)) and found[3] == (3, "layer_3/width_16k/average_l0_54")
    assert discover_release("gemma-scope-2b-pt-transcoders/layer_5/width_16k/average_l0_87") == [
        (5, "layer_5/width_16k/average_l0_87")
    ]


def test_hub_locations_offline_fail_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AssetError, match="could not list hub repo 'pchlenski/gpt2-transcoders'"):
        load_transcoders(
            "gpt2-small",
        )
    with pytest.raises(AssetError, match="unknown SAELens release 'no-such-release'"):
        load_transcoders("saelens-release:no-such-release")
    with pytest.raises(AssetError, match=r"release 'gemma-scope-2b-pt-transcoders' has no id\(s\) \['layer_3/x'\]"):
        load_transcoders("saelens-release:gemma-scope-2b-pt-transcoders/layer_3/x")
    with pytest.raises(AssetError, match="id 'layer_3/width_16k/average_l0_54': could not load it"):
        load_transcoders(TranscoderSpec.parse("gemma-2-2b", layers=[3]))


def test_all_finite_with_an_overflowing_sum():
    from atlas.transcoders.transcoder_set import all_finite

    big = torch.full((1000,), 3e38)  # finite values whose float32 sum overflows to inf
    assert not torch.isfinite(big.sum()) and all_finite(big)
    big[7] = float("nan")
    assert not all_finite(big)
    assert not all_finite(torch.tensor([1.0, float("-inf")])) and all_finite(torch.zeros(3))
