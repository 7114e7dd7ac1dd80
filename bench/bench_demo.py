"""Benchmark: the demo build (`atlas demo --no-serve`) step by step, next to this machine's matmul peak.

    python -m bench.bench_demo [--fresh] [--layers 3,9 | all] [--tokens 65536] [--width 2048] [--json out.json]

--fresh deletes the demo atlas and the trained transcoders of this configuration first (the model
and corpus stay cached: `atlas assets` is measured by deleting .cache/atlas and running it).
Prints every step's seconds, the per-layer metrics, the activation-collection and training rates,
and the reference: float32 GFLOP/s of a 2048^3 matmul measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time


def matmul_gflops(n: int = 2048, seconds: float = 2.0) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--layers")
    parser.add_argument("--tokens", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--bf16", action="store_true", help="train under bf16 autocast (TrainConfig.bf16)")
    parser.add_argument("--json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")  # the build's progress

    from atlas.config import CorpusConfig, DemoConfig, TrainConfig
    from ingest import demo
    from ingest.transcoders import default_out_dir

    overrides = {}
    if args.layers:
        overrides["layers"] = () if args.layers == "all" else tuple(int(l) for l in args.layers.split(","))
    if args.tokens:
        overrides["n_tokens"] = args.tokens
    if args.width:
        overrides["d_sae"] = args.width
    if args.bf16:
        overrides["bf16"] = True
    train, corpus, cfg = TrainConfig(**overrides), CorpusConfig(), DemoConfig(serve=False)
    if args.fresh:
        shutil.rmtree(default_out_dir("gemma-3-270m", train, corpus), ignore_errors=True)
        shutil.rmtree(demo.data_dir(cfg), ignore_errors=True)
    peak = matmul_gflops()
    t0 = time.monotonic()
    ctx = demo.build(cfg, train, corpus)
    total = time.monotonic() - t0
    _, metrics = __import__("ingest.transcoders", fromlist=["run"]).run(
        train, corpus, model_id=cfg.model_id, model=ctx.model
    )
    result = {
        "reference_matmul_gflops": peak,
        "cpus": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0],
        "total_s": total,
        "steps_s": ctx.timings,
        "config": {
            "layers": train.layers,
            "d_sae": train.d_sae,
            "k": train.k,
            "n_tokens": train.n_tokens,
            "epochs": train.epochs,
        },
        "layers": {
            l: {
                k: m[k]
                for k in (
                    "fve",
                    "l0",
                    "dead_share",
                    "loss_clean",
                    "loss_patched",
                    "loss_increase",
                    "loss_zero_ablation",
                    "loss_recovered",
                )
            }
            | {"train_s": m["training"]["train_seconds"], "steps": m["training"]["steps"]}
            for l, m in metrics.items()
        },
    }
    print(f"reference: float32 matmul {peak:,.1f} GFLOP/s on {os.cpu_count()} cores (load {os.getloadavg()[0]:.1f})")
    print(f"demo build: {total:,.1f} s  ({', '.join(f'{k} {v:,.1f} s' for k, v in ctx.timings.items())})")
    for l, m in result["layers"].items():
        print(
            f"layer {l}: fve {m['fve']:.3f}  L0 {m['l0']:.1f}  dead {m['dead_share']:.1%}  "
            f"loss {m['loss_clean']:.3f} -> {m['loss_patched']:.3f} (+{m['loss_increase']:.3f}; zero-ablation "
            f"{m['loss_zero_ablation']:.3f}, recovered {m['loss_recovered']:.1%})  train {m['train_s']:.0f} s "
            f"/ {m['steps']} steps"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)


if __name__ == "__main__":
    main()
