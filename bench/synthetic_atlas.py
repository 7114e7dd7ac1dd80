"""A synthetic atlas with the shape of a real one, for the API tests (tiny) and benchmarks (GPT-2 scale).

1. Register one model and ``n_layers`` sources of ``d_sae`` features through ``AtlasWriter``.
2. Per layer (one unit of work, vectorized numpy -> pyarrow): every feature of layer l >= 1 gets
   ``k_up`` upstream virtual edges from earlier layers (half from layer l-1, half from any earlier
   layer; heavy-tailed signed weights; duplicates removed), a share of them also ERA and TWERA
   edges; WeightLens rows (a share of features described), input / promoted / suppressed tokens
   from a synthetic vocabulary, activation statistics, top examples, clusters, explanations and
   scores.
3. Nothing depends on Python loops over features; a GPT-2-small-scale atlas (12 x 24,576
   features, k_up = 40 -> ~10.8M virtual edges) builds in about a minute.

    python -m bench.synthetic_atlas OUT.duckdb --layers 12 --d-sae 24576 --k-up 40
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from atlas.db import AtlasWriter, config_hash
from atlas.ids import fid_range, make_fids, source_id
from atlas.progress import track

JOB = "synthetic"
# a synthetic vocabulary, drawn Zipf-like so that a few common words have many readers and writers
WORDS = np.array([" the", " of", " and", " Paris", " France", " river", " bank"] + [f" w{i}" for i in range(5000)])


def _words(rng, size) -> np.ndarray:
    return np.minimum(rng.zipf(1.5, size=size), len(WORDS)) - 1


@dataclass(frozen=True)
class SyntheticSpec:
    model_id: str = "gpt2-small"
    set_name: str = "synth"
    n_layers: int = 12
    d_sae: int = 24576
    k_up: int = 40  # upstream virtual edges per feature of layer >= 1
    era_share: float = 0.1  # share of features that also get ERA and TWERA edges
    described_share: float = 0.8
    n_tokens: int = 4  # input / promoted / suppressed tokens per described feature
    n_examples: int = 2  # top examples per feature (window of 8 tokens)
    explained_share: float = 0.3
    seed: int = 0


def build(path: str | Path, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Write (or resume) the synthetic atlas at ``path``; returns the path."""
    path = Path(path)
    chash = config_hash(spec.__dict__)
    with AtlasWriter(path) as w:
        w.upsert_model(
            {
                "model_id": spec.model_id,
                "loader": "random",
                "n_layers": spec.n_layers,
                "d_model": 768,
                "d_mlp": 3072,
                "n_heads": 12,
                "d_vocab": 50257,
                "bos_token_id": 50256,
            }
        )
        sids = [
            w.upsert_source(
                {
                    "model_id": spec.model_id,
                    "source_id": source_id(layer, spec.set_name),
                    "set_name": spec.set_name,
                    "layer": layer,
                    "d_in": 768,
                    "d_out": 768,
                    "d_sae": spec.d_sae,
                    "hook_in": f"blocks.{layer}.ln2.hook_normalized",
                    "hook_out": f"blocks.{layer}.hook_mlp_out",
                    "activation": "relu",
                    "format": "synthetic",
                }
            )
            for layer in range(spec.n_layers)
        ]
        with w.run(JOB, spec.model_id, spec.__dict__) as run_id:
            for layer in track(range(spec.n_layers), "synthetic atlas layers", unit="layer"):
                unit = f"layer-{layer}"
                if w.unit_done(JOB, spec.model_id, unit, chash):
                    continue
                tables = _layer_tables(spec, sids, layer, run_id)
                span = fid_range(sids[layer], 0, spec.d_sae)
                deletes = [
                    (f"DELETE FROM {t} WHERE {span.sql(col)}", span.params())
                    for t, col in [
                        ("edges", "dst_fid"),
                        ("feature_weightlens", "fid"),
                        ("feature_tokens", "fid"),
                        ("feature_stats", "fid"),
                        ("examples", "fid"),
                        ("clusters", "fid"),
                        ("explanations", "fid"),
                        ("scores", "fid"),
                    ]
                ]
                w.write_unit(
                    job=JOB, scope=spec.model_id, unit=unit, chash=chash, run_id=run_id, deletes=deletes, inserts=tables
                )
    return path


