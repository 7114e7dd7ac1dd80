"""Streaming top-k pools and z-score outlier selection over scores computed in blocks.

Implements the outlier rule of docs/method.md §2.1, §2.3 and §2.4 for many rows at once: each row is
one feature, each column one candidate (a vocabulary token, or an upstream feature), and the
scores arrive in column blocks (``S_block = W_E[v_block] · W_enc[:, f_block]``, transposed to
[f_block, v_block]) so the full [rows, columns] matrix never exists.

1. For every column block: merge the block's per-row top-k (``torch.topk`` along the column
   axis) into the running pool [rows, k] (values + global column ids), keeping the k largest.
2. Alongside, accumulate per-row Σ|s| (the relative-contribution denominator), and Σs, Σs², n
   (for the full-population z-score mode).
3. At the end, z-score each pool entry:
   - ``mode='pool'`` (the reference): mean and *sample* std (ddof 1) of the k pooled values;
   - ``mode='full'``: mean and sample std of all columns, from the running sums.
   Keep entries with z > threshold (and, optionally, a positive raw value). Outliers are found
   inside the top-k pool in both modes, so at most k per row are kept.

Pools of the most *negative* scores (suppressed output tokens) are pools of ``-s`` (``negate=True``:
the block's bottom-k are found directly and only the k kept values are negated).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

ZMode = Literal["pool", "full"]


@dataclass
class Selection:
    """Selected outliers, flattened: one entry per (row, kept pool slot), rows ascending,
    then pool rank ascending (strongest first)."""

    row: torch.Tensor  # [n] int64, row (feature) index
    col: torch.Tensor  # [n] int64, column id (token id / global upstream id)
    value: torch.Tensor  # [n] the pooled score (as streamed, e.g. -u for a suppressed pool)
    z: torch.Tensor  # [n] its z-score
    rank: torch.Tensor  # [n] int64, rank inside the row's pool (0 = largest)


def _acc(x: torch.Tensor) -> torch.Tensor:
    """Pools hold float32 (float64 when computing in float64)."""
    return x if x.dtype == torch.float64 else x.float()


class StreamingTopK:
    """Per-row top-k pool of scores arriving in column blocks, plus running moments."""

    def __init__(
        self,
        n_rows: int,
        k: int,
        device: torch.device | str = "cpu",
        moments: bool = False,
        negate: bool = False,
        track_abs: bool = True,
    ):
        self.k = k
        self.negate = negate  # pool the largest of -s (the smallest s) without negating blocks
        self.track_abs = track_abs
        self.values = torch.empty(n_rows, 0, device=device)  # [rows, <=k] float32 / float64
        self.ids = torch.empty(n_rows, 0, dtype=torch.int64, device=device)  # [rows, <=k]
        self.abs_sum = torch.zeros(n_rows, dtype=torch.float64, device=device)  # Σ|s| per row
        self.moments = moments
        self.sum = torch.zeros(n_rows, dtype=torch.float64, device=device)
        self.sumsq = torch.zeros(n_rows, dtype=torch.float64, device=device)
        self.count = 0

    def update(self, scores: torch.Tensor, col_ids: torch.Tensor) -> None:
        """scores [rows, block] (any float dtype); col_ids [block] int64 global column ids."""
        s = _acc(scores)
        if self.track_abs:
            self.abs_sum += torch.linalg.vector_norm(s, ord=1, dim=1)  # Σ|s|, no copy of the block
        if self.moments:
            sign = -1.0 if self.negate else 1.0
            self.sum += sign * s.sum(dim=1, dtype=torch.float64)
            self.sumsq += torch.linalg.vector_norm(s, ord=2, dim=1).double() ** 2
        self.count += s.shape[1]
        kb = min(self.k, s.shape[1])
        bv, bi = torch.topk(s, kb, dim=1, largest=not self.negate)  # [rows, kb]
        if self.negate:
            bv = -bv
        bids = col_ids.to(s.device)[bi]
        if self.values.shape[1] == 0:
            self.values, self.ids = bv, bids
            return
        v = torch.cat([self.values, bv], dim=1)
        i = torch.cat([self.ids, bids], dim=1)
        keep = min(self.k, v.shape[1])
        self.values, pos = torch.topk(v, keep, dim=1)
        self.ids = torch.gather(i, 1, pos)

    @classmethod
    def cat(cls, parts: list[StreamingTopK]) -> StreamingTopK:
        """Stack pools of consecutive row blocks (same columns) into one pool over all rows."""
        out = cls(
            0,
            parts[0].k,
            device=parts[0].values.device,
            moments=parts[0].moments,
            negate=parts[0].negate,
            track_abs=parts[0].track_abs,
        )
        out.values = torch.cat([p.values for p in parts])
        out.ids = torch.cat([p.ids for p in parts])
        out.abs_sum = torch.cat([p.abs_sum for p in parts])
        out.sum = torch.cat([p.sum for p in parts])
        out.sumsq = torch.cat([p.sumsq for p in parts])
        out.count = parts[0].count
        return out

    def select(self, threshold: float, mode: ZMode = "pool", positive_only: bool = False) -> Selection:
        return select_outliers(
            self.values,
            self.ids,
            threshold,
            mode,
            positive_only,
            full_stats=(self.sum, self.sumsq, self.count) if mode == "full" else None,
        )


def pool_zscores(values: torch.Tensor, mode: ZMode = "pool", full_stats=None) -> torch.Tensor:
    """z-scores of pooled values [rows, k] -> [rows, k] (float64)."""
    v = values.double()
    if mode == "pool":
        mean = v.mean(dim=1, keepdim=True)
        std = v.std(dim=1, keepdim=True, unbiased=True)  # sample std, as the reference
    elif mode == "full":
        if full_stats is None:
            raise ValueError("mode='full' needs the running sums (StreamingTopK(moments=True))")
        s, sq, n = full_stats
        mean = (s / n).unsqueeze(1)
        var = ((sq - n * mean.squeeze(1) ** 2) / max(n - 1, 1)).clamp_min(0)
        std = var.sqrt().unsqueeze(1)
    else:
        raise ValueError(f"unknown z-score mode {mode!r}; use 'pool' or 'full'")
    z = (v - mean) / std
    return torch.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)  # constant rows: no outliers


def select_outliers(
    values: torch.Tensor,
    ids: torch.Tensor,
    threshold: float,
    mode: ZMode = "pool",
    positive_only: bool = False,
    full_stats=None,
) -> Selection:
    """Keep pool entries with z > threshold (and value > 0 if positive_only), flattened."""
    z = pool_zscores(values, mode, full_stats)  # [rows, k]
    keep = z > threshold
    if positive_only:
        keep &= values > 0
    row, rank = keep.nonzero(as_tuple=True)  # row-major: rows, then rank
    return Selection(
        row=row.cpu(),
        col=ids[row, rank].cpu(),
        value=values[row, rank].double().cpu(),
        z=z[row, rank].cpu(),
        rank=rank.cpu(),
    )
