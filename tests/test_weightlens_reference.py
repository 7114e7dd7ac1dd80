"""`profile='reference'` reproduces the authors' WeightLens code, field by field, per model family.

``authors_weightlens`` below is a plain re-implementation of the authors' published steps
(weight_lens/input_invariant_feature_description.py and utils.py, read at commit 93f8200): one
feature at a time, matrix-vector products, one forward pass per sequence, the description built
from token *strings*, with no helper shared with atlas's lens. The test runs the real ingest job
(``run_weightlens`` into a DuckDB file) and compares every stored field of every feature with it,
for a GPT-2-shaped model (no description BOS, inheritance from layer 0 only) and a Gemma-shaped one
(RMSNorm, JumpReLU, description BOS 2, a tokenizer that adds BOS when re-encoding).
"""

from __future__ import annotations

import duckdb
import numpy as np
import pytest
import torch

from atlas.config import WeightLensConfig
from atlas.ids import split_fid
from tests.factories import random_transcoder_set

# low thresholds, so that many tokens, links and inherited tokens are compared
CFG = dict(
    input_pool=1000,
    input_z=3.0,
    output_pool=1000,
    output_z=3.5,
    edge_pool=16,
    edge_z=1.6,
    dtype="float64",
    feature_block=20,
    vocab_block=40000,
)


# ---- the two models ------------------------------------------------------------------------------


def _perturb_norms_and_biases(model, seed: int) -> None:
    """Non-trivial norm gains and biases, so that no step can silently skip the norm."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".w") and ("ln" in name):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=gen))
            elif name.endswith(".b") and ("ln" in name) or name.endswith("b_in"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def _silence(tset, n: int = 4):
    """Features 0..n-1 of every layer never fire: empty descriptions, which links must skip."""
    with torch.no_grad():
        for tc in tset:
            tc.sae.b_enc[:n] = -1000.0
    return tset


def gpt2_shaped():
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from atlas.models import gpt2_tokenizer

    cfg = HookedTransformerConfig(
        n_layers=3,
        d_model=64,
        d_head=16,
        n_heads=4,
        d_mlp=256,
        d_vocab=50257,
        n_ctx=1024,
        act_fn="gelu_new",
        normalization_type="LN",
        model_name="gpt2-shaped",
        original_architecture="GPT2LMHeadModel",
        seed=0,
        default_prepend_bos=True,
    )
    model = HookedTransformer(cfg, tokenizer=gpt2_tokenizer()).eval()
    _perturb_norms_and_biases(model, 1)
    return model, _silence(random_transcoder_set(model, d_sae=32, seed=2, init="fan_in"))


def gemma_shaped():
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import AutoTokenizer

    from atlas.models import converted_dir

    path = converted_dir() / "tokenizer"
    if not path.is_dir():
        pytest.skip(f"the Gemma 3 tokenizer is built by `atlas assets` ({path} is missing)")
    tok = AutoTokenizer.from_pretrained(str(path))
    cfg = HookedTransformerConfig(
        n_layers=3,
        d_model=64,
        d_head=16,
        n_heads=4,
        n_key_value_heads=2,
        d_mlp=128,
        d_vocab=len(tok),
        n_ctx=1024,
        act_fn="gelu_pytorch_tanh",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=16,
        gated_mlp=True,
        use_normalization_before_and_after=True,
        model_name="gemma-shaped",
        original_architecture="Gemma3ForCausalLM",
        seed=0,
    )
    model = HookedTransformer(cfg, tokenizer=tok).eval()
    _perturb_norms_and_biases(model, 3)
    tset = _silence(random_transcoder_set(model, d_sae=32, seed=4, kind="jumprelu", init="fan_in"))
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for tc in tset:
            tc.sae.threshold.copy_(0.05 * torch.rand(tc.d_sae, generator=gen))
    return model, tset


# ---- the authors' steps, one feature at a time ---------------------------------------------------


def _acts(model, tc, layer, ids):
    """Post-activation of every feature of layer's transcoder at every position of one sequence: [T, F]."""
    _, cache = model.run_with_cache(torch.tensor([ids]), names_filter=tc.hook_in, stop_at_layer=layer + 1)
    return tc.encode(cache[tc.hook_in][0]).detach()


