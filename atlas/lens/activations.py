"""Streaming activation statistics and examples of transcoder features over a corpus (docs/method.md §3, §4.1).

Algorithm (tokens are fixed-length sequences ``[n_docs, seq]``, read in batches):
1. Forward: hooks on every needed transcoder's ``hook_in`` encode the batch there
   (``[batch, pos, d_sae]``, one layer at a time); ``stop_at_layer`` is one past the last needed
   layer, so later blocks and the unembedding are never computed.
2. Bin edges per feature (docs/method.md §4.1: 20 bins of non-zero activations; equal width over
   (0, max] by default, or equal count) from a warm-up over the first ``bin_warmup_seqs``
   sequences; the top bin is open-ended. This keeps collection to one pass over the corpus.
3. The pass, per batch and layer, non-zero activations only: counts, sums, maxima and a
   log-spaced histogram per feature (``LayerStats``; quantiles read from the histogram by
   log-linear interpolation); top-k candidates (``sampling.TopStore``); each activation's bin,
   with exact bin counts and the candidates of the exact 1/n_b^0.9-weighted draw without
   replacement (``sampling.BinReservoir``, with its own generator per layer, ``layer_generator``);
   candidates carry their activation window, gathered
   while the batch is in memory; and, when given, the co-activation sums of the virtual-weight
   edges (``era.EraAccumulator``).
4. At the end: quantiles, the weighted draw, and the window token ids from the corpus.
Memory per batch: batch x seq x d_sae floats for one layer at a time (plus the ERA source
columns); nothing grows with the corpus except the bounded example stores.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from atlas.config import ActivationsConfig
from atlas.errors import AtlasError
from atlas.lens.sampling import BinReservoir, Candidates, TopStore

LayerFn = Callable[[int, torch.Tensor], None]  # (layer, acts [batch, pos, d_sae]) -> None


def layer_generator(seed: int, layer: int) -> torch.Generator:
    """The random generator of one layer's reservoir, seeded from (seed, layer) alone: a layer's
    draws do not depend on which other layers run with it, so a job resumed after an interruption
    (which runs only the layers not yet done) writes what an uninterrupted job writes."""
    import hashlib

    key = hashlib.sha256(f"activations/{int(seed)}/{int(layer)}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(key[:8], "little") >> 1)


def run_encoders(model, tset, tokens: torch.Tensor, layers: list[int], on_layer: LayerFn) -> None:
    """One forward pass of tokens [batch, pos], calling on_layer(layer, acts) at each layer's hook_in."""
    def hook_for(layer):
        tc = tset[layer]

        def hook(x, hook):  # x [batch, pos, d_in]
            on_layer(layer, tc.encode(x))
        return hook

    fwd_hooks = [(tset[l].hook_in, hook_for(l)) for l in layers]
    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=fwd_hooks, stop_at_layer=max(layers) + 1, return_type=None)


