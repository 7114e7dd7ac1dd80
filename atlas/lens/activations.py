"""Streaming activation statistics and examples of transcoder features over a corpus (docs/method.md §3, §4.1).

Algorithm (tokens are fixed-length sequences ``[n_docs, seq]``, read in batches):
1. Forward: hooks on every needed transcoder's ``hook_in`` encode the batch there
   (``[batch, pos, d_sae]``, one layer at a time); ``stop_at_layer`` is one past the last needed
   layer, so later blocks and the unembedding are never computed. One forward per batch serves
   every layer.
2. Bin edges per feature (docs/method.md §4.1: 20 bins of non-zero activations; equal width over
   (0, max] by default, or equal count) from a warm-up over the first ``bin_warmup_seqs``
   sequences (``warmup_stats``); the top bin is open-ended. This keeps collection to one pass
   over the corpus after the warm-up.
3. The pass over a block of sequences (``collect_block``; the whole corpus is one block), per
   batch and layer, non-zero activations only: counts, sums, maxima and a log-spaced histogram per
   feature (``LayerStats``; quantiles read from the histogram by log-linear interpolation); top-k
   candidates (``sampling.TopStore``); each activation's bin, with exact bin counts and the
   candidates of the exact 1/n_b^0.9-weighted draw without replacement (``sampling.BinReservoir``,
   keyed by ``exact.hashed_uniform`` of (seed, layer, feature, document, position)); candidates
   carry their activation window, gathered while the batch is in memory; and, when given, the
   co-activation sums of the virtual-weight edges (``era.EraAccumulator``).
4. Blocks merge exactly (``LayerPart.absorb``; sums as integer digits, ``exact.fixed_digits``;
   ties broken by place), so the result is the same whatever the blocks of whole batches are.
5. At the end (``finish``): quantiles, the weighted draw, and the window token ids from the corpus.
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
from atlas.lens.exact import fixed_digits, fixed_value, hashed_uniform, stream_key
from atlas.lens.sampling import BinReservoir, Candidates, TopStore

LayerFn = Callable[[int, torch.Tensor], None]  # (layer, acts [batch, pos, d_sae]) -> None


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


def batches(
    tokens: torch.Tensor, batch_size: int, docs: torch.Tensor | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(doc ids [b], tokens [b, pos]) for all documents, or for the given doc ids (a block's
    batches are the whole corpus's when the block starts at a multiple of batch_size)."""
    docs = torch.arange(tokens.shape[0]) if docs is None else docs
    for start in range(0, docs.numel(), batch_size):
        d = docs[start : start + batch_size]
        yield d, tokens[d]


def check_tokens(tokens, model) -> torch.Tensor:
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2:
        raise AtlasError(
            f"tokens must be a 2-d tensor [n_docs, seq], got {type(tokens).__name__} "
            f"{tuple(getattr(tokens, 'shape', ()))}"
        )
    if tokens.numel() == 0:
        raise AtlasError("the corpus is empty: no token sequences to run")
    if int(tokens.min()) < 0 or int(tokens.max()) >= model.cfg.d_vocab:
        raise AtlasError(
            f"token ids must lie in [0, {model.cfg.d_vocab}); got {int(tokens.min())}..{int(tokens.max())}"
        )
    return tokens.long()


