"""Benchmark: harvesting MLP activations of every layer in one forward, and the batched transcoder trainer
against the single-layer trainer on the same data, next to a matmul reference measured in the same run.

    PYTHONPATH=. python bench/bench_train.py [--model default] [--layers all] [--harvest-tokens 8192]
        [--train-tokens 4096] [--width 2048] [--bf16] [--json out.json]

Figures:
- reference: fp32 (and bf16) GFLOP/s of a 2048^3 matmul;
- harvest: tokens/s of ``atlas.train.collect`` for the requested layers (one forward per batch with
  stop_at_layer = deepest + 1; no unembedding), and the same for the first layer alone (the cost of depth);
- training: tokens/s per layer of ``atlas.train_batched.train_layers`` over all requested layers, and of
  ``atlas.train.train_layer`` on each layer one after another (the same activations, seed and steps);
  tokens/s per layer = train tokens x epochs x layers / seconds.
The default build's training stage is then about (n_tokens x epochs x n_layers) / (tokens/s per layer).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def matmul_gflops(dtype_name: str = "float32", n: int = 2048, seconds: float = 1.5) -> float:
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--layers", default="all")
    p.add_argument("--harvest-tokens", type=int, default=8192)
    p.add_argument("--train-tokens", type=int, default=4096)
    p.add_argument("--width", type=int, default=2048)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--skip-single", action="store_true", help="do not time the single-layer trainer")
    p.add_argument("--json")
    a = p.parse_args()

    import torch

    from atlas.config import CorpusConfig, TrainConfig
    from atlas.corpus import Corpus
    from atlas.models import load_model
    from atlas.train import collect, train_layer
    from atlas.train_batched import train_layers
    from cli.common import parse_layers

    out: dict = {
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_avg_1min_start": os.getloadavg()[0],
        "matmul_gflops_fp32": matmul_gflops("float32"),
        "matmul_gflops_bf16": matmul_gflops("bfloat16"),
    }
    model = load_model(a.model)
    layers = list(range(model.cfg.n_layers)) if a.layers == "all" else parse_layers(a.layers)
    cfg = TrainConfig(
        model=a.model, layers=tuple(layers), d_sae=a.width, n_tokens=a.train_tokens, epochs=a.epochs, bf16=a.bf16
    )
    corpus = Corpus.for_model(model, CorpusConfig())

    # 1. harvest: all layers in one forward, then the shallowest alone
    collect(model, corpus.batches("train", cfg.collect_batch, 512), layers[:1], 512, "warm-up")  # tokenizer, caches
    t0 = time.perf_counter()
    acts = collect(
        model, corpus.batches("train", cfg.collect_batch, a.harvest_tokens), layers, a.harvest_tokens, "harvest"
    )
    out["harvest_tokens_per_s_all"] = a.harvest_tokens / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    collect(
        model, corpus.batches("train", cfg.collect_batch, a.harvest_tokens), layers[:1], a.harvest_tokens, "harvest1"
    )
    out["harvest_tokens_per_s_first_layer"] = a.harvest_tokens / (time.perf_counter() - t0)

    # 2. training on the same activations
    n = min(a.train_tokens, acts[layers[0]][0].shape[0])
    data = {l: (acts[l][0][:n], acts[l][1][:n]) for l in layers}
    work = n * cfg.epochs * len(layers)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train_layers(replace(cfg, n_tokens=n), data, Path(tmp) / "b.pt", "batched")
        out["batched_tokens_per_s_per_layer"] = work / (time.perf_counter() - t0)
        if not a.skip_single:
            t0 = time.perf_counter()
            for l in layers:
                train_layer(replace(cfg, n_tokens=n), *data[l], Path(tmp) / f"s{l}.pt", f"single {l}")
            out["single_tokens_per_s_per_layer"] = work / (time.perf_counter() - t0)
    out.update(
        {
            "layers": layers,
            "width": a.width,
            "train_tokens": n,
            "epochs": cfg.epochs,
            "bf16": a.bf16,
            "batch_size": cfg.batch_size,
            "load_avg_1min_end": os.getloadavg()[0],
        }
    )
    print(json.dumps(out, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