def _outliers(values, thr):
    z = (values - values.mean()) / values.std()
    return (z > thr).nonzero(as_tuple=True)[0], (z < -thr).nonzero(as_tuple=True)[0]


def authors_weightlens(model, tset, family):
    bos = {"gpt2": None, "gemma": 2, "llama": 128000}[family]
    tok = model.tokenizer
    W_E, W_U = model.W_E.detach().double(), model.W_U.detach().double()
    results = {}
    for layer in range(model.cfg.n_layers):
        tc = tset[layer]
        for f in range(tc.d_sae):
            enc, dec = tc.W_enc[:, f].detach().double(), tc.W_dec[f].detach().double()
            r = {}
            # embedding: top and bottom pools, outliers by z inside each pool
            emb = W_E @ enc
            tv, ti = torch.topk(emb, CFG["input_pool"], sorted=True)
            bv, bi = torch.topk(emb, CFG["input_pool"], sorted=True, largest=False)
            top = ti[_outliers(tv, CFG["input_z"])[0]].tolist()
            r["inputs"] = top
            r["input_scores"] = tv[_outliers(tv, CFG["input_z"])[0]].tolist()
            r["negative"] = bi[_outliers(bv, CFG["input_z"])[1]].tolist()
            r["act"] = [float(_acts(model, tc, layer, [2, t])[-1, f]) for t in top]  # prefix 2, always
            # output logits
            u = dec @ W_U
            uv, ui = torch.topk(u, CFG["output_pool"], sorted=True)
            dv, di = torch.topk(u, CFG["output_pool"], sorted=True, largest=False)
            r["promoted"] = ui[_outliers(uv, CFG["output_z"])[0]].tolist()
            r["suppressed"] = di[_outliers(dv, CFG["output_z"])[1]].tolist()
            # feature-to-feature contributions from every lower layer
            total = float(emb.abs().sum())
            links = []
            for lo in range(layer):
                proj = tset[lo].W_dec.detach().double() @ enc
                pv, pi = torch.topk(proj, CFG["edge_pool"])
                total += float(proj.abs().sum())
                for n in _outliers(pv, CFG["edge_z"])[0].tolist():
                    links.append({"layer": lo, "idx": int(pi[n]), "c": float(pv[n])})
            for e in links:
                e["rel"] = abs(e["c"]) / total
            r["links"] = sorted(links, key=lambda e: e["rel"], reverse=True)
            # description
            strings = np.array([tok.decode(t) for t in top], dtype=str)
            soft = strings[np.array(r["act"]) > 0].tolist() if len(top) else []
            desc = list(soft)
            n_inherited = 0
            for e in r["links"]:
                if family == "gpt2" and e["layer"] != 0:
                    continue
                up = results[(e["layer"], e["idx"])]["description"]
                if up is None:
                    continue
                soft.extend(up)
                ids = [tok(x).input_ids[-1] for x in up]
                a = _acts(model, tc, layer, ([bos] if bos is not None else []) + ids)
                a = a[1 if bos is not None else 0 :, f]
                added = np.array(up)[a.numpy() > 0].tolist()
                desc.extend(added)
                n_inherited += len(added)
            if desc:
                desc = np.unique(desc).tolist()
                soft = np.unique(soft).tolist()
                ids = [tok(x).input_ids[-1] for x in desc]
                a = _acts(model, tc, layer, ([bos] if bos is not None else []) + ids)
                r["validation"] = float(a[1 if bos is not None else 0 :, f].sum()) > 0
            else:
                desc = None
                r["validation"] = False
            if soft:
                ids = [tok(x).input_ids[-1] for x in soft]
                a = _acts(model, tc, layer, ([bos] if bos is not None else []) + ids)[1 if bos is not None else 0 :, f]
                r["validation_soft"] = float((a > 0).sum()) / len(a) if len(a) else 0.0
            else:
                r["validation_soft"] = 0.0
            r["description"], r["n_inherited"] = desc, n_inherited
            results[(layer, f)] = r
    return results


