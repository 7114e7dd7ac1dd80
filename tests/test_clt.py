"""Cross-layer transcoders: both layouts written with known tensors, their forward rule against a dense
computation, virtual weights against a dense computation, CircuitLens through CLT reconstructions
(completeness, equality with per-layer transcoders when a CLT has no cross-layer slices, the output
side against an intervention), `atlas inspect` per output layer, and bad input."""

from __future__ import annotations

import re

import pytest
import torch

from atlas.errors import AssetError, TranscoderError
from atlas.lens.attribution import attribute, completeness_gap
from atlas.transcoders import load_transcoders
from atlas.transcoders.build import build_layer
from atlas.transcoders.clt import CrossLayerTranscoder, write_clt
from atlas.transcoders.transcoder_set import TranscoderSet
from tests.normed_models import normed_model

N, D, F = 3, 32, 24


def dense_clt(seed=0, skip=False, cross=True):
    """Dense reference tensors: W_enc [N, D, F], b_enc [N, F], W_dec [N(src), N(out), F, D] (zero for out < src),
    b_dec [N, D], threshold [N, F], S [N, D, D] (x_k S_k into layer k)."""
    g = torch.Generator().manual_seed(seed)
    W_dec = torch.randn(N, N, F, D, generator=g) * 0.2
    for s in range(N):
        for k in range(N):
            if k < s or (not cross and k != s):
                W_dec[s, k] = 0
    t = {
        "W_enc": torch.randn(N, D, F, generator=g) * 0.4,
        "b_enc": torch.randn(N, F, generator=g) * 0.3,
        "W_dec": W_dec,
        "b_dec": torch.randn(N, D, generator=g) * 0.05,
        "threshold": torch.rand(N, F, generator=g) * 0.3,
    }
    if skip:
        t["S"] = torch.randn(N, D, D, generator=g) * 0.2
    return t


def write_both(root, t):
    """The same CLT in circuit-tracer's layout and in Gemma Scope 2's."""
    ct, gs = {}, {}
    for l in range(N):
        ct[l] = {
            "W_enc": t["W_enc"][l].T,
            "b_enc": t["b_enc"][l],
            "b_dec": t["b_dec"][l],
            "threshold": t["threshold"][l],
            "W_dec": t["W_dec"][l, l:].permute(1, 0, 2),
        }  # [F, N - l, D]
        gs[l] = {
            "w_enc": t["W_enc"][l],
            "b_enc": t["b_enc"][l],
            "b_dec": t["b_dec"][l],
            "threshold": t["threshold"][l],
            "w_dec": t["W_dec"][l].permute(1, 0, 2),
        }  # [F, N, D]
        if "S" in t:
            ct[l]["W_skip"] = t["S"][l]
            gs[l]["affine_skip_connection"] = t["S"][l]
    write_clt(
        "circuit-tracer-clt",
        root / "ct",
        ct,
        config={"feature_input_hook": "mlp.hook_in", "feature_output_hook": "hook_mlp_out"},
    )
    write_clt("gemmascope2-clt", root / "gs", gs)
    return f"circuit-tracer-clt:{root / 'ct'}", f"gemmascope2-clt:{root / 'gs'}"


def per_layer_set(name, t, w_dec):
    """Per-layer transcoders of the CLT tensors ``t`` (its encoders, biases and thresholds), layer l
    writing with ``w_dec[l]`` [F, d] into ``blocks.l.hook_mlp_out``."""
    return TranscoderSet(
        name,
        {
            l: build_layer(
                "d",
                l,
                format="test",
                uri="d",
                W_enc=t["W_enc"][l],
                b_enc=t["b_enc"][l],
                W_dec=w_dec[l],
                b_dec=t["b_dec"][l],
                threshold=t["threshold"][l],
                hook_in=f"blocks.{l}.mlp.hook_in",
                hook_out=f"blocks.{l}.hook_mlp_out",
            )
            for l in range(N)
        },
    )


def dense_encode(t, l, x):
    z = x @ t["W_enc"][l] + t["b_enc"][l]
    return z * (z > t["threshold"][l])


def dense_reconstruct(t, k, acts, x_k):
    y = sum(acts[s] @ t["W_dec"][s, k] for s in range(k + 1)) + t["b_dec"][k]
    return y + (x_k @ t["S"][k] if "S" in t else 0)


