"""Contributor sets and clustering (docs/method.md §4.4): Jaccard distances by hand, and planted
mechanisms recovered, both from given sets and from attributions on a real model."""

from __future__ import annotations

import numpy as np
import torch

from atlas.lens.attribution import attribute
from atlas.lens.clustering import cluster, contributor_matrix, jaccard_distance, significant
from atlas.lens.kinds import AttributionKind


def test_jaccard_distance_by_hand():
    M = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)
    d = jaccard_distance(M)
    assert d[0, 1].item() == 1 - 1 / 3 and d[0, 3].item() == 0
    assert d[2, 0].item() == 1 and d[2, 2].item() == 0  # an empty set is far from everything else


def test_rare_contributors_are_dropped():
    row = torch.tensor([0, 1, 2, 3] * 5 + [7])
    key = torch.tensor([[0, 0, 1, 0]] * 20 + [[0, 0, 9, 0]])
    M, keys = contributor_matrix(row, key, n_examples=40, min_fraction=0.05)
    assert keys.tolist() == [[0, 0, 1, 0]] and M[:4, 0].all() and not M[4:, 0].any()


def test_planted_sets_are_recovered():
    gen = torch.Generator().manual_seed(0)
    rows, keys = [], []
    truth = []
    for ex in range(60):  # mechanism A: feature (0, 3) + head (1, 2, -1); B: feature (0, 7) + head (0, 1, -4)
        mech = ex % 3  # 0: A, 1: B, 2: noise of one-off contributors
        truth.append(mech if mech < 2 else -1)
        base = {0: [[0, 0, 3, 0], [1, 1, 2, -1]], 1: [[0, 0, 7, 0], [1, 0, 1, -4]], 2: []}[mech]
        extra = [[0, 1, int(torch.randint(100, 10_000, (1,), generator=gen)), 0]]  # unique, dropped as rare
        for k in base + extra:
            rows.append(ex)
            keys.append(k)
    M, kept = contributor_matrix(torch.tensor(rows), torch.tensor(keys), 60, 0.05)
    labels = cluster(M, eps=0.5, min_samples=5)
    truth = np.array(truth)
    assert len(set(labels[truth == 0])) == 1 and len(set(labels[truth == 1])) == 1
    assert labels[truth == 0][0] != labels[truth == 1][0] and (labels[truth >= 0] >= 0).all()
    assert (labels[truth == -1] == -1).all()


def _planted_model(tiny_model, make_transcoders):
    """Layer 0's MLP gets two neurons that fire on tokens A and B and write directions u2 and u3; the
    layer-0 transcoder's features 0 and 1 copy them; layer-1 feature 0 reads u2 + u3. Embeddings of A
    and B and the written directions are large so each mechanism dominates its examples."""
    import copy

    model = copy.deepcopy(tiny_model)
    tset = make_transcoders(model, d_sae=16, kind="relu", seed=7)
    d = model.cfg.d_model
    gen = torch.Generator().manual_seed(11)
    u = torch.linalg.qr(torch.randn(d, 4, generator=gen)).Q.T  # 4 orthonormal directions
    u = u - u.mean(1, keepdim=True)  # LayerNorm centres: stay centred
    A, B = 1000, 2000
    with torch.no_grad():
        model.embed.W_E[A] = 30 * u[0]
        model.embed.W_E[B] = 30 * u[1]
        for blk in model.blocks:
            blk.attn.W_O.mul_(0.1)
        tc0, tc1 = tset[0].sae, tset[1].sae
        mlp = model.blocks[0].mlp
        mlp.W_out.mul_(0.01)
        tc0.W_dec.mul_(0.01)
        for m_in, m_b, m_out in ((mlp.W_in, mlp.b_in, mlp.W_out), (tc0.W_enc, tc0.b_enc, tc0.W_dec)):
            m_in[:, 0], m_in[:, 1] = 4 * u[0], 4 * u[1]
            m_b[:2] = -8.0
            m_out[0], m_out[1] = 40 * u[2], 40 * u[3]
        tc1.W_enc[:, 0] = 2 * (u[2] + u[3])
        tc1.b_enc[0] = -4.0
    return model, tset, A, B


def test_planted_mechanisms_are_recovered_from_attributions(tiny_model, make_transcoders):
    model, tset, A, B = _planted_model(tiny_model, make_transcoders)
    gen = torch.Generator().manual_seed(5)
    n = 40
    tokens = torch.randint(3000, 40000, (n, 10), generator=gen)
    pos = torch.randint(2, 10, (n,), generator=gen)
    which = torch.arange(n) % 2
    tokens[torch.arange(n), pos] = torch.where(which == 0, A, B)
    att = attribute(model, tset, tokens, 1, torch.zeros(n, dtype=torch.long), pos)
    assert (att.act > 0).all(), "the planted feature fires at every planted token"
    row, key, _ = significant(att, top=10, min_rel=0.05)
    M, kept = contributor_matrix(row, key, n, 0.05)
    labels = cluster(M, eps=0.5, min_samples=5)
    assert len(set(labels[which == 0])) == 1 and len(set(labels[which == 1])) == 1
    assert labels[which == 0][0] != labels[which == 1][0] and (labels >= 0).all()
    for mech, upstream in ((0, 0), (1, 1)):  # each cluster is driven by its own upstream feature
        shared = M[labels == labels[which == mech][0]].all(0)
        feats = {tuple(k) for k in kept[shared].tolist() if k[0] == AttributionKind.FEATURE}
        assert feats == {(AttributionKind.FEATURE, 0, upstream, 0)}