class LayerStats:
    """Per-feature running statistics of non-zero activations."""

    def __init__(self, d_sae: int, cfg: ActivationsConfig):
        self.cfg, self.d_sae = cfg, d_sae
        self.n_tokens = 0
        self.n_active = torch.zeros(d_sae, dtype=torch.long)
        self.sum_digits = torch.zeros(3, d_sae, dtype=torch.long)  # [3, d_sae] exact.fixed_digits of the sums
        self.max = torch.zeros(d_sae)
        self.hist = torch.zeros(d_sae * cfg.hist_bins, dtype=torch.long)
        self.log_lo, self.log_hi = math.log(cfg.hist_min), math.log(cfg.hist_max)

    def hist_edges(self) -> torch.Tensor:  # [hist_bins + 1]
        return torch.exp(torch.linspace(self.log_lo, self.log_hi, self.cfg.hist_bins + 1, dtype=torch.float64))

    @property
    def sum(self) -> torch.Tensor:  # [d_sae] float64
        return fixed_value(self.sum_digits)

    def update(self, n_tokens: int, feature: torch.Tensor, value: torch.Tensor) -> None:
        """feature, value [nnz]: one batch's non-zero activations."""
        self.n_tokens += n_tokens
        self.n_active += torch.bincount(feature, minlength=self.d_sae)
        batch_sum = torch.zeros(self.d_sae, dtype=torch.float64).index_add_(0, feature, value.double())
        self.sum_digits += fixed_digits(batch_sum)
        self.max.scatter_reduce_(0, feature, value.float(), reduce="amax")
        h = self.cfg.hist_bins
        b = ((value.double().log() - self.log_lo) / (self.log_hi - self.log_lo) * h).floor().long().clamp(0, h - 1)
        self.hist.index_add_(0, feature * h + b, torch.ones_like(b))

    def absorb(self, other: LayerStats) -> None:
        """Add the statistics of another block of sequences (exact: integers and maxima)."""
        self.n_tokens += other.n_tokens
        self.n_active += other.n_active
        self.sum_digits += other.sum_digits
        self.max = torch.maximum(self.max, other.max)
        self.hist += other.hist

    def quantiles(self, levels) -> torch.Tensor:
        """[d_sae, n_levels] estimates from the histogram (log-linear inside a bin; NaN if never active)."""
        h, edges = self.cfg.hist_bins, self.hist_edges().log()
        hist = self.hist.view(self.d_sae, h).double()
        cum = hist.cumsum(1)  # [d_sae, h]
        target = torch.tensor(levels, dtype=torch.float64)[None, :] * self.n_active[:, None].double()
        b = torch.searchsorted(cum, target.contiguous()).clamp(max=h - 1)  # [d_sae, n_levels]
        below = torch.where(b > 0, cum.gather(1, (b - 1).clamp(min=0)), torch.zeros_like(target))
        frac = ((target - below) / hist.gather(1, b).clamp(min=1)).clamp(0, 1)
        q = torch.exp(edges[b] + frac * (edges[b + 1] - edges[b]))
        q = torch.minimum(q, self.max[:, None].double())  # never above the max
        return torch.where(self.n_active[:, None] > 0, q, torch.full_like(q, float("nan")))


@dataclass
class LayerResult:
    stats: LayerStats
    quantiles: torch.Tensor  # [d_sae, n_levels]
    top: Candidates  # top examples (bin = -1)
    samples: Candidates  # bin-weighted samples
    sample_weight: torch.Tensor  # [n_samples_total]
    windows: dict | None = None  # 'top'/'samples' -> (start [n], tokens [n, w], acts [n, w]);
    # column i is position pos - window_before + i (token -1 outside the sequence)
    n_inexact: int = 0  # features whose weighted draw may differ from the exact one (per_bin_reservoir)


def bin_edges(stats: LayerStats, cfg: ActivationsConfig) -> torch.Tensor:
    """[d_sae, n_bins + 1] bin edges of non-zero activations (docs/method.md §4.1)."""
    n = cfg.n_bins
    if cfg.bin_mode == "width":
        return stats.max[:, None].double() * torch.linspace(0, 1, n + 1, dtype=torch.float64)[None, :]
    if cfg.bin_mode == "quantile":
        inner = stats.quantiles([i / n for i in range(1, n)]).nan_to_num(0.0)
        return torch.cat([torch.zeros(stats.d_sae, 1, dtype=torch.float64), inner, stats.max[:, None].double()], 1)
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


def counted_from(cfg: ActivationsConfig, tokens: torch.Tensor) -> int:
    """The first counted position (position 0, the BOS sink, is skipped by default)."""
    first = 1 if cfg.skip_first else 0
    if tokens.shape[1] - first <= 0:
        raise AtlasError(f"sequences of {tokens.shape[1]} tokens leave nothing to count")
    return first


def warmup_stats(model, tset, tokens, layers, cfg: ActivationsConfig) -> dict[int, LayerStats]:
    """Statistics per layer of the corpus's first ``bin_warmup_seqs`` sequences (one forward per batch)."""
    first = counted_from(cfg, tokens)
    stats = {l: LayerStats(tset[l].d_sae, cfg) for l in layers}
    for _, batch in batches(tokens[: max(1, cfg.bin_warmup_seqs)], cfg.batch_size):

        def on_layer(layer, acts):
            _, _, f, v = _nonzero(acts, first)
            stats[layer].update(batch.shape[0] * (batch.shape[1] - first), f, v)

        run_encoders(model, tset, batch, layers, on_layer)
    return stats


@dataclass
class LayerPart:
    """One layer's mergeable state over a block of sequences (or several, once absorbed)."""

    stats: LayerStats
    top: TopStore  # top candidates, with windows
    res: BinReservoir  # bin counts and sample candidates, with windows

    def absorb(self, other: LayerPart) -> None:
        self.stats.absorb(other.stats)
        self.top.absorb(lambda c: c.feature, other.top.result)
        self.res.absorb_counts(other.res.counts, other.res.kept)


