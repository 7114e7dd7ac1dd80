"""Peak memory of a cross-layer transcoder used layer by layer, at GPT-2 small's shape (12 layers,
d 768; width --d-sae, default 4096 so the files stay ~1 GB and the run short).

    PYTHONPATH=. python bench/bench_clt_memory.py [--d-sae 4096] [--layers 12] [--tokens 64] [--keep DIR]

It writes a random CLT in circuit-tracer's layout (W_enc_{l} / W_dec_{l} safetensors) to a
temporary directory, then reports the peak resident set size (VmHWM, reset before each phase
through /proc/self/clear_refs) of each phase above the process's RSS before it:

1. load: ``load_transcoders('circuit-tracer-clt:DIR')`` (headers, biases, thresholds);
2. virtual weights into the last layer: for each earlier layer l', sum_{k in [l', L)} W_dec[l' -> k]
   (``upstream_decoders``) and its product with the last layer's encoder, as WeightLens does;
3. reconstruction of every output layer on ``--tokens`` tokens of random:gpt2-small
   (``atlas.inspect.measure_quality``; the model's own memory is in the baseline);
4. the reference, measured in the same run: ``safetensors.torch.load_file`` of every decoder file
   at once, read through, i.e. what loading the decoders eagerly would hold.
Figures are printed with the machine's load average. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS since the last reset) in MiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        k, _, v = line.partition(":")
        fields[k] = v.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def phase(name: str, fn, rows: list):
    import gc

    gc.collect()
    _reset_peak()
    before, _ = _rss_mb()
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    _, peak = _rss_mb()
    rows.append((name, peak - before, seconds))
    print(f"{name:<46} peak +{peak - before:8.1f} MiB   {seconds:7.2f} s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--d-model", type=int, default=768)
    ap.add_argument("--d-sae", type=int, default=4096)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--keep", type=Path, default=None, help="write the CLT here and keep it")
    args = ap.parse_args()

    import torch

    from atlas.transcoders import load_transcoders
    from atlas.transcoders.clt import write_clt

    n, d, f = args.layers, args.d_model, args.d_sae
    root = args.keep or Path(tempfile.mkdtemp(prefix="atlas-clt-bench-"))
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for l in range(n):  # one layer at a time, so writing does not hold the whole CLT either
        write_clt(
            "circuit-tracer-clt",
            root,
            {
                l: {
                    "W_enc": torch.randn(f, d, generator=gen) * 0.03,
                    "b_enc": torch.randn(f, generator=gen) * 0.1 - 0.2,
                    "b_dec": torch.zeros(d),
                    "W_dec": torch.randn(f, n - l, d, generator=gen) * 0.01,
                }
            },
        )
    dec_bytes = sum((root / f"W_dec_{l}.safetensors").stat().st_size for l in range(n))
    enc_bytes = sum((root / f"W_enc_{l}.safetensors").stat().st_size for l in range(n))
    print(
        f"CLT {n} layers x d {d} x F {f}: decoders {dec_bytes / 2**20:.0f} MiB in {n * (n + 1) // 2} slices, "
        f"encoders {enc_bytes / 2**20:.0f} MiB; written in {time.perf_counter() - t0:.1f} s to {root}"
    )
    print(
        f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}, "
        f"{os.cpu_count()} cpus; process RSS before the phases {_rss_mb()[0]:.0f} MiB"
    )
    rows: list = []
    clt = phase("1. load (headers, biases)", lambda: load_transcoders(f"circuit-tracer-clt:{root}"), rows)

    def virtual():
        W_enc = clt.W_enc(n - 1)  # [d, F]
        total = 0.0
        for _src, D in clt.upstream_decoders(n - 1, range(n - 1)).items():
            total += float((D @ W_enc).abs().sum())  # [F, F], dropped each step
        return total

    with torch.no_grad():
        phase(f"2. virtual weights into layer {n - 1} (all l' < {n - 1})", virtual, rows)
    if n == 12 and d == 768:
        from atlas.inspect import measure_quality
        from atlas.models import load_model

        model = load_model("random:gpt2-small")
        clt.check_against(model)
        tokens = torch.randint(0, 50000, (1, args.tokens), generator=gen)
        phase(
            f"3. reconstruct every output layer ({args.tokens} tokens)",
            lambda: measure_quality(model, clt, token_batches=[tokens]),
            rows,
        )
        del model
    from safetensors.torch import load_file

    def eager():  # every decoder held at once, and read (touched), as an eager loader would
        held = [load_file(root / f"W_dec_{l}.safetensors") for l in range(n)]
        return held, sum(float(t.sum()) for h in held for t in h.values())

    phase("4. reference: every decoder loaded at once", eager, rows)
    if args.keep is None:
        import shutil

        shutil.rmtree(root)


if __name__ == "__main__":
    main()
