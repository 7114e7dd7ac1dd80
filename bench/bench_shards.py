"""Benchmark: the shard runner with the local executor against Ray with 1 and 2 workers, and merging.

One command prints every figure (and writes JSON with --json):
    PYTHONPATH=. python bench/bench_shards.py [--model random:tiny] [--d-sae 512] [--n-seq 48]
        [--seq-len 24] [--features-per-unit 32] [--threads 1]

In one run, on one model, transcoder set and corpus:
1. reference: the machine's fp32 matmul GFLOP/s and the load average;
2. for each executor (local; Ray with 1 worker; Ray with 2 workers, on a local 2-CPU Ray started
   here on loopback): WeightLens, then activations, then CircuitLens into a fresh atlas; per job
   shards/s and rows/s over the job's wall time (Ray's include starting the actors, which load
   the model once each);
3. merge: the same jobs into another fresh atlas from the finished shards (nothing computed), rows/s
   of the load alone;
4. per-feature costs (WeightLens seconds per feature, CircuitLens seconds per attributed example)
   for docs/scale.md's cost model.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="random:tiny")
    ap.add_argument("--d-sae", type=int, default=512)
    ap.add_argument("--n-seq", type=int, default=48)
    ap.add_argument("--seq-len", type=int, default=24)
    ap.add_argument("--features-per-unit", type=int, default=32)
    ap.add_argument("--max-features", type=int, default=96, help="CircuitLens features per layer")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process (each Ray worker too)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    os.environ["PYTHONPATH"] = (
        str(Path(__file__).resolve().parent.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")
    )

    import torch

    from atlas import db
    from atlas.config import ActivationsConfig, CircuitLensConfig, WeightLensConfig
    from atlas.models import load_model
    from bench.bench_activations import random_transcoders, timed
    from ingest import activations, circuitlens
    from ingest.shards import ExecutorConfig
    from ingest.weightlens import run_weightlens

    torch.set_num_threads(a.threads)
    model = load_model(a.model)
    tset = random_transcoders(model, a.d_sae)
    tokens = torch.randint(0, model.cfg.d_vocab, (a.n_seq, a.seq_len), generator=torch.Generator().manual_seed(0))
    wcfg = WeightLensConfig(input_z=3.0, output_z=3.5, edge_z=3.0)
    acfg = ActivationsConfig(batch_size=16, n_samples=12, n_top=4, seq_len=a.seq_len)
    ccfg = CircuitLensConfig(
        batch_size=16,
        min_samples=3,
        min_examples=4,
        features_per_unit=a.features_per_unit,
        max_features_per_layer=a.max_features,
    )
    x = torch.randn(1024, 1024)
    out = {
        "model": a.model,
        "d_sae": a.d_sae,
        "layers": len(tset),
        "tokens": tokens.numel(),
        "threads": a.threads,
        "matmul_gflops": 10 * 2 * 1024**3 / timed(lambda: [x @ x for _ in range(10)], 3) / 1e9,
        "loadavg_start": open("/proc/loadavg").read().split()[:3],
        "runs": {},
    }

    def jobs(path, ex, shards_root) -> dict:
        db.upgrade(path)
        kw = dict(model_id="bench", model_spec=a.model)
        figures = {}
        for name, fn in (
            ("weightlens", lambda e: run_weightlens(model, tset, path, wcfg, executor=e, **kw).run.summary()),
            ("activations", lambda e: activations.run(path, model, tset, tokens, acfg, executor=e, **kw)["shards"]),
            ("circuitlens", lambda e: circuitlens.run(path, model, tset, tokens, ccfg, executor=e, **kw)["shards"]),
        ):
            e = ExecutorConfig(kind=ex.kind, workers=ex.workers, shard_dir=str(shards_root / name), keep_shards=True)
            t0 = time.perf_counter()
            rep = fn(e)
            wall = time.perf_counter() - t0
            n = rep["computed"] + rep["reused"]
            load = rep["seconds"].get("load", 0.0)
            figures[name] = {
                "wall_s": wall,
                "shards": n,
                **rep,
                "shards_s": n / wall,
                "rows_s": rep["rows"] / wall,
                "merge_rows_s": rep["rows"] / max(load, 1e-9),
            }
        return figures

    import duckdb
    import ray

    ray.init(
        num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            for label, ex in (
                ("local", ExecutorConfig()),
                ("ray-1", ExecutorConfig(kind="ray", workers=1)),
                ("ray-2", ExecutorConfig(kind="ray", workers=2)),
            ):
                out["runs"][label] = jobs(tmp / f"{label}.duckdb", ex, tmp / f"shards-{label}")
                print(
                    f"{label}: "
                    + ", ".join(
                        f"{j} {f['shards']} shards in {f['wall_s']:.1f} s" for j, f in out["runs"][label].items()
                    ),
                    flush=True,
                )
            out["runs"]["merge"] = jobs(tmp / "merge.duckdb", ExecutorConfig(), tmp / "shards-local")  # load only
            with duckdb.connect(str(tmp / "local.duckdb"), read_only=True) as con:
                out["circuitlens_examples"] = con.execute(
                    "SELECT count(DISTINCT example_id) FROM attributions"
                ).fetchone()[0]
                out["circuitlens_features"] = con.execute("SELECT count(DISTINCT fid) FROM attributions").fetchone()[0]
    finally:
        ray.shutdown()
    loc = out["runs"]["local"]
    n_feat = sum(tc.d_sae for tc in tset)
    out["weightlens_s_per_feature"] = loc["weightlens"]["seconds"]["compute"] / n_feat
    out["circuitlens_s_per_example"] = loc["circuitlens"]["seconds"]["compute"] / max(out["circuitlens_examples"], 1)
    out["loadavg_end"] = open("/proc/loadavg").read().split()[:3]

    print(
        f"machine: {a.threads} torch thread(s) per process, fp32 matmul {out['matmul_gflops']:.1f} GFLOP/s "
        f"(reference), load average {' '.join(out['loadavg_start'])} -> {' '.join(out['loadavg_end'])}"
    )
    print(f"model {a.model}, {len(tset)} layers x {a.d_sae} features, {tokens.numel():,} tokens")
    print(f"{'job':<12} {'executor':<8} {'shards':>6} {'wall s':>8} {'shards/s':>9} {'rows/s':>10} {'vs local':>9}")
    for job in ("weightlens", "activations", "circuitlens"):
        for label in ("local", "ray-1", "ray-2"):
            f = out["runs"][label][job]
            ratio = f["wall_s"] / loc[job]["wall_s"]
            print(
                f"{job:<12} {label:<8} {f['shards']:>6} {f['wall_s']:>8.2f} "
                f"{f['shards_s']:>9.2f} {f['rows_s']:>10,.0f} "
                f"{ratio:>8.2f}x"
            )
        m = out["runs"]["merge"][job]
        print(
            f"{job:<12} {'merge':<8} {m['shards']:>6} {m['wall_s']:>8.2f}  load only: {m['merge_rows_s']:,.0f} rows/s"
        )
    print(
        f"per-feature costs (local, compute only): WeightLens {out['weightlens_s_per_feature'] * 1e3:.2f} ms/feature; "
        f"CircuitLens {out['circuitlens_s_per_example'] * 1e3:.1f} ms/example "
        f"({out['circuitlens_examples']} examples of {out['circuitlens_features']} features)"
    )
    if a.json:
        a.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
