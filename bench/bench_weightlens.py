"""WeightLens at GPT-2-small scale: stage times, GFLOP/s against a matmul peak measured in the same run,
database load rate, the per-feature speed-up over a one-feature-at-a-time reference, peak memory.

    PYTHONPATH=. python bench/bench_weightlens.py                 # full: 12 layers x 24,576 features
    PYTHONPATH=. python bench/bench_weightlens.py --quick         # 3 layers x 2,048 features
    PYTHONPATH=. python bench/bench_weightlens.py --layers 4 --d-sae 4096 --json out.json

The model is GPT-2 small's exact shape (d 768, the real 50,257-token vocabulary) with random weights;
transcoders are random (cost depends on shapes only). Every figure is printed next to the peak.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def matmul_peak(dtype, device, n=4, m=2048, d=768, v=50257) -> float:
    """Best GFLOP/s of [m, d] @ [d, v] (the shape of a lens block) over n tries."""
    import torch

    a = torch.randn(m, d, device=device).to(dtype)
    b = torch.randn(d, v, device=device).to(dtype)
    best = 0.0
    for _ in range(n):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = max(best, 2 * m * d * v / (time.perf_counter() - t) / 1e9)
    return best


def _sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def build(layers: int, d_sae: int, device: str):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from atlas.models import RANDOM_CONFIGS, gpt2_tokenizer
    from tests.factories import RandomInit, random_transcoder_set

    cfg = HookedTransformerConfig(**{**RANDOM_CONFIGS["gpt2-small"], "n_layers": layers}, device=device, seed=0)
    model = HookedTransformer(cfg, tokenizer=gpt2_tokenizer()).eval()
    init = RandomInit.fan_in(cfg.d_model, b_enc_shift=-0.3)
    return model, random_transcoder_set(model, d_sae, set_name="bench", init=init, device=device)


def naive_per_feature(model, tset, layer: int, feats: list[int], cfg) -> tuple[float, float]:
    """The reference's way: per feature, matrix-vector products, per-feature top-k, and one forward pass
    per candidate token. Returns (seconds per feature, of which in forward passes)."""
    import torch

    from atlas.models import bos_token_id

    bos, W_E, W_U = bos_token_id(model), model.W_E.detach(), model.W_U.detach()
    tc = tset[layer]
    t = time.perf_counter()
    forward = 0.0
    with torch.inference_mode():
        for f in feats:
            enc, dec = tc.W_enc[:, f], tc.W_dec[f]
            s = W_E @ enc  # [V]
            v, i = torch.topk(s, cfg.input_pool)
            cands = i[(v - v.mean()) / v.std() > cfg.input_z]
            t_fwd = time.perf_counter()
            for tok in cands.tolist():  # isolation check, one run each
                _, cache = model.run_with_cache(
                    torch.tensor([[bos, tok]]), names_filter=tc.hook_in, stop_at_layer=layer + 1
                )
                bool(tc.encode(cache[tc.hook_in][0, 1])[f] > 0)
            forward += time.perf_counter() - t_fwd
            u = dec @ W_U  # [V]
            for side in (u, -u):
                v, i = torch.topk(side, cfg.output_pool)
                i[(v - v.mean()) / v.std() > cfg.output_z]
            cs = [tset[l].W_dec @ enc for l in tset.layer_ids if l < layer]  # [F_up] per layer
            if cs:
                c = torch.cat(cs)
                v, i = torch.topk(c, cfg.edge_pool)
                i[((v - v.mean()) / v.std() > cfg.edge_z) & (v > 0)]
    return (time.perf_counter() - t) / len(feats), forward / len(feats)


def db_load_rate(path: Path, n_rows: int) -> float:
    """Edge rows per second through AtlasWriter.write_unit (delete + insert + mark done, one transaction)."""
    import numpy as np
    import pyarrow as pa

    from atlas.db import AtlasWriter
    from atlas.ids import fid_range

    rng = np.random.default_rng(0)
    table = pa.table(
        {
            "src_fid": rng.integers(*fid_range(1), n_rows),
            "dst_fid": rng.integers(*fid_range(2), n_rows),
            "kind": pa.array(["virtual"] * n_rows),
            "variant": pa.array(["raw"] * n_rows),
            "weight": rng.random(n_rows),
            "rel_contribution": rng.random(n_rows) * 1e-3,
        }
    )
    with AtlasWriter(path) as w:
        run = w.start_run("bench", None, {})
        t = time.perf_counter()
        w.write_unit(
            job="bench",
            scope="bench",
            unit="edges",
            chash="x",
            run_id=run,
            deletes=[("DELETE FROM edges WHERE kind = 'virtual' AND variant = 'raw'", {})],
            inserts={"edges": table},
        )
        return n_rows / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--d-sae", type=int, default=24576)
    p.add_argument("--sample-features", type=int, default=16, help="features timed with the per-feature reference")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--feature-block", type=int, default=1024)
    p.add_argument("--db-rows", type=int, default=2_000_000, help="synthetic edge rows for the load-rate figure")
    p.add_argument("--quick", action="store_true", help="3 layers x 2,048 features, 4 sampled features")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    if args.quick:
        args.layers, args.d_sae, args.sample_features, args.db_rows = 3, 2048, 4, 1_000_000

    import torch

    from atlas.config import WeightLensConfig
    from atlas.lens.weightlens import DTYPES
    from ingest.weightlens import run_weightlens

    load_before = os.getloadavg()
    out: dict = {
        "layers": args.layers,
        "d_sae": args.d_sae,
        "d_model": 768,
        "d_vocab": 50257,
        "dtype": args.dtype,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
    }
    peak = matmul_peak(DTYPES[args.dtype], args.device)
    out["matmul_peak_gflops"] = peak
    print(f"matmul peak ({args.dtype}, [2048x768]@[768x50257], {args.device}): {peak:,.1f} GFLOP/s")
    model, tset = build(args.layers, args.d_sae, args.device)
    cfg = WeightLensConfig(dtype=args.dtype, device=args.device, feature_block=args.feature_block)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        report = run_weightlens(model, tset, Path(tmp) / "bench.duckdb", cfg, model_id="gpt2-small-random")
        out["total_s"] = time.perf_counter() - t
        out["db_load_rows_per_s_synthetic"] = db_load_rate(Path(tmp) / "load.duckdb", args.db_rows)
    V, d, F, L = 50257, 768, args.d_sae, args.layers
    pairs = L * (L - 1) // 2
    flops = {
        "input_projections": 2 * V * d * F * L,
        "output_projections": 2 * V * d * F * L,
        "virtual_weights": 2 * F * d * F * pairs,
    }
    sec = report.seconds
    print(f"\n{'stage':<22}{'seconds':>10}{'TFLOP':>9}{'GFLOP/s':>10}{'% of peak':>11}")
    stages = {}
    for stage in (
        "input_projections",
        "output_projections",
        "virtual_weights",
        "validation",
        "postprocess",
        "arrow_tables",
        "db_load",
    ):
        s, fl = sec.get(stage, 0.0), flops.get(stage)
        row = {"seconds": s}
        if fl:
            row.update(tflop=fl / 1e12, gflops=fl / s / 1e9, pct_peak=100 * fl / s / 1e9 / peak)
            print(f"{stage:<22}{s:>10.2f}{fl / 1e12:>9.2f}{fl / s / 1e9:>10.1f}{row['pct_peak']:>10.1f}%")
        else:
            print(f"{stage:<22}{s:>10.2f}")
        stages[stage] = row
    mm_s, mm_f = sum(sec[k] for k in flops), sum(flops.values())
    out["matmul_stages"] = {
        "seconds": mm_s,
        "tflop": mm_f / 1e12,
        "gflops": mm_f / mm_s / 1e9,
        "pct_peak": 100 * mm_f / mm_s / 1e9 / peak,
        "virtual_weight_layer_pairs": pairs,
    }
    print(
        f"{'matmul stages, e2e':<22}{mm_s:>10.2f}{mm_f / 1e12:>9.2f}{mm_f / mm_s / 1e9:>10.1f}"
        f"{out['matmul_stages']['pct_peak']:>10.1f}%"
    )
    rows = report.rows
    out["rows"] = rows
    out["db_load_rows_per_s"] = sum(rows.values()) / sec["db_load"]
    print(
        f"\ndatabase load: {sum(rows.values()):,} rows ({rows.get('edges', 0):,} edges) in {sec['db_load']:.2f} s "
        f"= {out['db_load_rows_per_s']:,.0f} rows/s; synthetic {args.db_rows:,} edge rows: "
        f"{out['db_load_rows_per_s_synthetic']:,.0f} rows/s"
    )
    # per-feature: the last layer (most upstream layers) in the blocked job vs the reference
    last = L - 1
    ls = report.layer_seconds[last]
    blocked = sum(ls.values()) / F
    blocked_mm = sum(ls[k] for k in flops) / F
    feats = torch.randperm(F, generator=torch.Generator().manual_seed(0))[: args.sample_features].tolist()
    naive, naive_fwd = naive_per_feature(model, tset, last, feats, cfg)
    naive_mm = naive - naive_fwd
    out["per_feature"] = {
        "layer": last,
        "blocked_ms": blocked * 1e3,
        "reference_ms": naive * 1e3,
        "speedup": naive / blocked,
        "sample": len(feats),
        "blocked_matrix_ms": blocked_mm * 1e3,
        "reference_matrix_ms": naive_mm * 1e3,
        "matrix_speedup": naive_mm / blocked_mm,
    }
    print(
        f"per feature, layer {last} ({len(feats)} sampled for the reference): all steps: blocked "
        f"{blocked * 1e3:.3f} ms vs one-at-a-time {naive * 1e3:.2f} ms -> {naive / blocked:,.1f}x; "
        f"weight products and selection only (no forward passes): {blocked_mm * 1e3:.3f} ms vs "
        f"{naive_mm * 1e3:.2f} ms -> {naive_mm / blocked_mm:,.1f}x"
    )
    peak_end = matmul_peak(DTYPES[args.dtype], args.device)
    out["matmul_peak_gflops_end"] = peak_end
    print(
        f"matmul peak measured again at the end: {peak_end:,.1f} GFLOP/s (start {peak:,.1f}); the percentages "
        f"above use the start figure; against the higher of the two the matmul stages reach "
        f"{100 * mm_f / mm_s / 1e9 / max(peak, peak_end):.1f}%"
    )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out["peak_rss_gib"] = rss
    out["full_products_gib"] = {"V_x_F_fp32": V * F * 4 / 2**30, "F_x_F_fp32_all_pairs": F * F * 4 * pairs / 2**30}
    print(
        f"peak RSS {rss:.2f} GiB (one full V x F product would be {V * F * 4 / 2**30:.2f} GiB; all F x F "
        f"products {F * F * 4 * pairs / 2**30:.1f} GiB)"
    )
    out["coverage"] = report.coverage
    out["loadavg_before"], out["loadavg_after"] = load_before, os.getloadavg()
    print(
        f"load average before {load_before[0]:.2f}, after {out['loadavg_after'][0]:.2f} on {os.cpu_count()} CPUs; "
        f"total {out['total_s']:.1f} s"
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