@pytest.mark.parametrize("skip", [False, True])
def test_both_layouts_load_lazily_and_follow_the_forward_rule(tmp_path, skip):
    t = dense_clt(skip=skip)
    for spec in write_both(tmp_path, t):
        clt = load_transcoders(spec)
        assert isinstance(clt, CrossLayerTranscoder) and clt.layer_ids == [0, 1, 2]
        assert (clt.d_model, clt.d_sae, clt.activation, clt.has_skip) == (D, F, "jumprelu", skip)
        xs = {l: torch.randn(5, D, generator=torch.Generator().manual_seed(l)) for l in range(N)}
        acts = {l: clt.encode(l, xs[l]) for l in range(N)}
        for l in range(N):
            torch.testing.assert_close(acts[l], dense_encode(t, l, xs[l]))
            assert 0 < (acts[l] > 0).float().mean() < 1
            torch.testing.assert_close(clt.reconstruct(l, acts, xs[l]), dense_reconstruct(t, l, acts, xs[l]))
            for k in range(l, N):
                torch.testing.assert_close(clt.decoder_slice(l, k), t["W_dec"][l, k])


def test_virtual_weights_and_output_decoder_against_a_dense_computation(tmp_path):
    """c(l' -> l)[i, j] = (sum_{k in [l', l)} W_dec[l' -> k][i]) . W_enc[l][:, j]; output projections use the sum
    of every slice. Dense: one einsum over the full [src, out, F, D] tensor with an explicit mask."""
    t = dense_clt(seed=1)
    clt = load_transcoders(write_both(tmp_path, t)[1])
    for layer in range(N):
        ups = clt.upstream_decoders(layer, range(N))
        assert sorted(ups) == list(range(layer))
        for src, D_eff in ups.items():
            mask = torch.tensor([src <= k < layer for k in range(N)], dtype=torch.float32)
            dense = torch.einsum("k,kfd,dg->fg", mask, t["W_dec"][src], t["W_enc"][layer])  # [F_src, F]
            torch.testing.assert_close(D_eff @ clt.W_enc(layer), dense, atol=1e-5, rtol=1e-5)
    for src in range(N):
        torch.testing.assert_close(clt[src].W_dec, t["W_dec"][src].sum(0), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(clt[src].W_enc, t["W_enc"][src])


@pytest.mark.parametrize("skip", [False, True])
def test_attribution_through_clt_reconstructions_is_complete(tmp_path, skip):
    model = normed_model("gemma3", seed=2)
    t = dense_clt(seed=2, skip=skip)
    for spec in write_both(tmp_path, t):
        clt = load_transcoders(spec, model)
        tokens = torch.randint(0, 300, (5, 10), generator=torch.Generator().manual_seed(3))
        pos, ar = torch.tensor([9, 4, 6, 2, 8]), torch.arange(5)
        _, cache = model.run_with_cache(tokens, names_filter="blocks.2.mlp.hook_in")
        feature = dense_encode(t, 2, cache["blocks.2.mlp.hook_in"][ar, pos]).argmax(-1)
        att = attribute(model, clt, tokens, 2, feature, pos)
        z_ref = (cache["blocks.2.mlp.hook_in"][ar, pos] @ t["W_enc"][2] + t["b_enc"][2])[ar, feature]
        torch.testing.assert_close(att.z, z_ref, atol=1e-4, rtol=1e-4)
        assert completeness_gap(att).abs().max().item() < 1e-4 * (att.z.abs().max().item() + 1)
        assert att.features[0].abs().sum() > 0 and att.features[1].abs().sum() > 0


def test_a_clt_without_cross_layer_slices_attributes_like_per_layer_transcoders(tmp_path):
    """Independent check of the CLT path: with W_dec[s -> k] = 0 for k != s a CLT is a set of per-layer
    transcoders; every part of the attribution, input and output side, must agree."""
    model = normed_model("ln", seed=4)
    t = dense_clt(seed=4, skip=False, cross=False)
    clt = load_transcoders(write_both(tmp_path, t)[0], model)
    tset = per_layer_set("per-layer", t, [t["W_dec"][l, l] for l in range(N)])
    tokens = torch.randint(0, 300, (4, 8), generator=torch.Generator().manual_seed(5))
    pos, feature = torch.tensor([7, 3, 5, 6]), torch.tensor([0, 5, 9, 13])
    for layer in (1, 2):
        a, b = (
            attribute(model, clt, tokens, layer, feature, pos, n_output=2),
            attribute(model, tset, tokens, layer, feature, pos, n_output=2),
        )
        for name in ("z", "act", "bias", "errors", "token", "position", "heads", "out_values"):
            torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=1e-5, rtol=1e-5, msg=name)
        for l in a.features:
            torch.testing.assert_close(a.features[l], b.features[l], atol=1e-5, rtol=1e-5)


