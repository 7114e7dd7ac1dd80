"""Benchmark: activation collection and CircuitLens attribution against a plain forward pass.

One command prints every figure (and writes JSON with --json):
    PYTHONPATH=. python bench/bench_activations.py [--model random:gpt2-small] [--d-sae 6144]
        [--n-seq 32] [--seq-len 128] [--batch-size 8] [--n-examples 64] [--threads 2] [--attribution-only]

Figures, all on the same tokens and the same ``stop_at_layer`` (one past the last transcoder layer):
- reference: plain forward tokens/s, and the machine's measured fp32 matmul GFLOP/s;
- forward + encode only (the irreducible transcoder encoder matmuls, nothing kept);
- the whole `collect`: a bin-edge warm-up over the first sequences, then one pass (statistics,
  histograms, top-k, bin-weighted sampling, example windows);
- attribution examples/s (input side + 3 output positions, batched) with its completeness gap, the
  same examples three ways in the same run: plain (the old path), lean, lean batched by position;
- memory: peak RSS, and bytes of one batch's activations for one layer.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def random_transcoders(model, d_sae: int, seed: int = 0):
    """ReLU transcoders on every layer with ~1.5 % of features active per token (L0 ~ d_sae / 70)."""
    from tests.factories import RandomInit, random_transcoder_set

    init = RandomInit(W_enc=model.cfg.d_model**-0.5, b_enc=0.0, b_enc_shift=-2.2, W_dec=0.02, b_dec=0.0)
    tset = random_transcoder_set(model, d_sae, seed=seed, set_name="bench", init=init)
    for tc in tset:
        tc.sae.requires_grad_(False)
    return tset


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="random:gpt2-small")
    ap.add_argument("--d-sae", type=int, default=6144)
    ap.add_argument("--n-seq", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--n-examples", type=int, default=64)
    ap.add_argument("--warmup-seqs", type=int, default=None, help="bin-edge warm-up (default: n_seq / 10)")
    ap.add_argument("--per-bin-reservoir", type=int, default=100, help="sample candidates kept per (feature, bin)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--attribution-only", action="store_true", help="skip the forward / collect figures")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()

    import torch

    from atlas.config import ActivationsConfig
    from atlas.lens.activations import batches, collect, run_encoders
    from atlas.models import load_model

    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = load_model(a.model)
    tset = random_transcoders(model, a.d_sae)
    layers = tset.layer_ids
    tokens = torch.randint(0, model.cfg.d_vocab, (a.n_seq, a.seq_len))
    n_tok = tokens.numel()
    warm = a.warmup_seqs if a.warmup_seqs is not None else max(1, a.n_seq // 10)
    cfg = ActivationsConfig(
        batch_size=a.batch_size, seq_len=a.seq_len, bin_warmup_seqs=warm, per_bin_reservoir=a.per_bin_reservoir
    )
    out = {
        "model": a.model,
        "d_sae": a.d_sae,
        "n_layers": len(layers),
        "tokens": n_tok,
        "batch_size": a.batch_size,
        "threads": torch.get_num_threads(),
        "warmup_seqs": warm,
    }

    x = torch.randn(1024, 1024)
    t = timed(lambda: [x @ x for _ in range(10)], 3)
    out["matmul_gflops"] = 10 * 2 * 1024**3 / t / 1e9

    def forward():
        with torch.no_grad():
            for _, b in batches(tokens, a.batch_size):
                model(b, stop_at_layer=max(layers) + 1)

    def encode_only():
        for _, b in batches(tokens, a.batch_size):
            run_encoders(model, tset, b, layers, lambda l, acts: None)

    forward()  # warm-up
    if a.attribution_only:
        out["forward_s"] = timed(forward, 1)
        out["forward_tok_s"] = n_tok / out["forward_s"]
    else:
        collect_figures(out, forward, encode_only, lambda: collect(model, tset, tokens, cfg), n_tok, a)
    attribution_figures(out, model, tset, tokens, layers, a)
    report(out, a, n_tok, layers)


def collect_figures(out, forward, encode_only, run_collect, n_tok, a) -> None:
    out["forward_s"] = timed(forward, 2)
    out["forward_tok_s"] = n_tok / out["forward_s"]
    out["encode_s"] = timed(encode_only, 2)
    out["collect_s"] = timed(run_collect, 1)
    out["collect_tok_s"] = n_tok / out["collect_s"]
    out["ratio_collect_vs_forward"] = out["collect_s"] / out["forward_s"]
    out["ratio_collect_vs_forward_encode"] = out["collect_s"] / out["encode_s"]
    out["ratio_encode_vs_forward"] = out["encode_s"] / out["forward_s"]
    out["act_bytes_per_batch_layer"] = a.batch_size * a.seq_len * a.d_sae * 4


def attribution_figures(out, model, tset, tokens, layers, a) -> None:
    """The same examples three ways, in this run: plain attribution in the given order (the old
    path), lean attribution in the given order, lean attribution batched by target position (the
    ingest's path)."""
    import torch

    from atlas.lens.attribution import attribute, completeness_gap

    layer = max(layers)
    g = torch.Generator().manual_seed(1)
    docs = torch.randint(0, a.n_seq, (a.n_examples,), generator=g)
    pos = torch.randint(1, a.seq_len - 3, (a.n_examples,), generator=g)
    feat = torch.randint(0, a.d_sae, (a.n_examples,), generator=g)
    gaps = {}

    def attrib(lean: bool, by_pos: bool, name: str):
        order = torch.argsort(pos, stable=True) if by_pos else torch.arange(a.n_examples)
        gaps[name] = 0.0
        for s in range(0, a.n_examples, a.batch_size):
            take = order[s : s + a.batch_size]
            T = int(pos[take].max()) + 4
            att = attribute(model, tset, tokens[docs[take], :T], layer, feat[take], pos[take], n_output=3, lean=lean)
            gaps[name] = max(gaps[name], float((completeness_gap(att).abs() / (att.z.abs() + 1)).max()))

    for name, lean, by_pos in (("plain", False, False), ("lean", True, False), ("lean_by_pos", True, True)):
        out[f"attr_{name}_s"] = timed(lambda: attrib(lean, by_pos, name), 1)
        out[f"attr_{name}_examples_s"] = a.n_examples / out[f"attr_{name}_s"]
        out[f"attr_{name}_max_rel_completeness_gap"] = gaps[name]
        print(f"  ... {name}: {out[f'attr_{name}_examples_s']:.2f} examples/s", file=sys.stderr, flush=True)
    out["attr_s"], out["attr_examples_s"] = out["attr_lean_by_pos_s"], out["attr_lean_by_pos_examples_s"]
    out["attr_speedup"] = out["attr_plain_s"] / out["attr_lean_by_pos_s"]
    out["attr_layer"] = layer
    out["attr_max_rel_completeness_gap"] = max(gaps.values())


def report(out, a, n_tok, layers) -> None:
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open("/proc/loadavg") as f:
        out["loadavg"] = f.read().split()[:3]

    print(
        f"machine: {out['threads']} torch threads, load average {' '.join(out['loadavg'])}, "
        f"fp32 matmul {out['matmul_gflops']:.1f} GFLOP/s (reference)"
    )
    print(
        f"model {a.model}, {len(layers)} transcoder layers x {a.d_sae} features, {n_tok:,} tokens, batch {a.batch_size}"
    )
    print(f"plain forward (stop_at_layer={max(layers) + 1}):  {out['forward_tok_s']:10,.0f} tokens/s (reference)")
    if "collect_s" in out:
        collect_lines(out)
    layer = out["attr_layer"]
    for name, what in (
        ("plain", "plain, given order (old)"),
        ("lean", "lean, given order"),
        ("lean_by_pos", "lean, batched by position"),
    ):
        print(
            f"attribution (layer {layer}, 3 outputs, {what}): {out[f'attr_{name}_examples_s']:8,.2f} examples/s, "
            f"max relative completeness gap {out[f'attr_{name}_max_rel_completeness_gap']:.1e}"
        )
    print(f"attribution speed-up (lean by position / plain): {out['attr_speedup']:.2f}x")
    print(f"memory: peak RSS {out['peak_rss_mb']:.0f} MiB")
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


def collect_lines(out) -> None:
    n_tok = out["tokens"]
    print(
        f"forward + encode (nothing kept):   {n_tok / out['encode_s']:10,.0f} tokens/s  = "
        f"{out['ratio_encode_vs_forward']:.2f}x forward time (the transcoders' own cost)"
    )
    print(
        f"collect (warm-up {out['warmup_seqs']} seqs + 1 pass): {out['collect_tok_s']:10,.0f} tokens/s  = "
        f"{out['ratio_collect_vs_forward']:.2f}x forward time, "
        f"{out['ratio_collect_vs_forward_encode']:.2f}x forward+encode"
    )
    print(f"memory: one layer's activations per batch {out['act_bytes_per_batch_layer'] / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