def new_part(d: int, cfg: ActivationsConfig) -> LayerPart:
    """An empty part of a layer of d features."""
    w = cfg.window_before + cfg.window_after + 1
    return LayerPart(
        LayerStats(d, cfg),
        TopStore(d, cfg.n_top, w),
        BinReservoir(d, cfg.n_bins, cfg.n_samples, None, w, cfg.per_bin_reservoir),
    )


def collect_block(
    model,
    tset,
    tokens: torch.Tensor,
    cfg: ActivationsConfig,
    edges: dict[int, torch.Tensor],
    docs: torch.Tensor,
    layers: list[int],
    era=None,
    step=None,
) -> dict[int, LayerPart]:
    """One forward per batch of the sequences ``docs`` for every layer: each layer's ``LayerPart``;
    updates ``era`` on the way. edges: bin edges per layer [d_sae, n_bins + 1] (``bin_edges``)."""
    first = counted_from(cfg, tokens)
    n_counted = tokens.shape[1] - first
    offsets = torch.arange(-cfg.window_before, cfg.window_after + 1)  # [w]
    run_layers = sorted(set(layers) | (era.layers if era is not None else set()))
    parts = {l: new_part(tset[l].d_sae, cfg) for l in layers}
    keys = {l: stream_key(cfg.seed, l) for l in layers}
    with (step or (lambda desc, total: _null_progress()))("activations", docs.numel()) as bar:
        for ids, batch in batches(tokens, cfg.batch_size, docs):

            def on_layer(layer, acts):  # acts [b, pos, d_sae]
                if era is not None:
                    era.see(layer, acts[:, first:])
                if layer in parts:
                    _offer(parts[layer], acts, ids, first, n_counted, edges[layer], keys[layer], offsets)

            run_encoders(model, tset, batch, run_layers, on_layer)
            if era is not None:
                era.end_batch()
            bar.advance(batch.shape[0])
    return parts


def _offer(part: LayerPart, acts, ids, first: int, n_counted: int, edges, key: int, offsets) -> None:
    """One batch of one layer into its part: statistics, top candidates, binned sample candidates."""
    b, p, f, v = _nonzero(acts, first)
    part.stats.update(acts.shape[0] * n_counted, f, v)
    m = part.top.offer(f, v)
    part.top.add(
        Candidates(
            f[m],
            ids[b[m]],
            p[m],
            v[m],
            v[m].double(),
            torch.full_like(f[m], -1),
            _windows(acts, b[m], p[m], f[m], offsets),
        )
    )
    e = edges[f]  # [nnz, n_bins + 1]
    bins = (v.double()[:, None] > e[:, 1:-1]).sum(1)  # 0 .. n_bins - 1
    m, u = part.res.offer(f, bins, hashed_uniform(key, f, ids[b], p))
    part.res.add(Candidates(f[m], ids[b[m]], p[m], v[m], u, bins[m], _windows(acts, b[m], p[m], f[m], offsets)))


def finish(part: LayerPart, tokens: torch.Tensor, cfg: ActivationsConfig) -> LayerResult:
    """The layer's result from its (merged) part: quantiles, the weighted draw, window tokens."""
    offsets = torch.arange(-cfg.window_before, cfg.window_after + 1)
    samples, weight = part.res.draw(cfg.weight_exponent)
    top = part.top.result
    windows = {name: _window_tokens(tokens, c, cfg, offsets) for name, c in (("top", top), ("samples", samples))}
    return LayerResult(
        part.stats, part.stats.quantiles(list(cfg.quantile_levels)), top, samples, weight, windows, part.res.n_inexact
    )


def collect(
    model,
    tset,
    tokens: torch.Tensor,
    cfg: ActivationsConfig,
    layers: list[int] | None = None,
    era=None,
    progress: Callable[[str, int], object] | None = None,
) -> dict[int, LayerResult]:
    """Statistics, top and sampled examples with windows, per layer; updates ``era`` on the way.
    The whole corpus as one block: the warm-up forward, then one forward per batch for all layers."""
    tokens = check_tokens(tokens, model)
    layers = sorted(layers if layers is not None else tset.layer_ids)
    edges = {l: bin_edges(s, cfg) for l, s in warmup_stats(model, tset, tokens, layers, cfg).items()}
    parts = collect_block(model, tset, tokens, cfg, edges, torch.arange(tokens.shape[0]), layers, era, progress)
    return {l: finish(parts[l], tokens, cfg) for l in layers}


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