def test_clt_output_side_matches_an_intervention(tmp_path):
    """Reference: patterns and scales frozen, every MLP output from layer l on held at its observed value
    plus its live skip term, and delta * (the feature's slice into k) added at each layer k >= l."""
    model = normed_model("gemma3", seed=6)
    t = dense_clt(seed=6, skip=True)
    clt = load_transcoders(write_both(tmp_path, t)[0], model)
    B, T, layer, delta = 4, 9, 0, 1e-2
    tokens = torch.randint(0, 300, (B, T), generator=torch.Generator().manual_seed(7))
    pos, ar = torch.tensor([8, 3, 5, 2]), torch.arange(B)
    _, c0 = model.run_with_cache(tokens, names_filter="blocks.0.mlp.hook_in")
    feature = dense_encode(t, 0, c0["blocks.0.mlp.hook_in"][ar, pos]).argmax(-1)
    att = attribute(model, clt, tokens, layer, feature, pos, n_output=1)
    names = [n for n in model.hook_dict if n.endswith("hook_scale") or n.endswith("hook_pattern")]
    ins, outs = [f"blocks.{k}.mlp.hook_in" for k in range(N)], [f"blocks.{k}.hook_mlp_out" for k in range(N)]
    with torch.no_grad():
        base, cache = model.run_with_cache(tokens, names_filter=names + ins + outs)
        live = {}

        def keep_in(x, hook):
            live[hook.layer()] = x
            return x

        def held(y, hook):
            k = hook.layer()
            add = torch.zeros_like(y)
            add[ar, pos] = delta * t["W_dec"][layer, k][feature]
            return cache[hook.name] + (live[k] - cache[ins[k]]) @ t["S"][k] + add

        hooks = (
            [(n, lambda x, hook: cache[hook.name]) for n in names]
            + [(n, keep_in) for n in ins]
            + [(n, held) for n in outs]
        )
        pushed = model.run_with_hooks(tokens, fwd_hooks=hooks)
    y = att.out_tokens[:, 0]
    measured = (pushed[ar, pos, y] - base[ar, pos, y]) / delta
    assert (att.act > 0).all()
    torch.testing.assert_close(att.out_values[:, 0] / att.act, measured, rtol=1e-3, atol=1e-4)


def test_inspect_reports_reconstruction_per_output_layer(tmp_path):
    from atlas.inspect import fraction_of_variance_explained, measure_quality

    model = normed_model("gemma3", seed=8)
    t = dense_clt(seed=8, skip=True)
    clt = load_transcoders(write_both(tmp_path, t)[1], model)
    tokens = torch.randint(0, 300, (1, 12), generator=torch.Generator().manual_seed(9))
    quality = measure_quality(model, clt, token_batches=[tokens])
    hooks = [f"blocks.{k}.{p}" for k in range(N) for p in ("mlp.hook_in", "hook_mlp_out")]
    _, cache = model.run_with_cache(tokens, names_filter=hooks)
    x = {k: cache[f"blocks.{k}.mlp.hook_in"][0, 1:] for k in range(N)}
    acts = {k: dense_encode(t, k, x[k]) for k in range(N)}
    assert all(0 < quality[k].l0 < F for k in range(N))
    for k in range(N):
        y = cache[f"blocks.{k}.hook_mlp_out"][0, 1:]
        fve = fraction_of_variance_explained(y, dense_reconstruct(t, k, acts, x[k]))
        assert quality[k].fve == pytest.approx(fve, abs=1e-5)
        assert quality[k].l0 == pytest.approx((acts[k] > 0).sum(-1).float().mean().item())