# ---- what the ingest job stored --------------------------------------------------------------------


def _stored(path, tset):
    out = {}
    with duckdb.connect(str(path), read_only=True) as con:
        sid = dict(con.execute("SELECT layer, sid FROM sources").fetchall())
        layer_of = {s: l for l, s in sid.items()}
        toks = con.execute(
            "SELECT fid, side, token_id, token, score, validated FROM feature_tokens ORDER BY fid, side, rank"
        ).fetchall()
        feats = con.execute(
            "SELECT fid, validated, validation_soft, n_description_tokens, n_upstream FROM feature_weightlens"
        ).fetchall()
        edges = con.execute("SELECT src_fid, dst_fid, weight, rel_contribution FROM edges").fetchall()
        profile = con.execute("SELECT DISTINCT profile FROM ingest_runs").fetchall()

    def key(fid):
        return (layer_of[split_fid(fid).sid], split_fid(fid).idx)

    for layer in tset.layer_ids:
        for f in range(tset[layer].d_sae):
            out[(layer, f)] = {"tokens": {}, "edges": {}}
    for fid, side, tid, text, score, valid in toks:
        out[key(fid)]["tokens"].setdefault(side, []).append((tid, text, score, valid))
    for fid, validated, soft, n_desc, n_up in feats:
        out[key(fid)].update(validated=validated, soft=soft, n_desc=n_desc, n_up=n_up)
    for src, dst, w, rel in edges:
        out[key(dst)]["edges"][key(src)] = (w, rel)
    return out, profile


@pytest.mark.slow  # ~16-27 s each (measured with --durations on 2 cores)
@pytest.mark.parametrize("shape, family", [(gpt2_shaped, "gpt2"), (gemma_shaped, "gemma")])
def test_reference_profile_agrees_with_the_authors_steps_on_every_field(shape, family, tmp_path):
    from atlas.lens.weightlens import infer_family
    from ingest.weightlens import run_weightlens

    model, tset = shape()
    assert infer_family(model) == family  # 'auto' picks the family
    cfg = WeightLensConfig(profile="reference", **CFG)
    run_weightlens(model, tset, tmp_path / "a.duckdb", cfg, model_id=family)
    got, profile = _stored(tmp_path / "a.duckdb", tset)
    want = authors_weightlens(model, tset, family)
    assert profile == [("reference",)]
    n = dict(links=0, inherited=0, validated=0, unvalidated=0, soft_partial=0, skipped_layers=0)
    for (layer, f), ref in want.items():
        g, where = got[(layer, f)], (layer, f)
        t = g["tokens"]
        assert [r[0] for r in t.get("input", [])] == ref["inputs"], where
        assert np.allclose([r[2] for r in t.get("input", [])], ref["input_scores"], rtol=1e-9)
        assert [bool(r[3]) for r in t.get("input", [])] == [a > 0 for a in ref["act"]], where
        assert [r[0] for r in t.get("input_negative", [])] == ref["negative"], where
        assert [r[0] for r in t.get("promoted", [])] == ref["promoted"], where
        assert [r[0] for r in t.get("suppressed", [])] == ref["suppressed"], where
        links = {(e["layer"], e["idx"]): e for e in ref["links"]}
        assert set(g["edges"]) == set(links), where
        for k, (w, rel) in g["edges"].items():
            assert w == pytest.approx(links[k]["c"], rel=1e-9) and rel == pytest.approx(links[k]["rel"], rel=1e-9)
        assert [r[1] for r in t.get("description", [])] == (ref["description"] or []), where
        assert g["n_desc"] == len(ref["description"] or [])
        assert g["validated"] == ref["validation"], where
        assert g["soft"] == pytest.approx(ref["validation_soft"], abs=1e-12), where
        n["links"] += len(links)
        n["inherited"] += ref["n_inherited"]
        n["validated" if ref["validation"] else "unvalidated"] += 1
        n["soft_partial"] += 0 < ref["validation_soft"] < 1
        n["skipped_layers"] += sum(e["layer"] != 0 for e in ref["links"]) if family == "gpt2" else 0
    # the comparison must exercise every branch of the authors' rules
    assert n["links"] > 40 and n["inherited"] > 10 and n["soft_partial"] > 5, n
    assert n["validated"] > 5 and n["unvalidated"] > 5, n
    assert family != "gpt2" or n["skipped_layers"] > 0, n