def _layer_tables(spec: SyntheticSpec, sids: list[int], layer: int, run_id: str) -> dict[str, pa.Table]:
    rng = np.random.default_rng([spec.seed, layer])
    n = spec.d_sae
    fids = make_fids(sids[layer], np.arange(n))  # [d_sae]
    out: dict[str, pa.Table] = {}

    # ---- edges: k_up upstream per feature, half from layer-1, half from any earlier layer
    if layer > 0:
        k = spec.k_up
        src_layer = np.where(np.arange(k) < k // 2, layer - 1, 0)[None, :] + 0 * fids[:, None]  # [d_sae, k]
        src_layer[:, k // 2 :] = rng.integers(0, layer, size=(n, k - k // 2))
        src_sid = np.asarray(sids, dtype=np.int64)[src_layer]
        src = make_fids(src_sid, rng.integers(0, n, size=(n, k)))  # [d_sae, k]
        dst = np.repeat(fids, k)
        src = src.reshape(-1)
        _, keep = np.unique(np.stack([dst, src]), axis=1, return_index=True)
        keep.sort()
        src, dst = src[keep], dst[keep]
        weight = rng.standard_normal(len(src)) * rng.lognormal(0.0, 1.0, len(src)) * 0.05
        kinds = [("virtual", src, dst, weight)]
        era = rng.random(n) < spec.era_share
        sel = np.isin(dst, fids[era])
        for kind, scale in [("era", 3.0), ("twera", 0.5)]:
            kinds.append((kind, src[sel], dst[sel], weight[sel] * scale + rng.standard_normal(int(sel.sum())) * 0.01))
        out["edges"] = pa.concat_tables(
            [
                pa.table(
                    {
                        "src_fid": s,
                        "dst_fid": d,
                        "kind": pa.array([kind] * len(s)),
                        "variant": pa.array(["raw"] * len(s)),
                        "weight": wt,
                        "rel_contribution": np.abs(wt) / (np.abs(wt).sum() + 1e-9) * k,
                        "run_id": [run_id] * len(s),
                    }
                )
                for kind, s, d, wt in kinds
            ]
        )

    # ---- WeightLens: described features with description terms and tokens
    described = rng.random(n) < spec.described_share  # [d_sae]
    t = spec.n_tokens
    tok = _words(rng, (n, 3, t))  # [d_sae, side, t]
    desc = [[w.strip() for w in WORDS[row].astype(str)] if d else [] for row, d in zip(tok[:, 0, :2], described)]
    out["feature_weightlens"] = pa.table(
        {
            "fid": fids,
            "validated": described & (rng.random(n) < 0.9),
            "validation_soft": rng.random(n),
            "n_input_tokens": np.where(described, t, 0).astype(np.int32),
            "n_upstream": np.full(n, spec.k_up if layer else 0, dtype=np.int32),
            "n_description_tokens": np.array([len(d) for d in desc], dtype=np.int32),
            "description": pa.array(desc, type=pa.list_(pa.string())),
            "run_id": [run_id] * n,
        }
    )
    d_f = fids[described]
    side_tok = tok[described]  # [n_described, side, t]
    rows = []
    for si, side in enumerate(["input", "promoted", "suppressed"]):
        ids = side_tok[:, si, :].reshape(-1)
        score = np.sort(rng.lognormal(0, 0.5, size=(len(d_f), t)), axis=1)[:, ::-1].reshape(-1)
        rows.append(
            pa.table(
                {
                    "fid": np.repeat(d_f, t),
                    "side": pa.array([side] * len(ids)),
                    "rank": np.tile(np.arange(t, dtype=np.int32), len(d_f)),
                    "token_id": ids.astype(np.int32),
                    "token": WORDS[ids].astype(str),
                    "score": score if side != "suppressed" else -score,
                    "zscore": score * 3,
                    "validated": pa.array(
                        (rng.random(len(ids)) < 0.8) if side == "input" else [None] * len(ids), pa.bool_()
                    ),
                    "run_id": [run_id] * len(ids),
                }
            )
        )
    out["feature_tokens"] = pa.concat_tables(rows, promote_options="default")

    # ---- activation statistics and top examples
    freq = rng.beta(0.5, 50, n)
    max_act = rng.lognormal(1.0, 0.5, n)
    levels = [0.5, 0.9, 0.99]
    out["feature_stats"] = pa.table(
        {
            "fid": fids,
            "n_tokens": np.full(n, 1_000_000),
            "n_active": (freq * 1_000_000).astype(np.int64),
            "frequency": freq,
            "max_act": max_act,
            "mean_act": max_act * 0.3,
            "quantiles": pa.array((max_act[:, None] * np.array(levels)[None, :]).tolist()),
            "quantile_levels": pa.array([levels] * n),
            "run_id": [run_id] * n,
        }
    )
    e, win = spec.n_examples, 8
    ex_f = np.repeat(fids, e)
    ex_tok = _words(rng, (len(ex_f), win))
    acts = rng.random((len(ex_f), win)).astype(np.float32)
    out["examples"] = pa.table(
        {
            "fid": ex_f,
            "kind": pa.array(["top"] * len(ex_f)),
            "doc_id": rng.integers(0, 10_000, len(ex_f)),
            "pos": np.full(len(ex_f), win // 2, dtype=np.int32),
            "activation": acts.max(axis=1).astype(np.float64),
            "window_start": np.zeros(len(ex_f), dtype=np.int32),
            "tokens": pa.array(list(ex_tok.astype(np.int32))),
            "token_strs": pa.array(list(WORDS[ex_tok].astype(str))),
            "acts": pa.array(list(acts)),
            "run_id": [run_id] * len(ex_f),
        }
    )

    # ---- clusters, explanations, scores for a share of the described features
    explained = fids[described & (rng.random(n) < spec.explained_share)]
    m = len(explained)
    out["clusters"] = pa.table(
        {
            "fid": np.repeat(explained, 2),
            "label": np.tile(np.array([-1, 0], dtype=np.int32), m),
            "n_examples": rng.integers(1, 20, 2 * m).astype(np.int32),
            "contributors": pa.array(['{"tokens": [" the"]}'] * (2 * m)),
            "run_id": [run_id] * (2 * m),
        }
    )
    ex_words = WORDS[_words(rng, m)]
    out["explanations"] = pa.table(
        {
            "fid": explained,
            "method": pa.array(["circuitlens-template"] * m),
            "text": pa.array([f"fires on{wd} in context" for wd in ex_words]),
            "tokens": pa.array([[wd] for wd in ex_words]),
            "run_id": [run_id] * m,
        }
    )
    out["scores"] = pa.table(
        {
            "fid": explained,
            "method": pa.array(["token-membership"] * m),
            "metric": pa.array(["precision"] * m),
            "value": rng.random(m),
            "data": pa.array(["synthetic"] * m),
            "run_id": [run_id] * m,
        }
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--d-sae", type=int, default=24576)
    ap.add_argument("--k-up", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    build(args.out, SyntheticSpec(n_layers=args.layers, d_sae=args.d_sae, k_up=args.k_up, seed=args.seed))
    print(f"built {args.out} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