# ---- bad input ----------------------------------------------------------------------------------------


def test_missing_layer_files_and_bad_shapes(tmp_path):
    t = dense_clt(seed=10, skip=True)
    ct, gs = write_both(tmp_path, t)
    (tmp_path / "ct" / "W_dec_1.safetensors").unlink()
    with pytest.raises(
        TranscoderError, match=r"missing the decoder file\(s\) \['W_dec_1.safetensors'\] of layer\(s\) \[1\]"
    ):
        load_transcoders(ct)
    (tmp_path / "gs" / "layer_1.safetensors").rename(tmp_path / "gs" / "elsewhere.bin")
    with pytest.raises(TranscoderError, match=r"missing the file of layer\(s\) \[1\]"):
        load_transcoders(gs)
    with pytest.raises(AssetError, match="no cross-layer transcoder files"):
        load_transcoders(f"gemmascope2-clt:{tmp_path / 'ct'}")
    from safetensors.torch import save_file

    bad = {
        "w_enc": t["W_enc"][1],
        "b_enc": t["b_enc"][1],
        "b_dec": t["b_dec"][1],
        "threshold": t["threshold"][1],
        "w_dec": t["W_dec"][1].permute(1, 0, 2)[:, :1],
        "affine_skip_connection": t["S"][1],
    }
    save_file({k: v.contiguous() for k, v in bad.items()}, tmp_path / "gs" / "layer_1.safetensors")
    with pytest.raises(
        TranscoderError, match=r"w_dec has shape \(24, 1, 32\), expected \(24, 3, 32\) \(or \(24, 2, 32\)\)"
    ):
        load_transcoders(gs)
    bad["w_dec"] = t["W_dec"][1].permute(1, 0, 2).contiguous()
    bad["affine_skip_connection"] = torch.zeros(D, D + 1)
    save_file({k: v.contiguous() for k, v in bad.items()}, tmp_path / "gs" / "layer_1.safetensors")
    with pytest.raises(TranscoderError, match=r"affine_skip_connection has shape \(32, 33\), expected \(32, 32\)"):
        load_transcoders(gs)
    del bad["affine_skip_connection"]
    save_file({k: v.contiguous() for k, v in bad.items()}, tmp_path / "gs" / "layer_1.safetensors")
    with pytest.raises(TranscoderError, match=r"layer\(s\) \[1\] have no skip.*all layers or none"):
        load_transcoders(gs)


def test_clt_that_does_not_fit_the_model(tmp_path):
    t = dense_clt(seed=11)
    ct, gs = write_both(tmp_path, t)
    with pytest.raises(TranscoderError, match=r"covers 3 layers, the model has 2"):
        from atlas.models import load_model

        load_transcoders(gs, load_model("random:tiny"))
    with pytest.raises(TranscoderError, match=r"needs the model's 'blocks.0.ln2_post'"):
        load_transcoders(gs, normed_model("ln"))


def test_inspect_cli_on_a_clt(cli, tmp_path):
    g = torch.Generator().manual_seed(12)
    d, f = 64, 16  # random:tiny: 2 layers, d_model 64
    write_clt(
        "circuit-tracer-clt",
        tmp_path / "clt",
        {
            l: {
                "W_enc": torch.randn(f, d, generator=g),
                "b_enc": torch.zeros(f),
                "b_dec": torch.zeros(d),
                "W_dec": torch.randn(f, 2 - l, d, generator=g) * 0.1,
            }
            for l in range(2)
        },
    )
    out = cli(
        "inspect",
        "--model",
        "random:tiny",
        "--transcoders",
        f"circuit-tracer-clt:{tmp_path / 'clt'}",
        "--text",
        "Hello world, this is a test.",
    ).stdout
    assert "set 'circuit-tracer-clt', 2 layer(s)" in out and "cross-layer" in out
    for layer in (0, 1):
        cells = next(line for line in out.splitlines() if line.startswith(f"{layer} ")).split()
        assert cells[:10] == [
            str(layer),
            f"blocks.{layer}.hook_resid_mid",
            f"blocks.{layer}.hook_mlp_out",
            "64",
            "16",
            "64",
            "relu",
            "no",
            "float32",
            "circuit-tracer-clt",
        ]
        assert re.fullmatch(r"-?\d+\.\d{4}", cells[10]) and 0 < float(cells[11]) <= 16


