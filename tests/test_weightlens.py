"""WeightLens finds planted tokens and edges exactly, and agrees with a plain per-feature computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atlas.config import WeightLensConfig
from atlas.lens.outliers import StreamingTopK, select_outliers
from atlas.lens.postprocess import group_terms, postprocess
from atlas.lens.weightlens import weightlens_layer
from atlas.models import bos_token_id, load_model
from tests.factories import random_transcoder_set

# Planted token ids (any ids of the real GPT-2 vocabulary) and residual directions.
T_A, T_R, T_C, T_P, T_S = 1000, 2000, 3000, 4000, 5000
E = torch.eye(64)


@pytest.fixture(scope="module")
def planted():
    """A 2-layer model and transcoders with known structure:

    - token T_A = 30·e0, T_R = 30·e1 − 40·e2, T_C = 30·e3 (embedding rows);
    - feature (0, 0): encoder e0 + e1 -> input candidates {T_A, T_R}; its bias is set between the two
      tokens' pre-activations, so the isolation check keeps T_A and rejects T_R (LayerNorm shrinks T_R);
    - feature (0, 1): encoder e3 -> {T_C};  feature (0, 2): encoder e0, bias −1000 -> never fires;
    - decoders of (0, 0) and (0, 1) write 10·e5; feature (1, 0) reads e5: the two planted edges;
    - an MLP-0 neuron reads e0 + e1 and writes e5, so (1, 0) fires on T_A and T_R (not T_C) at layer 1;
    - unembedding: e5 promotes T_P and suppresses T_S, so (0, 0) and (0, 1) have exactly those outputs.
    """
    model = load_model("random:tiny")
    tset = random_transcoder_set(model, d_sae=128, seed=1, init="fan_in")
    with torch.no_grad():
        W_E = model.embed.W_E
        W_E[T_A], W_E[T_R], W_E[T_C] = 30 * E[0], 30 * E[1] - 40 * E[2], 30 * E[3]
        mlp = model.blocks[0].mlp
        mlp.W_in[:, 0] = (E[0] + E[1]) * 3
        mlp.b_in[0] = 0
        mlp.W_out[0] = 30 * E[5]
        W_U = model.unembed.W_U
        W_U[5, T_P], W_U[5, T_S] = 50 * W_U.std(), -50 * W_U.std()
        tc0, tc1 = tset[0].sae, tset[1].sae
        for f, direction in ((0, E[0] + E[1]), (1, E[3]), (2, E[0])):
            tc0.W_enc[:, f] = direction
            tc0.b_enc[f] = 0.0
        tc0.b_enc[2] = -1000.0
        tc0.W_dec[0], tc0.W_dec[1] = 10 * E[5], 10 * E[5]
        tc1.W_enc[:, 0], tc1.b_enc[0] = E[5], -2.0
        # bias of (0, 0): half-way between its pre-activations on [BOS, T_A] and [BOS, T_R]
        x = _hook_in(model, tset, 0, [[bos_token_id(model), T_A], [bos_token_id(model), T_R]])[:, 1]
        pre = x @ tc0.W_enc[:, 0]
        assert pre[0] > pre[1] + 1, "planting premise: LayerNorm must shrink T_R's projection"
        tc0.b_enc[0] = -(pre[0] + pre[1]) / 2
    return model, tset


def _hook_in(model, tset, layer, seqs):
    _, cache = model.run_with_cache(torch.tensor(seqs), names_filter=tset[layer].hook_in, stop_at_layer=layer + 1)
    return cache[tset[layer].hook_in]


def _run_all(model, tset, cfg):
    out, descs = {}, {}
    for layer in tset.layer_ids:
        out[layer] = weightlens_layer(model, tset, layer, cfg, descs)
        descs[layer] = out[layer].description
    return out


def _rows(table, feat, keys=("token",)):
    m = table["feat"] == feat
    return [tuple(int(table[k][i]) for k in keys) for i in np.nonzero(m)[0]]


def test_planted_tokens_edges_isolation_and_inheritance(planted):
    model, tset = planted
    res = _run_all(model, tset, WeightLensConfig(feature_block=48, vocab_block=20000))
    r0, r1 = res[0], res[1]
    # input tokens: exactly the planted ones, strongest first; isolation keeps T_A, rejects T_R
    assert sorted(_rows(r0.inputs, 0, ("token", "validated"))) == [(T_A, 1), (T_R, 0)]
    assert _rows(r0.inputs, 1, ("token", "validated")) == [(T_C, 1)]
    assert _rows(r0.inputs, 2, ("token", "validated")) == [(T_A, 0)]  # never fires: rejected
    # output tokens: exactly the planted promoted / suppressed ones
    for f in (0, 1):
        assert _rows(r0.promoted, f) == [(T_P,)]
        assert _rows(r0.suppressed, f) == [(T_S,)]
    assert r0.suppressed["score"][r0.suppressed["feat"] == 0][0] < 0
    # edges into (1, 0): exactly the two planted upstream features, weight 10·|e5|² = 10
    e = r1.edges
    into = sorted((int(e["src_layer"][i]), int(e["src_idx"][i])) for i in np.nonzero(e["dst"] == 0)[0])
    assert into == [(0, 0), (0, 1)]
    assert np.allclose(e["weight"][e["dst"] == 0], 10.0, rtol=1e-5)
    assert r1.n_upstream[0] == 2
    # descriptions: (0, 0) keeps only the validated T_A; (1, 0) has no input tokens of its own and
    # inherits T_A from (0, 0) (it would fire on T_R too, but T_R was not validated upstream), not T_C
    assert r0.description.lists()[0] == [T_A]
    assert r1.n_input_tokens[0] == 0
    assert r1.description.lists()[0] == [T_A]
    fires_on_r = tset[1].encode(_hook_in(model, tset, 1, [[bos_token_id(model), T_R]])[0, 1])[0] > 0
    assert fires_on_r, "premise: (1, 0) fires on T_R, so its absence is the validated-only rule"
    assert r1.validation_soft[0] == pytest.approx(0.5)  # T_A fired, T_C did not
    assert r0.validated[0] and r0.validated[1] and r1.validated[0]
    assert not r0.validated[2] and r0.description.lists()[2] == []
    assert np.isnan(r0.validation_soft[0])  # layer 0 inherits nothing
    # relative contribution = |c| / (Σ|s| + Σ|c|), checked by hand for one edge
    W_E = model.W_E.double()
    s_abs = (W_E @ tset[1].W_enc[:, 0].double()).abs().sum()
    c_abs = (tset[0].W_dec.double() @ tset[1].W_enc[:, 0].double()).abs().sum()
    assert e["rel"][e["dst"] == 0][0] == pytest.approx(float(10.0 / (s_abs + c_abs)), rel=1e-5)


def test_blocking_and_dtype_do_not_change_the_planted_answer(planted):
    model, tset = planted
    a = _run_all(model, tset, WeightLensConfig())
    b = _run_all(
        model,
        tset,
        WeightLensConfig(
            feature_block=7, vocab_block=4096, upstream_block=50, forward_batch_tokens=64, dtype="bfloat16"
        ),
    )
    for layer in (0, 1):
        assert a[layer].description.lists()[:3] == b[layer].description.lists()[:3]
        assert (a[layer].edges["dst"] == 0).sum() == (b[layer].edges["dst"] == 0).sum()


def test_edge_variants_scopes_and_full_zscores(planted):
    """ln_centered folds LayerNorm centring and the ln2 gain into the weight; per-layer pools, |c| pools
    and full-population z-scores still find the planted edges and tokens."""
    import copy

    model, tset = planted
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.blocks[1].ln2.w.copy_(torch.linspace(0.5, 1.5, 64))
    cfg = WeightLensConfig(
        edge_variant="ln_centered", edge_scope="per_layer", edge_sign="absolute", token_zmode="full", edge_zmode="full"
    )
    r0 = weightlens_layer(model, tset, 0, cfg, {})
    r1 = weightlens_layer(model, tset, 1, cfg, {0: r0.description})
    assert sorted(_rows(r0.inputs, 0)) == sorted([(T_A,), (T_R,)])
    e = r1.edges
    into = sorted((int(e["src_layer"][i]), int(e["src_idx"][i])) for i in np.nonzero(e["dst"] == 0)[0])
    assert into == [(0, 0), (0, 1)]
    want = (10 - 10 / 64) * float(model.blocks[1].ln2.w[5])  # (W_dec − mean) · (w ⊙ e5)
    assert np.allclose(e["weight"][e["dst"] == 0], want, rtol=1e-5)
    raw = weightlens_layer(model, tset, 1, WeightLensConfig(), {0: r0.description}).edges
    assert np.allclose(raw["weight"][raw["dst"] == 0], 10.0, rtol=1e-5)


# ---- agreement with a straightforward per-feature computation ---------------------------------


def _naive_outliers(scores: torch.Tensor, k: int, thr: float, positive: bool = False):
    v, i = torch.topk(scores, min(k, len(scores)))
    z = (v - v.mean()) / v.std()
    keep = z > thr
    if positive:
        keep &= v > 0
    return i[keep].tolist()


def _fires(model, tc, layer, seq, feat):
    _, cache = model.run_with_cache(torch.tensor([seq]), names_filter=tc.hook_in, stop_at_layer=layer + 1)
    return (tc.encode(cache[tc.hook_in][0])[:, feat] > 0).tolist()  # per position


def naive_weightlens(model, tset, cfg):
    """One feature at a time, as the reference does it: matrix-vector products and single runs."""
    bos = bos_token_id(model)
    W_E, W_U = model.W_E.double(), model.W_U.double()
    out, D = {}, {}
    for layer in tset.layer_ids:
        tc = tset[layer]
        ups = [l for l in tset.layer_ids if l < layer]
        for f in range(tc.d_sae):
            enc, dec = tc.W_enc[:, f].double(), tc.W_dec[f].double()
            s = W_E @ enc
            cands = _naive_outliers(s, cfg.input_pool, cfg.input_z)
            valid = [t for t in cands if _fires(model, tc, layer, [bos, t], f)[1]]
            u = dec @ W_U
            promoted = _naive_outliers(u, cfg.output_pool, cfg.output_z)
            suppressed = _naive_outliers(-u, cfg.output_pool, cfg.output_z)
            edges = []
            if ups:
                c = torch.cat([tset[l].W_dec.double() @ enc for l in ups])
                ids = [(l, j) for l in ups for j in range(tset[l].d_sae)]
                total = s.abs().sum() + c.abs().sum()
                edges = [
                    (ids[j], float(c[j]), float(c[j].abs() / total))
                    for j in _naive_outliers(c, cfg.edge_pool, cfg.edge_z, positive=True)
                ]
            desc = list(valid)
            offered, fired = [], []
            for (l, j), _, _ in edges:
                seq = D[(l, j)]
                if not seq:
                    continue
                on = _fires(model, tc, layer, [bos, *seq], f)[1:]
                offered += [t for t in seq if t not in offered]
                for t, o in zip(seq, on):
                    if o and t not in fired:
                        fired.append(t)
                    if o and t not in desc:
                        desc.append(t)
            D[(layer, f)] = desc
            validated = bool(desc) and any(_fires(model, tc, layer, [bos, *desc], f)[1:])
            soft = len(fired) / len(offered) if offered else float("nan")
            out[(layer, f)] = dict(
                cands=cands,
                valid=valid,
                promoted=promoted,
                suppressed=suppressed,
                edges=edges,
                desc=desc,
                validated=validated,
                soft=soft,
            )
    return out


def test_agrees_with_a_plain_per_feature_computation_to_the_last_token_and_edge(tiny_model):
    tset = random_transcoder_set(tiny_model, d_sae=24, seed=3, init="fan_in")
    # low thresholds, so that many tokens, edges and inheritances are selected and compared
    cfg = WeightLensConfig(
        input_z=3.5,
        output_z=3.5,
        edge_z=1.5,
        edge_pool=30,
        dtype="float64",
        feature_block=16,
        vocab_block=10000,
        inherit_layers="all",
    )
    fast = _run_all(tiny_model, tset, cfg)
    slow = naive_weightlens(tiny_model, tset, cfg)
    n_edges = n_inherited = 0
    for (layer, f), ref in slow.items():
        r = fast[layer]
        m = r.inputs["feat"] == f
        assert r.inputs["token"][m].tolist() == ref["cands"], (layer, f)
        assert r.inputs["token"][m][r.inputs["validated"][m]].tolist() == ref["valid"], (layer, f)
        assert _rows(r.promoted, f) == [(t,) for t in ref["promoted"]]
        assert _rows(r.suppressed, f) == [(t,) for t in ref["suppressed"]]
        m = r.edges["dst"] == f
        got = list(zip(r.edges["src_layer"][m].tolist(), r.edges["src_idx"][m].tolist()))
        assert got == [e[0] for e in ref["edges"]], (layer, f)
        assert np.allclose(r.edges["weight"][m], [e[1] for e in ref["edges"]], rtol=1e-9)
        assert np.allclose(r.edges["rel"][m], [e[2] for e in ref["edges"]], rtol=1e-9)
        assert r.description.lists()[f] == ref["desc"], (layer, f)
        assert bool(r.validated[f]) == ref["validated"]
        assert np.isnan(ref["soft"]) == np.isnan(r.validation_soft[f])
        if not np.isnan(ref["soft"]):
            assert r.validation_soft[f] == pytest.approx(ref["soft"])
        n_edges += len(got)
        n_inherited += len(ref["desc"]) - len(ref["valid"])
    assert n_edges > 20 and n_inherited > 5, "the comparison must exercise edges and inheritance"


# ---- pieces ------------------------------------------------------------------------------------


def test_streaming_pool_equals_one_shot_topk_and_full_mode_z():
    gen = torch.Generator().manual_seed(0)
    S = torch.randn(5, 1000, generator=gen, dtype=torch.float64)
    pool = StreamingTopK(5, 50, moments=True)
    for c0 in range(0, 1000, 128):
        pool.update(S[:, c0 : c0 + 128], torch.arange(c0, min(c0 + 128, 1000)))
    v, i = torch.topk(S, 50, dim=1)
    assert torch.equal(pool.ids, i) and torch.equal(pool.values, v)
    assert torch.allclose(pool.abs_sum, S.abs().sum(1))
    sel = pool.select(2.0, "full")
    z_full = (S - S.mean(1, keepdim=True)) / S.std(1, keepdim=True)
    want = (z_full > 2.0).nonzero().tolist()
    assert sorted(zip(sel.row.tolist(), sel.col.tolist())) == sorted(map(tuple, want))
    with pytest.raises(ValueError, match="unknown z-score mode"):
        select_outliers(pool.values, pool.ids, 2.0, "median")


def test_postprocessing_normalizes_lemmatizes_and_groups():
    assert postprocess([" Dogs", " dog", "Running", " ran", "...", "..", " ", "cats,", " Cat", "!"]) == [
        "dog",
        "running",
        "run",
        "...",
        "cat",
        "!",
    ]
    assert group_terms(["color", "colour", "colors"]) == ["color"]  # ratio > 0.85 joins the group
    assert group_terms(["!!", "?"]) == ["!!", "?"]


def test_bad_settings_are_named(tiny_model):
    from atlas.errors import AtlasError

    with pytest.raises(AtlasError, match="edge_scope='sideways'"):
        WeightLensConfig(edge_scope="sideways")
    with pytest.raises(AtlasError, match="bos='eos'"):
        WeightLensConfig(bos="eos")


def test_inheritance_layers_follow_the_model_family(tiny_model):
    from atlas.lens.weightlens import inherit_from, resolve_bos

    assert inherit_from(WeightLensConfig(), tiny_model, [0, 1, 2]) == {0, 1, 2}  # not GPT-2: all
    gpt2 = tiny_model.cfg.__class__(**{**tiny_model.cfg.to_dict(), "original_architecture": "GPT2LMHeadModel"})
    assert inherit_from(WeightLensConfig(), type("M", (), {"cfg": gpt2})(), [0, 1, 2]) == {0}
    assert inherit_from(WeightLensConfig(inherit_layers="all"), type("M", (), {"cfg": gpt2})(), [3, 4]) == {3, 4}
    assert inherit_from(WeightLensConfig(inherit_layers="layer0"), tiny_model, [3, 4]) == {3}
    assert (
        resolve_bos(WeightLensConfig(), tiny_model) == 50256 and resolve_bos(WeightLensConfig(bos="2"), tiny_model) == 2
    )


def test_a_description_longer_than_the_context_is_validated_on_its_first_n_ctx_tokens(tiny_model):
    """[BOS] + a description of more than n_ctx - 1 tokens used to crash the validation forward."""
    from atlas.lens.weightlens import Ragged, validate

    tset = random_transcoder_set(tiny_model, d_sae=8, seed=3)
    n_ctx, bos = tiny_model.cfg.n_ctx, bos_token_id(tiny_model)
    rng = np.random.default_rng(0)
    long = rng.integers(1, tiny_model.cfg.d_vocab, size=n_ctx + 7)  # feature 0: too long
    short = long[: n_ctx - 1]  # feature 1: the part that fits
    desc = Ragged(feat=np.repeat([0, 1], [len(long), len(short)]), token=np.concatenate([long, short]), d_sae=8)
    got = validate(tiny_model, tset[0], 0, bos, desc, batch_tokens=4 * n_ctx)
    assert got[0] == got[1]  # the cut description reads exactly as its first n_ctx tokens
    assert not got[2:].any()  # features without a description are never validated
