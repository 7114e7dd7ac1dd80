"""Transcoder loading speed, per format, at GPT-2 small's shape (d 768, F 24576) by default.

One command prints every figure (and writes JSON with --json):

    PYTHONPATH=. python bench/bench_transcoder_loading.py [--layers 2] [--d-model 768] [--d-sae 24576]

For each format it writes `--layers` layers of random weights to a temporary directory, then times
`load_transcoders` (best of `--repeats`, page cache warm) and reports MB of file per second next
to the machine's reference for the same bytes, measured in the same run: reading the files into a
preallocated buffer (`readinto`: one copy out of the page cache, what any non-mmap loader must do).
The gap is what parsing, the checks (shapes, NaN scan)
and the format's normalization (Dunefsky's fold: one [d]·[d, F] product) cost.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _tensors(fmt: str, d: int, f: int, gen):
    import torch

    t = {
        "W_enc": torch.randn(d, f, generator=gen) * 0.02,
        "b_enc": torch.randn(f, generator=gen) * 0.01,
        "W_dec": torch.randn(f, d, generator=gen) * 0.02,
        "b_dec": torch.randn(d, generator=gen) * 0.01,
    }
    if fmt == "gemmascope":
        t["threshold"] = torch.rand(f, generator=gen) * 0.1
    if fmt == "dunefsky":
        t["b_dec_out"] = torch.randn(d, generator=gen) * 0.01
    if fmt == "circuit-tracer":
        t["W_enc"] = t["W_enc"].T.contiguous()
    return t


def _read_into(path: Path, buf: memoryview) -> None:
    """The reference: one copy of the file from the page cache into a preallocated buffer."""
    with path.open("rb", buffering=0) as f:
        f.readinto(buf[: path.stat().st_size])


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2, help="layers per format (GPT-2 small has 12)")
    ap.add_argument("--d-model", type=int, default=768)
    ap.add_argument("--d-sae", type=int, default=24576)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--formats", default="saelens,dunefsky,gemmascope,circuit-tracer")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()

    import torch

    from atlas.transcoders import load_transcoders
    from atlas.transcoders.writers import write_layer

    torch.set_num_threads(max(1, torch.get_num_threads()))
    gen = torch.Generator().manual_seed(0)
    results = []
    print(
        f"transcoder loading: {args.layers} layer(s) of d {args.d_model} x F {args.d_sae} per format, "
        f"best of {args.repeats}, {torch.get_num_threads()} torch threads"
    )
    print(f"{'format':<16}{'MB':>9}{'load s':>9}{'MB/s':>9}{'raw read MB/s':>15}{'of raw':>9}")
    with tempfile.TemporaryDirectory(prefix="atlas-bench-tc-") as tmp:
        for fmt in args.formats.split(","):
            root = Path(tmp) / fmt
            for layer in range(args.layers):
                write_layer(fmt, root, layer, _tensors(fmt, args.d_model, args.d_sae, gen))
            files = [p for p in root.rglob("*") if p.is_file()]
            mb = sum(p.stat().st_size for p in files) / 1e6
            buf = memoryview(bytearray(max(p.stat().st_size for p in files)))
            raw_s = _best(lambda: [_read_into(p, buf) for p in files], args.repeats)
            load_s = _best(lambda: load_transcoders(f"{fmt}:{root}"), args.repeats)
            row = dict(
                format=fmt,
                layers=args.layers,
                d_model=args.d_model,
                d_sae=args.d_sae,
                mb=round(mb, 1),
                load_s=round(load_s, 4),
                mb_per_s=round(mb / load_s, 1),
                raw_read_mb_per_s=round(mb / raw_s, 1),
                fraction_of_raw=round(raw_s / load_s, 3),
            )
            results.append(row)
            print(
                f"{fmt:<16}{mb:>9.1f}{load_s:>9.3f}{row['mb_per_s']:>9.0f}{row['raw_read_mb_per_s']:>15.0f}"
                f"{row['fraction_of_raw']:>9.2f}"
            )
            for p in files:
                p.unlink()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