def test_weightlens_on_a_clt_uses_the_summed_slices(tmp_path):
    """Edges into layer l weigh (sum_{k in [l', l)} W_dec[l' -> k][j]) . W_enc[l][:, i] (dense reference); token
    projections use the sum of all of a feature's slices: the same as a per-layer set with that decoder."""
    import numpy as np

    from atlas.config import WeightLensConfig
    from atlas.lens.weightlens import weightlens_layer

    model = normed_model("ln", seed=13)
    t = dense_clt(seed=13)
    clt = load_transcoders(write_both(tmp_path, t)[0], model)
    summed = per_layer_set("summed", t, [t["W_dec"][l].sum(0) for l in range(N)])
    cfg = WeightLensConfig(edge_z=1.0, bos="0", input_pool=50, output_pool=50, output_z=2.0, input_z=2.0)
    descs, n_edges, n_tokens = {}, 0, 0
    for layer in range(N):
        r = weightlens_layer(model, clt, layer, cfg, descs)
        ref = weightlens_layer(model, summed, layer, cfg, descs)
        descs[layer] = r.description
        for table in ("promoted", "suppressed"):
            for key in getattr(r, table):
                assert np.array_equal(getattr(r, table)[key], getattr(ref, table)[key]), (table, key)
        n_tokens += len(r.promoted["feat"])
        e = r.edges
        for dst, src, j, w in zip(e["dst"], e["src_layer"], e["src_idx"], e["weight"]):
            dense = sum(t["W_dec"][src, k, j] for k in range(src, layer)) @ t["W_enc"][layer][:, dst]
            assert w == pytest.approx(float(dense), rel=1e-4, abs=1e-5)
        n_edges += len(e["dst"])
        if layer == 2:
            assert set(e["src_layer"].tolist()) == {0, 1}
    assert n_edges > 0 and n_tokens > 0


def test_weightlens_ingest_stores_a_clts_edges(tmp_path, atlas_db):
    """The job writes a CLT's layers as sources and its virtual edges as stored edges, the same as the lens."""
    import duckdb

    from atlas.config import WeightLensConfig
    from atlas.lens.weightlens import weightlens_layer
    from ingest.weightlens import run_weightlens

    model = normed_model("ln", seed=14)
    t = dense_clt(seed=14)
    clt = load_transcoders(write_both(tmp_path, t)[0], model)
    cfg = WeightLensConfig(edge_z=1.0, bos="0", input_pool=50, output_pool=50, output_z=2.0, input_z=2.0)
    report = run_weightlens(model, clt, atlas_db, cfg, model_id="normed-ln")
    assert report.layers_computed == [0, 1, 2]
    r0 = weightlens_layer(model, clt, 0, cfg, {})
    r1 = weightlens_layer(model, clt, 1, cfg, {0: r0.description})
    r2 = weightlens_layer(model, clt, 2, cfg, {0: r0.description, 1: r1.description})
    con = duckdb.connect(str(atlas_db), read_only=True)
    sources = con.execute("SELECT layer, format, hook_in, hook_out FROM sources ORDER BY layer").fetchall()
    assert sources == [
        (l, "circuit-tracer-clt", f"blocks.{l}.mlp.hook_in", f"blocks.{l}.hook_mlp_out") for l in range(N)
    ]
    stored = con.execute("SELECT count(*) FROM edges WHERE kind = 'virtual'").fetchone()[0]
    assert stored == len(r1.edges["dst"]) + len(r2.edges["dst"]) > 0


