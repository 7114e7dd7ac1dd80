"""Streaming choice of examples per feature: top activations and bin-weighted samples (docs/method.md §4.1).

Algorithm:
1. Every candidate is one non-zero activation (feature f, document, position, value), with the
   feature's activations in a window around it (gathered while the batch is in memory, so no
   later pass over the corpus is needed). A store keeps, per group, the k best by a key
   (``group_topk``: a stable two-key sort, then a rank within each group).
2. Cheap streaming: each group has a running threshold (its k-th best key once it holds k), and
   new candidates at or below it are dropped before their window is gathered; the survivors are
   buffered and merged only when the buffer outgrows the store. Memory: groups x k.
3. Top examples: group = feature, key = activation, k = n_top.
4. Bin-weighted samples without replacement (docs/method.md §4.1: 20 bins, weight 1/n_b^0.9, 100
   draws) by Efraimidis-Spirakis: u ~ U(0,1) per item, keep the n largest u^(1/w). The weight is
   constant inside a bin, so inside a bin the order is the order of u: keeping the n largest u per
   (feature, bin) and counting n_b exactly gives, at the end, the exact weighted draw (key
   log(u) / w_b, top n per feature). Keeping fewer per bin (``per_bin`` < n) bounds memory; the draw
   is then checked: it stays exact unless some bin had all its kept items drawn and had dropped
   others (``n_inexact`` counts such features).
5. Merge-exact (docs/scale.md): ties of the key are broken by (document, position), earliest first,
   and the sample keys may be given per item (``exact.hashed_uniform``) instead of drawn from a
   generator; then a store filled from blocks of the corpus and merged (``absorb``) holds exactly
   what one store filled from the whole corpus holds, whatever the blocks and their order.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


def group_topk(group: torch.Tensor, key: torch.Tensor, k: int, tie: torch.Tensor | None = None) -> torch.Tensor:
    """Indices of the entries ranked < k (by key, descending; equal keys by tie, ascending, when
    given) inside their group, in (group, rank) order. group, key, tie: [n]."""
    if group.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=group.device)
    order = torch.sort(tie, stable=True).indices if tie is not None else torch.arange(key.numel())
    order = order[torch.sort(key[order], descending=True, stable=True).indices]
    order = order[torch.sort(group[order], stable=True).indices]  # by group, then key desc, then tie
    g = group[order]
    idx = torch.arange(g.numel(), device=g.device)
    is_start = torch.ones_like(g, dtype=torch.bool)
    is_start[1:] = g[1:] != g[:-1]
    start = torch.cummax(torch.where(is_start, idx, torch.zeros_like(idx)), 0).values
    return order[(idx - start) < k]


@dataclass
class Candidates:
    """Columns of candidate examples: one entry per (feature, document, position)."""

    feature: torch.Tensor  # [n] int64
    doc: torch.Tensor  # [n] int64
    pos: torch.Tensor  # [n] int64
    act: torch.Tensor  # [n] float32
    key: torch.Tensor  # [n] float64: activation (top) or uniform u (samples)
    bin: torch.Tensor  # [n] int64 (-1 for top examples)
    win: torch.Tensor  # [n, w] the feature's activations at pos - before .. pos + after

    @classmethod
    def empty(cls, width: int = 0) -> Candidates:
        z = torch.zeros(0, dtype=torch.long)
        return cls(z, z, z, torch.zeros(0), torch.zeros(0, dtype=torch.float64), z, torch.zeros(0, width))

    def take(self, idx: torch.Tensor) -> Candidates:
        return Candidates(*(getattr(self, f.name)[idx] for f in fields(self)))

    @staticmethod
    def cat(parts: list[Candidates]) -> Candidates:
        return Candidates(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(Candidates)))

    def __len__(self) -> int:
        return int(self.feature.numel())

    @property
    def place(self) -> torch.Tensor:
        """[n] int64 (document, position) as one number: the tie-break, earliest first."""
        return self.doc * (1 << 24) + self.pos


class _Store:
    """Top-k per group with running thresholds and a lazily merged buffer."""

    def __init__(self, n_groups: int, k: int, width: int):
        self.k, self.width = k, width
        self.threshold = torch.full((n_groups,), float("-inf"), dtype=torch.float64)  # [n_groups]
        self._items = Candidates.empty(width)
        self._pending: list[Candidates] = []  # pushed since the last merge
        self._n_pending = 0  # their total length

    def passes(self, group: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        return key > self.threshold[group]

    def push(self, group_of, new: Candidates) -> None:
        self._pending.append(new)
        self._n_pending += len(new)
        if self._n_pending > max(65536, len(self._items)):
            self._merge(group_of)

    def _merge(self, group_of) -> None:
        merged = Candidates.cat([self._items] + self._pending)
        g = group_of(merged)
        keep = group_topk(g, merged.key, self.k, merged.place)
        self._items, self._pending, self._n_pending = merged.take(keep), [], 0
        g = g[keep]
        full = torch.bincount(g, minlength=self.threshold.numel()) >= self.k
        kth = torch.full_like(self.threshold, float("inf")).scatter_reduce(0, g, self._items.key, reduce="amin")
        self.threshold = torch.where(full, kth, self.threshold)

    def items(self, group_of) -> Candidates:
        if self._pending:
            self._merge(group_of)
        return self._items

    def absorb(self, group_of, items: Candidates) -> None:
        """Merge in the items another store (of another block of the corpus) kept."""
        self._pending.append(items)
        self._n_pending += len(items)
        self._merge(group_of)


class TopStore(_Store):
    """The k highest activations per feature."""

    def __init__(self, d_sae: int, k: int, width: int = 0):
        super().__init__(d_sae, k, width)

    def offer(self, feature, value) -> torch.Tensor:
        return self.passes(feature, value.double())

    def add(self, new: Candidates) -> None:
        self.push(lambda c: c.feature, new)

    @property
    def result(self) -> Candidates:
        return self.items(lambda c: c.feature)


class BinReservoir(_Store):
    """Per (feature, bin): the n items with the largest uniform key, and the exact bin counts."""

    def __init__(
        self,
        d_sae: int,
        n_bins: int,
        n: int,
        generator: torch.Generator | None = None,
        width: int = 0,
        per_bin: int | None = None,
    ):
        super().__init__(d_sae * n_bins, per_bin or n, width)  # per_bin >= n: always exact
        self.n, self.n_bins, self.gen = n, n_bins, generator
        self.n_inexact = 0
        self.counts = torch.zeros(d_sae * n_bins, dtype=torch.long)  # [d_sae * n_bins]

    def offer(self, feature, bin, u: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Count every item; return (mask of items worth keeping, their uniform keys). u [n]: the
        items' keys (merge-exact, ``exact.hashed_uniform``); None draws them from the generator."""
        group = feature * self.n_bins + bin
        self.counts += torch.bincount(group, minlength=self.counts.numel())
        if u is None:
            u = torch.rand(feature.numel(), generator=self.gen, dtype=torch.float64)
        keep = self.passes(group, u)
        return keep, u[keep]

    def add(self, new: Candidates) -> None:
        self.push(lambda c: c.feature * self.n_bins + c.bin, new)

    @property
    def kept(self) -> Candidates:
        return self.items(lambda c: c.feature * self.n_bins + c.bin)

    def absorb_counts(self, counts: torch.Tensor, items: Candidates) -> None:
        """Merge in another block's bin counts [d_sae * n_bins] and kept items."""
        self.counts += counts
        self.absorb(lambda c: c.feature * self.n_bins + c.bin, items)

    def draw(self, exponent: float) -> tuple[Candidates, torch.Tensor]:
        """The weighted draw without replacement: (examples, their weights 1/n_b^exponent)."""
        it = self.kept
        n_b = self.counts[it.feature * self.n_bins + it.bin].to(torch.float64)
        weight = n_b.clamp(min=1) ** -exponent
        es_key = torch.log(it.key.clamp(min=1e-300)) / weight  # log(u^(1/w))
        keep = group_topk(it.feature, es_key, self.n, it.place)
        # exact unless a dropped item could have made the draw: its bin dropped items, had all its kept
        # items drawn, and either the feature drew fewer than n or the bin's lowest drawn key is above
        # the feature's cut-off (a dropped item, below it in u, might still beat the cut-off)
        g, n_groups = it.feature * self.n_bins + it.bin, self.counts.numel()
        kept = torch.bincount(g, minlength=n_groups)
        drawn = torch.bincount(g[keep], minlength=n_groups)
        n_features = n_groups // self.n_bins
        inf = torch.full((n_features,), float("inf"), dtype=torch.float64)
        cutoff = inf.scatter_reduce(0, it.feature[keep], es_key[keep], reduce="amin")
        n_drawn = torch.bincount(it.feature[keep], minlength=n_features)
        low = torch.full((n_groups,), float("inf"), dtype=torch.float64).scatter_reduce(
            0, g[keep], es_key[keep], reduce="amin"
        )
        f_of = torch.arange(n_groups) // self.n_bins
        risky = (self.counts > kept) & (drawn == kept) & (kept > 0) & ((n_drawn[f_of] < self.n) | (low > cutoff[f_of]))
        self.n_inexact = int(torch.unique(f_of[risky]).numel())
        return it.take(keep), weight[keep]