def test_reference_profile_needs_a_family_it_can_infer(tiny_model, tmp_path):
    from atlas.errors import AtlasError
    from ingest.weightlens import run_weightlens

    tset = random_transcoder_set(tiny_model, d_sae=8, seed=0, init="fan_in")
    with pytest.raises(AtlasError, match="set family=gpt2, gemma or llama"):
        run_weightlens(tiny_model, tset, tmp_path / "a.duckdb", WeightLensConfig(profile="reference"), model_id="t")


def test_profile_defaults_resolve_per_profile(tiny_model):
    from atlas.lens.weightlens import description_bos, inherit_from, resolve_bos

    atlas, ref = WeightLensConfig(), WeightLensConfig(profile="reference", family="gpt2")
    assert (atlas.scope, atlas.sign, ref.scope, ref.sign) == ("all_layers", "positive", "per_layer", "top")
    assert resolve_bos(atlas, tiny_model) == 50256 and resolve_bos(ref, tiny_model) == 2
    assert description_bos(atlas, tiny_model) == 50256 and description_bos(ref, tiny_model) is None
    # bos=N changes the isolation prefix only, never the description step
    assert description_bos(WeightLensConfig(bos="2"), tiny_model) == 50256
    assert description_bos(WeightLensConfig(profile="reference", family="gemma"), tiny_model) == 2
    # the reference inherits from layer 0 itself for GPT-2; atlas from the set's lowest layer
    assert inherit_from(ref, tiny_model, [1, 2]) == set()
    assert inherit_from(WeightLensConfig(family="gpt2"), tiny_model, [1, 2]) == {1}


def test_reference_resume_reads_upstream_description_strings_back(tiny_model, tmp_path):
    """A resumed run inherits from descriptions read back from the atlas (their strings) and stores the same."""
    from atlas import db
    from ingest.weightlens import run_weightlens

    tset = _silence(random_transcoder_set(tiny_model, d_sae=32, seed=6, init="fan_in"))
    cfg = WeightLensConfig(profile="reference", family="gpt2", **CFG)
    path = tmp_path / "a.duckdb"
    run_weightlens(tiny_model, tset, path, cfg, model_id="t")

    def rows():
        with duckdb.connect(str(path), read_only=True) as con:
            return (
                con.execute("SELECT fid, side, rank, token_id, token FROM feature_tokens ORDER BY ALL").fetchall(),
                con.execute(
                    "SELECT fid, validated, validation_soft, description FROM feature_weightlens ORDER BY fid"
                ).fetchall(),
            )

    first = rows()
    with db.AtlasWriter(path) as w:
        w.execute("DELETE FROM ingest_units WHERE unit = 'layer-1'")
    again = run_weightlens(tiny_model, tset, path, cfg, model_id="t")
    assert again.layers_skipped == [0] and again.layers_computed == [1]
    assert rows() == first
    inherited = [r for r in first[0] if r[1] == "description" and split_fid(r[0]).sid != split_fid(first[0][0][0]).sid]
    assert inherited, "layer 1 must have descriptions to compare"
