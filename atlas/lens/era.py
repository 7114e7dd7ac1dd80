"""ERA and TWERA: virtual weights weighted by how the two features co-activate on a corpus (docs/method.md §3).

    ERA_ij   = E[1(a_j > 0) a_i] V_ij
    TWERA_ij = (E[a_j a_i] / E[a_j]) V_ij      (0 where feature j never fires)

i = upstream (source) feature, j = downstream (target) feature, V_ij the raw virtual weight;
expectations over every counted token of the corpus.

Algorithm:
1. Only candidate pairs are tracked: the virtual-weight edges, grouped by (source layer, target
   layer). Per source layer only the columns some edge reads are cached.
2. Per batch, as each layer is encoded (layers arrive in order, sources first): cache the source
   columns ``[tokens, n_src_cols]``; at a target layer, gather for a chunk of edges the source
   column and the target column ``[tokens, chunk]`` and add up a_i a_j, 1(a_j > 0) a_i and a_j.
   Cost per batch: tokens x edges multiply-adds; memory: tokens x chunk.
3. At the end divide by the token count and multiply by V.
Sums are kept as integer digits of each batch's float64 sums (``exact.fixed_digits``), so
accumulators of blocks of the corpus add up (``absorb``) to exactly the whole corpus's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from atlas.errors import AtlasError
from atlas.lens.exact import fixed_digits, fixed_value


@dataclass
class EraResult:
    e_prod: torch.Tensor  # [n_edges] E[a_i a_j]
    e_ind: torch.Tensor  # [n_edges] E[1(a_j > 0) a_i]
    e_dst: torch.Tensor  # [n_edges] E[a_j]
    era: torch.Tensor  # [n_edges]
    twera: torch.Tensor  # [n_edges]


class EraAccumulator:
    def __init__(self, src_layer, src_idx, dst_layer, dst_idx, weight, chunk: int = 8192):
        self.src_layer, self.src_idx = torch.as_tensor(src_layer).long(), torch.as_tensor(src_idx).long()
        self.dst_layer, self.dst_idx = torch.as_tensor(dst_layer).long(), torch.as_tensor(dst_idx).long()
        self.weight = torch.as_tensor(weight, dtype=torch.float64)
        if bool((self.src_layer >= self.dst_layer).any()):
            raise AtlasError("virtual-weight edges must go from an earlier layer to a later one")
        n = self.weight.numel()
        self.chunk = chunk
        self.digits = torch.zeros(3, 3, n, dtype=torch.long)  # digit x [prod, ind, dst] x n_edges
        self.n_tokens, self._batch_tokens = 0, 0
        self.need: dict[int, torch.Tensor] = {}
        self.col = torch.zeros(n, dtype=torch.long)  # column of each edge's source in the cache
        for ls in torch.unique(self.src_layer).tolist():
            m = self.src_layer == ls
            cols, inv = torch.unique(self.src_idx[m], return_inverse=True)
            self.need[ls], self.col[m] = cols, inv
        self.by_dst = {
            ld: (self.dst_layer == ld).nonzero(as_tuple=True)[0] for ld in torch.unique(self.dst_layer).tolist()
        }
        self._cache: dict[int, torch.Tensor] = {}

    @property
    def layers(self) -> set[int]:
        return set(self.need) | set(self.by_dst)

    def see(self, layer: int, acts: torch.Tensor) -> None:
        """acts [batch, pos, d_sae] of one layer for the current batch (counted positions only)."""
        flat = acts.reshape(-1, acts.shape[-1])  # [tokens, d_sae]
        self._batch_tokens = flat.shape[0]
        if layer in self.need:
            self._cache[layer] = flat[:, self.need[layer]].double()
        if layer not in self.by_dst:
            return
        edges = self.by_dst[layer]
        for start in range(0, edges.numel(), self.chunk):
            e = edges[start : start + self.chunk]
            src = torch.empty(flat.shape[0], e.numel(), dtype=torch.float64)  # [tokens, chunk]
            for ls in torch.unique(self.src_layer[e]).tolist():
                m = self.src_layer[e] == ls
                src[:, m] = self._cache[ls][:, self.col[e[m]]]
            dst = flat[:, self.dst_idx[e]].double()  # [tokens, chunk]
            batch = torch.stack([(src * dst).sum(0), (src * (dst > 0)).sum(0), dst.sum(0)])  # [3, chunk]
            self.digits[:, :, e] += fixed_digits(batch)

    def end_batch(self) -> None:
        self.n_tokens += self._batch_tokens
        self._cache.clear()

    @property
    def sums(self) -> torch.Tensor:  # [3, n_edges] float64: [prod, ind, dst] sums
        return fixed_value(self.digits)

    def absorb(self, digits: torch.Tensor, n_tokens: int) -> None:
        """Add another block's digit sums [3, 3, n_edges] and token count."""
        self.digits += digits
        self.n_tokens += n_tokens

    def result(self) -> EraResult:
        if self.n_tokens == 0:
            raise AtlasError("no tokens were seen: ERA/TWERA need a non-empty corpus")
        e_prod, e_ind, e_dst = self.sums / self.n_tokens
        ratio = torch.where(e_dst > 0, e_prod / e_dst.clamp(min=1e-300), torch.zeros_like(e_dst))
        return EraResult(e_prod, e_ind, e_dst, e_ind * self.weight, ratio * self.weight)
