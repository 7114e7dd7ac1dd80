"""Streaming choice of examples per feature: top activations and bin-weighted samples (science.md 4.1).

Algorithm:
1. Every candidate is one non-zero activation (feature f, document, position, value). Candidates
   arrive batch by batch; a store keeps, per group, only the k best by a key (``group_topk``:
   a stable two-key sort, then a rank within each group). Memory is bounded by groups x k, never
   by the corpus.
2. Top examples: group = feature, key = activation, k = n_top.
3. Bin-weighted samples without replacement (science.md 4.1: 20 bins, weight 1/n_b^0.9, 100
   draws). Weighted sampling without replacement is Efraimidis-Spirakis: draw u ~ U(0,1) per
   item, keep the n largest u^(1/w). The weight is constant inside a bin, so the order inside a
   bin is the order of u: keeping the n largest u per (feature, bin) while streaming, and
   counting n_b exactly, gives at the end the exact weighted draw: key log(u) / w_b, top n per
   feature.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def group_topk(group: torch.Tensor, key: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the entries ranked < k (by key, descending) inside their group. group, key: [n]."""
    if group.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=group.device)
    order = torch.sort(key, descending=True, stable=True).indices
    order = order[torch.sort(group[order], stable=True).indices]          # by group, then key desc
    g = group[order]
    idx = torch.arange(g.numel(), device=g.device)
    is_start = torch.ones_like(g, dtype=torch.bool)
    is_start[1:] = g[1:] != g[:-1]
    start = torch.cummax(torch.where(is_start, idx, torch.zeros_like(idx)), 0).values
    return order[(idx - start) < k]


@dataclass
class Candidates:
    """Columns of candidate examples: one entry per (feature, document, position)."""

    feature: torch.Tensor   # [n] int64
    doc: torch.Tensor       # [n] int64
    pos: torch.Tensor       # [n] int64
    act: torch.Tensor       # [n] float32
    key: torch.Tensor       # [n] float64: activation (top) or uniform u (samples)
    bin: torch.Tensor       # [n] int64 (-1 for top examples)

    @classmethod
    def empty(cls) -> "Candidates":
        z = torch.zeros(0, dtype=torch.long)
        return cls(z, z.clone(), z.clone(), torch.zeros(0), torch.zeros(0, dtype=torch.float64), z.clone())

    def take(self, idx: torch.Tensor) -> "Candidates":
        return Candidates(*(getattr(self, f)[idx] for f in ("feature", "doc", "pos", "act", "key", "bin")))

    @staticmethod
    def cat(a: "Candidates", b: "Candidates") -> "Candidates":
        return Candidates(*(torch.cat([getattr(a, f), getattr(b, f)]) for f in ("feature", "doc", "pos", "act", "key", "bin")))

    def __len__(self) -> int:
        return int(self.feature.numel())


class TopStore:
    """The k highest activations per feature, merged batch by batch."""

    def __init__(self, k: int):
        self.k, self.items = k, Candidates.empty()

    def add(self, new: Candidates) -> None:
        merged = Candidates.cat(self.items, new)
        self.items = merged.take(group_topk(merged.feature, merged.key, self.k))


class BinReservoir:
    """Per (feature, bin): the n items with the largest uniform key, and the exact bin counts."""

    def __init__(self, d_sae: int, n_bins: int, n: int, generator: torch.Generator):
        self.n_bins, self.n, self.gen = n_bins, n, generator
        self.counts = torch.zeros(d_sae * n_bins, dtype=torch.long)   # [d_sae * n_bins]
        self.items = Candidates.empty()

    def add(self, feature, doc, pos, act, bin) -> None:
        group = feature * self.n_bins + bin
        self.counts += torch.bincount(group, minlength=self.counts.numel())
        u = torch.rand(feature.numel(), generator=self.gen, dtype=torch.float64)
        merged = Candidates.cat(self.items, Candidates(feature, doc, pos, act, u, bin))
        self.items = merged.take(group_topk(merged.feature * self.n_bins + merged.bin, merged.key, self.n))

    def draw(self, exponent: float) -> tuple[Candidates, torch.Tensor]:
        """The weighted draw without replacement: (examples, their weights 1/n_b^exponent)."""
        it = self.items
        n_b = self.counts[it.feature * self.n_bins + it.bin].to(torch.float64)
        weight = n_b.clamp(min=1) ** -exponent
        es_key = torch.log(it.key.clamp(min=1e-300)) / weight                  # log(u^(1/w))
        keep = group_topk(it.feature, es_key, self.n)
        return it.take(keep), weight[keep]