def test_activations_and_circuitlens_jobs_on_a_clt(tmp_path, atlas_db):
    import duckdb

    from atlas.config import ActivationsConfig, CircuitLensConfig
    from ingest import activations, circuitlens

    model = normed_model("ln", seed=15)
    t = dense_clt(seed=15, skip=True)
    clt = load_transcoders(write_both(tmp_path, t)[0], model)
    tokens = torch.randint(1, 300, (20, 12), generator=torch.Generator().manual_seed(16))
    rep = activations.run(
        atlas_db,
        model,
        clt,
        tokens,
        ActivationsConfig(batch_size=8, n_samples=8, n_top=3, window_before=4, window_after=2),
        model_id="normed",
        model_spec=None,
    )
    assert rep["layers_written"] == N
    rep = circuitlens.run(
        atlas_db,
        model,
        clt,
        tokens,
        CircuitLensConfig(batch_size=32, min_samples=3, min_examples=4, n_output_positions=2),
        model_id="normed",
        model_spec=None,
    )
    assert rep["features"] > 0 and rep["max_completeness_gap"] < 1e-4
    with duckdb.connect(str(atlas_db), read_only=True) as con:
        kinds = dict(con.execute("SELECT kind, count(*) FROM attributions GROUP BY 1").fetchall())
    assert {"bias", "error", "feature", "token", "logit"} <= set(kinds)


def _most_active(model, tset, tokens, layer, pos):
    """Per example, the feature of ``layer`` most active at pos (read at the transcoder's own input)."""
    from atlas.transcoders.hook_points import add_mlp_hook_points

    add_mlp_hook_points(model)
    _, cache = model.run_with_cache(tokens, names_filter=tset[layer].hook_in)
    return tset[layer].encode(cache[tset[layer].hook_in][torch.arange(len(pos)), pos]).detach().argmax(-1)


@pytest.mark.parametrize("skip", [False, True])
def test_lean_attribution_equals_the_plain_one_on_a_clt(tmp_path, skip):
    """The lean path on a CLT: its bias pass decodes no activations (b_dec[l] + x_l S_l), its replay starts
    at the target layer and pushes the feature's slice into every layer k >= l with later skip paths live;
    every field equals the plain path's, at every layer, input and output side."""
    model = normed_model("gemma3", seed=21)
    t = dense_clt(seed=21, skip=skip)
    clt = load_transcoders(write_both(tmp_path, t)[1], model)
    tokens = torch.randint(0, 300, (4, 10), generator=torch.Generator().manual_seed(22))
    pos = torch.tensor([9, 4, 6, 2])
    for layer in range(N):
        feature = _most_active(model, clt, tokens, layer, pos)  # active: out_values not all 0
        lean = attribute(model, clt, tokens, layer, feature, pos, n_output=2)
        plain = attribute(model, clt, tokens, layer, feature, pos, n_output=2, lean=False)
        for name in ("z", "act", "bias", "errors", "token", "position", "heads", "head_totals", "out_values"):
            torch.testing.assert_close(getattr(lean, name), getattr(plain, name), atol=1e-5, rtol=1e-4, msg=name)
        assert torch.equal(lean.out_tokens, plain.out_tokens) and set(lean.features) == set(plain.features)
        for l in plain.features:
            torch.testing.assert_close(lean.features[l], plain.features[l], atol=1e-5, rtol=1e-4)
        assert completeness_gap(lean).abs().max().item() < 1e-4 * (lean.z.abs().max().item() + 1)
        assert plain.out_values.abs().max() > 0  # the output side is exercised


def test_a_clt_loads_from_a_hub_repo_one_layer_file_at_a_time(tmp_path, monkeypatch):
    """The hub path is real code down to huggingface_hub's two calls, which are pointed at a local
    directory laid out like the repo (no network here), to check which files atlas asks for."""
    import huggingface_hub

    t = dense_clt()
    _, gs = write_both(tmp_path, t)
    repo = tmp_path / "gs"
    fetched = []
    monkeypatch.setattr(
        huggingface_hub.HfApi,
        "list_repo_files",
        lambda self, repo_id, revision=None, **kw: sorted(
            p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file()
        ),
    )

    def hf_hub_download(repo_id, filename, revision=None, **kw):
        assert repo_id == "owner/clt"
        fetched.append(filename)
        return str(repo / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    clt = load_transcoders("gemmascope2-clt:hf://owner/clt")
    assert clt.uri == "hf://owner/clt" and clt.layer_ids == [0, 1, 2]
    assert sorted(set(fetched)) == sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*.safetensors"))
    x = torch.randn(4, D, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(clt.encode(1, x), dense_encode(t, 1, x))
