"""Contributor sets and density clustering of a feature's examples (docs/method.md §4.4).

Algorithm:
1. Significant contributors of each example (``significant``): upstream features (layer, feature),
   summed over source positions, and attention heads (layer, head, source - target offset), whose
   contribution is at least ``min_rel`` of the example's total positive input contribution; at
   most ``top`` per example, strongest first. A contributor is a key row [kind, layer, a, b]
   (kind an ``AttributionKind``: FEATURE (a = index) or HEAD (a = head, b = offset)).
2. Per feature: a boolean example x contributor matrix; contributors present in fewer than
   ``min_fraction`` of the feature's examples are dropped (docs/method.md §4.4: 0.05).
3. Jaccard distance 1 - |A n B| / |A u B| from one matrix product; an example with an empty set
   is at distance 1 from every other.
4. DBSCAN on the precomputed distances (eps 0.5, min_samples 5); label -1 = noise.
"""

from __future__ import annotations

import numpy as np
import torch

from atlas.lens.attribution import Attribution
from atlas.lens.kinds import AttributionKind as Kind
from atlas.lens.sampling import group_topk


def significant(att: Attribution, top: int, min_rel: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(example row [n], key [n, 4], value [n]) of each example's significant contributors."""
    total = att.token.clamp(min=0).sum(1) + att.position.clamp(min=0).sum(1) + att.errors.clamp(min=0).sum((1, 2))
    rows, keys, vals = [], [], []
    for layer, c in att.features.items():  # c [batch, pos, d_sae]
        total = total + c.clamp(min=0).sum((1, 2))
        per_feature = c.sum(1)  # [batch, d_sae]
        b, j = (per_feature > 0).nonzero(as_tuple=True)
        rows.append(b)
        keys.append(
            torch.stack([torch.full_like(j, Kind.FEATURE), torch.full_like(j, layer), j, torch.zeros_like(j)], 1)
        )
        vals.append(per_feature[b, j])
    b, l, h, s = (att.heads > 0).nonzero(as_tuple=True)  # heads [batch, layer + 1, n_heads, pos]
    rows.append(b)
    keys.append(torch.stack([torch.full_like(l, Kind.HEAD), l, h, s - att.pos[b]], 1))
    vals.append(att.heads[b, l, h, s])
    row, key, val = torch.cat(rows), torch.cat(keys), torch.cat(vals)
    keep = val >= min_rel * total[row].clamp(min=1e-12)
    row, key, val = row[keep], key[keep], val[keep]
    idx = group_topk(row, val.double(), top)
    return row[idx], key[idx], val[idx]


def contributor_matrix(row: torch.Tensor, key: torch.Tensor, n_examples: int, min_fraction: float):
    """(M [n_examples, n_kept] bool, kept keys [n_kept, 4]) with rare contributors dropped."""
    if row.numel() == 0:
        return torch.zeros(n_examples, 0, dtype=torch.bool), torch.zeros(0, 4, dtype=torch.long)
    uniq, code = torch.unique(key, dim=0, return_inverse=True)
    M = torch.zeros(n_examples, uniq.shape[0], dtype=torch.bool)
    M[row, code] = True
    keep = M.sum(0) >= max(1.0, min_fraction * n_examples)
    return M[:, keep], uniq[keep]


def jaccard_distance(M: torch.Tensor) -> torch.Tensor:
    """[n, n] Jaccard distances between the rows of a boolean matrix M [n, k]."""
    m = M.double()
    inter = m @ m.T
    size = m.sum(1)
    union = size[:, None] + size[None, :] - inter
    dist = torch.where(union > 0, 1 - inter / union.clamp(min=1), torch.ones_like(inter))
    dist.fill_diagonal_(0)
    return dist


def cluster(M: torch.Tensor, eps: float = 0.5, min_samples: int = 5) -> np.ndarray:
    """DBSCAN labels [n] (-1 = noise) of the examples' contributor sets."""
    from sklearn.cluster import DBSCAN

    if M.shape[0] == 0:
        return np.zeros(0, dtype=int)
    dist = jaccard_distance(M).numpy()
    return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(dist)