def batches(tokens: torch.Tensor, batch_size: int, docs: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(doc ids [b], tokens [b, pos]) for all documents, or for the given doc ids."""
    docs = torch.arange(tokens.shape[0]) if docs is None else docs
    for start in range(0, docs.numel(), batch_size):
        d = docs[start:start + batch_size]
        yield d, tokens[d]


def check_tokens(tokens, model) -> torch.Tensor:
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2:
        raise AtlasError(f"tokens must be a 2-d tensor [n_docs, seq], got {type(tokens).__name__} "
                         f"{tuple(getattr(tokens, 'shape', ()))}")
    if tokens.numel() == 0:
        raise AtlasError("the corpus is empty: no token sequences to run")
    if int(tokens.min()) < 0 or int(tokens.max()) >= model.cfg.d_vocab:
        raise AtlasError(f"token ids must lie in [0, {model.cfg.d_vocab}); got {int(tokens.min())}..{int(tokens.max())}")
    return tokens.long()


class LayerStats:
    """Per-feature running statistics of non-zero activations."""

    def __init__(self, d_sae: int, cfg: ActivationsConfig):
        self.cfg, self.d_sae = cfg, d_sae
        self.n_tokens = 0
        self.n_active = torch.zeros(d_sae, dtype=torch.long)
        self.sum = torch.zeros(d_sae, dtype=torch.float64)
        self.max = torch.zeros(d_sae)
        self.hist = torch.zeros(d_sae * cfg.hist_bins, dtype=torch.long)
        self.log_lo, self.log_hi = math.log(cfg.hist_min), math.log(cfg.hist_max)

    def hist_edges(self) -> torch.Tensor:  # [hist_bins + 1]
        return torch.exp(torch.linspace(self.log_lo, self.log_hi, self.cfg.hist_bins + 1, dtype=torch.float64))

    def update(self, n_tokens: int, feature: torch.Tensor, value: torch.Tensor) -> None:
        """feature, value [nnz]: the batch's non-zero activations."""
        self.n_tokens += n_tokens
        self.n_active += torch.bincount(feature, minlength=self.d_sae)
        self.sum.index_add_(0, feature, value.double())
        self.max.scatter_reduce_(0, feature, value.float(), reduce="amax")
        h = self.cfg.hist_bins
        b = ((value.double().log() - self.log_lo) / (self.log_hi - self.log_lo) * h).floor().long().clamp(0, h - 1)
        self.hist.index_add_(0, feature * h + b, torch.ones_like(b))

    def quantiles(self, levels) -> torch.Tensor:
        """[d_sae, n_levels] estimates from the histogram (log-linear inside a bin; NaN if never active)."""
        h, edges = self.cfg.hist_bins, self.hist_edges().log()
        hist = self.hist.view(self.d_sae, h).double()
        cum = hist.cumsum(1)                                                     # [d_sae, h]
        target = torch.tensor(levels, dtype=torch.float64)[None, :] * self.n_active[:, None].double()
        b = torch.searchsorted(cum, target.contiguous()).clamp(max=h - 1)       # [d_sae, n_levels]
        below = torch.where(b > 0, cum.gather(1, (b - 1).clamp(min=0)), torch.zeros_like(target))
        frac = ((target - below) / hist.gather(1, b).clamp(min=1)).clamp(0, 1)
        q = torch.exp(edges[b] + frac * (edges[b + 1] - edges[b]))
        q = torch.minimum(q, self.max[:, None].double())                           # never above the max
        return torch.where(self.n_active[:, None] > 0, q, torch.full_like(q, float("nan")))


@dataclass
class LayerResult:
    stats: LayerStats
    quantiles: torch.Tensor       # [d_sae, n_levels]
    top: Candidates               # top examples (bin = -1)
    samples: Candidates           # bin-weighted samples
    sample_weight: torch.Tensor   # [n_samples_total]
    windows: dict | None = None   # 'top'/'samples' -> (start [n], tokens [n, w], acts [n, w]);
                                  # column i is position pos - window_before + i (token -1 outside the sequence)
    n_inexact: int = 0            # features whose weighted draw may differ from the exact one (per_bin_reservoir)


def bin_edges(stats: LayerStats, cfg: ActivationsConfig) -> torch.Tensor:
    """[d_sae, n_bins + 1] bin edges of non-zero activations (docs/method.md §4.1)."""
    n = cfg.n_bins
    if cfg.bin_mode == "width":
        return stats.max[:, None].double() * torch.linspace(0, 1, n + 1, dtype=torch.float64)[None, :]
    if cfg.bin_mode == "quantile":
        inner = stats.quantiles([i / n for i in range(1, n)]).nan_to_num(0.0)
        return torch.cat([torch.zeros(stats.d_sae, 1, dtype=torch.float64), inner,
                          stats.max[:, None].double()], 1)
    raise AtlasError(f"bin_mode {cfg.bin_mode!r} is not 'width' or 'quantile'")


def _nonzero(acts: torch.Tensor, first: int):
    """acts [batch, pos, d_sae] -> (batch row, pos, feature, value) of non-zero entries at positions >= first."""
    a = acts[:, first:]
    b, p, f = a.nonzero(as_tuple=True)
    return b, p + first, f, a[b, p, f]


def _windows(acts: torch.Tensor, b, p, f, offsets: torch.Tensor) -> torch.Tensor:
    """[n, w] activations of feature f[i] at positions p[i] + offsets in row b[i] (0 outside the sequence)."""
    q = p[:, None] + offsets[None, :]
    valid = (q >= 0) & (q < acts.shape[1])
    return torch.where(valid, acts[b[:, None], q.clamp(0, acts.shape[1] - 1), f[:, None]], torch.zeros(()))


def warmup_edges(model, tset, tokens, layers, cfg: ActivationsConfig, first: int) -> dict[int, torch.Tensor]:
    """Bin edges per layer [d_sae, n_bins + 1] from the corpus's first ``bin_warmup_seqs`` sequences."""
    stats = {l: LayerStats(tset[l].d_sae, cfg) for l in layers}
    for _, batch in batches(tokens[: max(1, cfg.bin_warmup_seqs)], cfg.batch_size):
        def on_layer(layer, acts):
            _, _, f, v = _nonzero(acts, first)
            stats[layer].update(batch.shape[0] * (batch.shape[1] - first), f, v)
        run_encoders(model, tset, batch, layers, on_layer)
    return {l: bin_edges(stats[l], cfg) for l in layers}


def collect(model, tset, tokens: torch.Tensor, cfg: ActivationsConfig, layers: list[int] | None = None,
            era=None, progress: Callable[[str, int], object] | None = None) -> dict[int, LayerResult]:
    """Statistics, top and sampled examples with windows, per layer; updates ``era`` on the way."""
    tokens = check_tokens(tokens, model)
    layers = sorted(layers if layers is not None else tset.layer_ids)
    run_layers = sorted(set(layers) | (era.layers if era is not None else set()))
    first = 1 if cfg.skip_first else 0
    n_counted = tokens.shape[1] - first
    if n_counted <= 0:
        raise AtlasError(f"sequences of {tokens.shape[1]} tokens leave nothing to count")
    offsets = torch.arange(-cfg.window_before, cfg.window_after + 1)                 # [w]
    w = offsets.numel()
    step = progress or (lambda desc, total: _null_progress())
    edges = warmup_edges(model, tset, tokens, layers, cfg, first)
    stats = {l: LayerStats(tset[l].d_sae, cfg) for l in layers}
    tops = {l: TopStore(tset[l].d_sae, cfg.n_top, w) for l in layers}
    res = {l: BinReservoir(tset[l].d_sae, cfg.n_bins, cfg.n_samples, layer_generator(cfg.seed, l), w,
                           cfg.per_bin_reservoir) for l in layers}

    with step("activations", tokens.shape[0]) as bar:
        for docs, batch in batches(tokens, cfg.batch_size):
            def on_layer(layer, acts):                                                 # acts [b, pos, d_sae]
                if era is not None:
                    era.see(layer, acts[:, first:])
                if layer not in stats:
                    return
                b, p, f, v = _nonzero(acts, first)
                stats[layer].update(batch.shape[0] * n_counted, f, v)
                m = tops[layer].offer(f, v)
                tops[layer].add(Candidates(f[m], docs[b[m]], p[m], v[m], v[m].double(), torch.full_like(f[m], -1),
                                           _windows(acts, b[m], p[m], f[m], offsets)))
                e = edges[layer][f]                                                    # [nnz, n_bins + 1]
                bins = (v.double()[:, None] > e[:, 1:-1]).sum(1)                      # 0 .. n_bins - 1
                m, u = res[layer].offer(f, bins)
                res[layer].add(Candidates(f[m], docs[b[m]], p[m], v[m], u, bins[m], _windows(acts, b[m], p[m], f[m], offsets)))
            run_encoders(model, tset, batch, run_layers, on_layer)
            if era is not None:
                era.end_batch()
            bar.advance(batch.shape[0])

    out = {}
    for l in layers:
        samples, weight = res[l].draw(cfg.weight_exponent)
        top = tops[l].result
        windows = {name: _window_tokens(tokens, c, cfg, offsets) for name, c in (("top", top), ("samples", samples))}
        out[l] = LayerResult(stats[l], stats[l].quantiles(list(cfg.quantile_levels)), top, samples, weight, windows,
                             res[l].n_inexact)
    return out


def _window_tokens(tokens: torch.Tensor, c: Candidates, cfg: ActivationsConfig, offsets: torch.Tensor):
    """(start [n], token ids [n, w] (-1 outside the sequence), activations [n, w]) of examples c."""
    seq = tokens.shape[1]
    pos = c.pos[:, None] + offsets[None, :]
    valid = (pos >= 0) & (pos < seq)
    toks = torch.where(valid, tokens[c.doc[:, None], pos.clamp(0, seq - 1)], torch.full_like(pos, -1))
    return (c.pos - cfg.window_before).clamp(min=0), toks, c.win


class _null_progress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def advance(self, n=1):
        pass
