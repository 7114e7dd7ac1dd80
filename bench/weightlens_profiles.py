"""What each difference between the WeightLens profiles does to coverage, on synthetic models.

    PYTHONPATH=. python bench/weightlens_profiles.py                  # GPT-2- and Gemma-shaped, 3 x 256
    PYTHONPATH=. python bench/weightlens_profiles.py --shapes gpt2 --d-sae 512 --json out.json

Models: 3-layer random models of GPT-2's shape (LayerNorm, the real GPT-2 tokenizer) and of Gemma 3's
(RMSNorm, rotary, gated MLP, the Gemma 3 tokenizer from `atlas assets`), with non-trivial norm gains
and biases, and random transcoders (JumpReLU for Gemma). Random weights have few outliers at the
reference thresholds, so the thresholds are lowered (printed with the results); the figures show
the direction and size of each rule's effect, not what a trained model's atlas would show.

For each shape, every variant runs the real ingest job into a fresh DuckDB file and reads
`coverage_per_layer`: the atlas profile, the reference profile, and each with one separable rule
switched to the other profile's value. What is left between "reference" and the best ablation is
the description step itself (BOS by family, strings sorted and re-encoded), which has no switch
of its own. The machine reference is a [2048, 768] @ [768, 50257] float32 matmul, timed in the
same run; `uptime`'s load average is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

THRESHOLDS = dict(input_z=3.0, output_z=3.5, edge_z=2.0, edge_pool=40)
VARIANTS = {
    "atlas": dict(profile="atlas"),
    "atlas, edge_scope=per_layer": dict(profile="atlas", edge_scope="per_layer"),
    "atlas, bos=2 (isolation prefix)": dict(profile="atlas", bos="2"),
    "reference": dict(profile="reference"),
    "reference, edge_scope=all_layers, edge_sign=positive": dict(
        profile="reference", edge_scope="all_layers", edge_sign="positive"
    ),
    "reference, bos=model (isolation prefix)": dict(profile="reference", bos="model"),
}


def matmul_gflops(n: int = 3) -> float:
    import torch

    a, b = torch.randn(2048, 768), torch.randn(768, 50257)
    best = 0.0
    for _ in range(n):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * 2048 * 768 * 50257 / (time.perf_counter() - t) / 1e9)
    return best


def _norms_and_biases(model, seed: int) -> None:
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".w") and "ln" in name:
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=gen))
            elif (name.endswith(".b") and "ln" in name) or name.endswith("b_in"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def _transcoders(model, d_sae: int, jumprelu: bool, seed: int):
    from tests.factories import RandomInit, random_transcoder_set

    init = RandomInit.fan_in(model.cfg.d_model, threshold=0.05)
    return random_transcoder_set(
        model, d_sae, kind="jumprelu" if jumprelu else "relu", seed=seed, set_name="bench", init=init
    )


def build(shape: str, d_sae: int):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    if shape == "gpt2":
        from atlas.models import gpt2_tokenizer

        tok = gpt2_tokenizer()
        cfg = HookedTransformerConfig(
            n_layers=3,
            d_model=64,
            d_head=16,
            n_heads=4,
            d_mlp=256,
            d_vocab=50257,
            n_ctx=2048,
            act_fn="gelu_new",
            normalization_type="LN",
            model_name="gpt2-shaped",
            original_architecture="GPT2LMHeadModel",
            seed=0,
        )
    else:
        from transformers import AutoTokenizer

        from atlas.models import converted_dir

        tok = AutoTokenizer.from_pretrained(str(converted_dir() / "tokenizer"))
        cfg = HookedTransformerConfig(
            n_layers=3,
            d_model=64,
            d_head=16,
            n_heads=4,
            n_key_value_heads=2,
            d_mlp=128,
            d_vocab=len(tok),
            n_ctx=2048,
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
    _norms_and_biases(model, 1)
    return model, _transcoders(model, d_sae, jumprelu=shape == "gemma", seed=2)


def run_variant(model, tset, overrides: dict, shape: str) -> dict:
    import duckdb

    from atlas.config import WeightLensConfig
    from ingest.weightlens import run_weightlens

    cfg = WeightLensConfig(**THRESHOLDS, **overrides)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.duckdb"
        t0 = time.perf_counter()
        run_weightlens(model, tset, path, cfg, model_id=shape)
        seconds = time.perf_counter() - t0
        with duckdb.connect(str(path), read_only=True) as con:
            rows = con.execute(
                "SELECT layer, n_features, n_described, n_validated, n_weightlens_explained "
                "FROM coverage_per_layer ORDER BY layer"
            ).fetchall()
            soft = con.execute("SELECT avg(validation_soft) FROM feature_weightlens").fetchone()[0]
            links = con.execute("SELECT count(*) FROM edges").fetchone()[0]
    n = sum(r[1] for r in rows)
    return dict(
        seconds=round(seconds, 1),
        described=sum(r[2] for r in rows) / n,
        validated=sum(r[3] for r in rows) / n,
        explained=sum(r[4] for r in rows) / n,
        mean_soft=soft,
        edges=links,
        per_layer={r[0]: dict(described=r[2], validated=r[3], explained=r[4]) for r in rows},
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="gpt2,gemma")
    ap.add_argument("--d-sae", type=int, default=256)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    out = {
        "machine": {
            "matmul_gflops_fp32": round(matmul_gflops(), 1),
            "load_average": os.getloadavg(),
            "cpus": os.cpu_count(),
        },
        "thresholds": THRESHOLDS,
        "d_sae": args.d_sae,
        "shapes": {},
    }
    print(f"machine: {out['machine']}  thresholds: {THRESHOLDS}  3 layers x {args.d_sae} features")
    for shape in args.shapes.split(","):
        model, tset = build(shape, args.d_sae)
        out["shapes"][shape] = {}
        print(f"\n{shape}-shaped        variant | described validated explained | mean soft | edges | s")
        for name, overrides in VARIANTS.items():
            r = run_variant(model, tset, overrides, shape)
            out["shapes"][shape][name] = r
            soft = "  NULL" if r["mean_soft"] is None else f"{r['mean_soft']:.3f}"
            print(
                f"{name:>54} | {r['described']:8.1%} {r['validated']:8.1%} {r['explained']:8.1%} | {soft:>9} "
                f"| {r['edges']:5d} | {r['seconds']}"
            )
    out["machine"]["load_average_end"] = os.getloadavg()
    print(f"\nload average at the end: {out['machine']['load_average_end']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
