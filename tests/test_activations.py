"""Streaming activation statistics, examples, bin-weighted sampling and ERA/TWERA (docs/method.md §3, §4.1),
each against a dense reference computed on the whole (small) corpus."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atlas.config import ActivationsConfig
from atlas.errors import AtlasError
from atlas.lens.activations import collect
from atlas.lens.era import EraAccumulator
from atlas.lens.sampling import BinReservoir, Candidates, group_topk

CFG = ActivationsConfig(batch_size=7, n_samples=12, n_top=4, window_before=3, window_after=2)


@pytest.fixture(scope="module")
def setup(tiny_model, make_transcoders):
    tset = make_transcoders(tiny_model, d_sae=24, seed=2)
    tokens = torch.randint(0, 50000, (30, 16), generator=torch.Generator().manual_seed(9))
    _, cache = tiny_model.run_with_cache(tokens)
    dense = {l: tset[l].encode(cache[tset[l].hook_in]).detach() for l in (0, 1)}  # [docs, pos, d_sae]
    return tset, tokens, dense


def test_streaming_statistics_equal_the_dense_reference(tiny_model, setup):
    tset, tokens, dense = setup
    res = collect(tiny_model, tset, tokens, CFG)
    for l in (0, 1):
        A = dense[l][:, 1:]  # position 0 is not counted
        r = res[l]
        assert r.stats.n_tokens == A.shape[0] * A.shape[1]
        assert torch.equal(r.stats.n_active, (A > 0).sum((0, 1)))
        torch.testing.assert_close(r.stats.max, A.amax((0, 1)))
        torch.testing.assert_close(r.stats.sum, A.sum((0, 1)).double(), rtol=1e-5, atol=1e-5)
        assert int(r.stats.hist.sum()) == int((A > 0).sum())
        for f in range(A.shape[-1]):
            nz = A[..., f][A[..., f] > 0].numpy()
            if nz.size:  # a histogram quantile lies next to its order statistic, within one log bin (7.5 %)
                srt = np.sort(nz)
                k = np.ceil(np.array(CFG.quantile_levels) * nz.size).astype(int) - 1
                lo, hi = srt[np.maximum(k - 1, 0)] / 1.08, srt[np.minimum(k + 1, nz.size - 1)] * 1.08
                q = r.quantiles[f].numpy()
                assert (q >= lo).all() and (q <= hi).all(), (q, lo, hi)
            if nz.size == 0:
                assert torch.isnan(r.quantiles[f]).all()
        # top examples: exactly the k largest activations of each feature
        for f in range(A.shape[-1]):
            mine = sorted(r.top.act[r.top.feature == f].tolist(), reverse=True)
            ref = sorted(A[..., f].flatten().tolist(), reverse=True)[: CFG.n_top]
            ref = [v for v in ref if v > 0]
            np.testing.assert_allclose(mine, ref, rtol=1e-6)
        # every example (top or sampled) is a real non-zero activation at its place, with its window
        for c, name in ((r.top, "top"), (r.samples, "samples")):
            torch.testing.assert_close(c.act, A[c.doc, c.pos - 1, c.feature])
            start, toks, acts = r.windows[name]  # column i is position pos - window_before + i
            centre = torch.full_like(c.pos, CFG.window_before)
            assert torch.equal(start, (c.pos - CFG.window_before).clamp(min=0))
            p = c.pos[:, None] - CFG.window_before + torch.arange(toks.shape[1])
            assert ((toks == -1) == ((p < 0) | (p >= tokens.shape[1]))).all()
            torch.testing.assert_close(acts[torch.arange(len(c)), centre], c.act)
            assert (toks[torch.arange(len(c)), centre] == tokens[c.doc, c.pos]).all()


def test_samples_are_distinct_in_their_bins_and_weighted(tiny_model, setup):
    tset, tokens, dense = setup
    res = collect(tiny_model, tset, tokens, CFG)
    A = dense[1][:, 1:]
    r = res[1]
    s = r.samples
    keys = set(zip(s.feature.tolist(), s.doc.tolist(), s.pos.tolist()))
    assert len(keys) == len(s)  # without replacement
    for f in range(A.shape[-1]):
        nz = A[..., f][A[..., f] > 0]
        n_taken = int((s.feature == f).sum())
        assert n_taken == min(CFG.n_samples, nz.numel())
        if nz.numel() == 0:
            continue
        edges = r.stats.max[f].double() * torch.linspace(0, 1, CFG.n_bins + 1, dtype=torch.float64)
        bins = (nz.double()[:, None] > edges[1:-1]).sum(1)
        n_b = torch.bincount(bins, minlength=CFG.n_bins)
        mine = s.bin[s.feature == f]
        assert torch.equal(mine, (s.act[s.feature == f].double()[:, None] > edges[1:-1]).sum(1))
        torch.testing.assert_close(r.sample_weight[s.feature == f], n_b[mine].double() ** -0.9)


def test_weighted_draw_follows_the_weights():
    """Bin 0: 100 items, bin 1: 1 item, one draw: P(bin 1) = 1 / (1 + 100 * 100**-0.9) = 0.387."""
    hits = 0
    for seed in range(800):
        r = BinReservoir(1, 2, 1, torch.Generator().manual_seed(seed))
        for chunk in torch.arange(101).split(30):  # streamed in pieces, thresholds in between
            f, b = torch.zeros(chunk.numel(), dtype=torch.long), (chunk == 100).long()
            keep, u = r.offer(f, b)
            r.add(
                Candidates(
                    f[keep],
                    chunk[keep],
                    f[keep],
                    torch.ones(int(keep.sum())),
                    u,
                    b[keep],
                    torch.zeros(int(keep.sum()), 0),
                )
            )
            r._merge(lambda c: c.feature * 2 + c.bin)
        s, _ = r.draw(0.9)
        hits += int(s.bin[0] == 1)
    assert abs(hits / 800 - 1 / (1 + 100 * 100**-0.9)) < 0.05


def test_small_per_bin_reservoirs_are_checked():
    """per_bin 2 < n 5 with one crowded bin: only 2 can be drawn, flagged inexact; per_bin = n: exact;
    bins that never overflow: exact."""
    for per_bin, counts, flagged in ((2, [50], 1), (5, [50], 0), (3, [3] * 10, 0)):
        r = BinReservoir(1, len(counts), 5, torch.Generator().manual_seed(0), per_bin=per_bin)
        b = torch.cat([torch.full((c,), i) for i, c in enumerate(counts)])
        f = torch.zeros_like(b)
        keep, u = r.offer(f, b)
        r.add(
            Candidates(
                f[keep],
                torch.arange(b.numel())[keep],
                f[keep],
                torch.ones(int(keep.sum())),
                u,
                b[keep],
                torch.zeros(int(keep.sum()), 0),
            )
        )
        s, _ = r.draw(0.9)
        assert len(s) == min(5, per_bin * len(counts)) and r.n_inexact == flagged


def test_bin_edges_from_a_warmup_prefix(tiny_model, setup):
    """With edges from the first 5 sequences, later activations above their max land in the open top bin."""
    from dataclasses import replace

    tset, tokens, dense = setup
    cfg = replace(CFG, bin_warmup_seqs=5)
    r = collect(tiny_model, tset, tokens, cfg)[1]
    warm_max = dense[1][:5, 1:].amax((0, 1))  # [d_sae]
    s = r.samples
    edges = warm_max[s.feature].double()[:, None] * torch.linspace(0, 1, cfg.n_bins + 1, dtype=torch.float64)
    assert torch.equal(s.bin, (s.act.double()[:, None] > edges[:, 1:-1]).sum(1))
    assert (s.act[s.bin == cfg.n_bins - 1] > warm_max[s.feature[s.bin == cfg.n_bins - 1]]).any()
    torch.testing.assert_close(r.stats.max, dense[1][:, 1:].amax((0, 1)))  # statistics still see everything


def test_group_topk_by_hand():
    group = torch.tensor([2, 0, 2, 0, 2, 1])
    key = torch.tensor([1.0, 5.0, 3.0, 4.0, 2.0, 0.0])
    assert sorted(group_topk(group, key, 2).tolist()) == [1, 2, 3, 4, 5]


def test_era_and_twera_equal_the_dense_reference(tiny_model, setup):
    tset, tokens, dense = setup
    V = (tset[0].W_dec @ tset[1].W_enc).detach()  # [d_sae, d_sae] raw virtual weights
    src, dst = (V.abs() > 0.3).nonzero(as_tuple=True)
    assert src.numel() > 5
    era = EraAccumulator(torch.zeros_like(src), src, torch.ones_like(dst), dst, V[src, dst])
    collect(tiny_model, tset, tokens, CFG, era=era)
    r = era.result()
    a_i = dense[0][:, 1:].reshape(-1, 24)[:, src].double()
    a_j = dense[1][:, 1:].reshape(-1, 24)[:, dst].double()
    w = V[src, dst].double()
    torch.testing.assert_close(r.era, ((a_j > 0) * a_i).mean(0) * w)
    ref_twera = torch.where(a_j.mean(0) > 0, (a_i * a_j).mean(0) / a_j.mean(0), torch.zeros(())) * w
    torch.testing.assert_close(r.twera, ref_twera)


def test_bad_corpora_are_refused(tiny_model, setup):
    tset = setup[0]
    with pytest.raises(AtlasError, match="empty"):
        collect(tiny_model, tset, torch.zeros(0, 16, dtype=torch.long), CFG)
    with pytest.raises(AtlasError, match="token ids"):
        collect(tiny_model, tset, torch.full((2, 8), 60000), CFG)
    with pytest.raises(AtlasError, match="2-d"):
        collect(tiny_model, tset, torch.zeros(8, dtype=torch.long), CFG)
    with pytest.raises(AtlasError, match="earlier layer"):
        EraAccumulator([1], [0], [1], [0], [1.0])


def test_smaller_reservoirs_give_the_exact_draw_when_not_flagged(tiny_model, setup):
    from dataclasses import replace

    tset, tokens, _ = setup
    exact = collect(tiny_model, tset, tokens, CFG)[1]
    small = collect(tiny_model, tset, tokens, replace(CFG, per_bin_reservoir=8))[1]
    assert exact.n_inexact == 0

    def key(s):
        return sorted(zip(s.feature.tolist(), s.doc.tolist(), s.pos.tolist()))

    if small.n_inexact == 0:
        assert key(small.samples) == key(exact.samples)
    else:  # the flagged features are the only ones that differ
        differ = {
            f
            for f in range(24)
            if [k for k in key(small.samples) if k[0] == f] != [k for k in key(exact.samples) if k[0] == f]
        }
        assert len(differ) <= small.n_inexact


def _same_result(a, b):
    """Two LayerResults hold the same statistics and the same examples, bit for bit, in the same order."""
    for f in ("n_tokens",):
        assert getattr(a.stats, f) == getattr(b.stats, f)
    for f in ("n_active", "sum_digits", "max", "hist"):
        assert torch.equal(getattr(a.stats, f), getattr(b.stats, f)), f
    for x, y in ((a.top, b.top), (a.samples, b.samples)):
        for f in ("feature", "doc", "pos", "act", "key", "bin", "win"):
            assert torch.equal(getattr(x, f), getattr(y, f)), f
    assert torch.equal(a.sample_weight, b.sample_weight) and a.n_inexact == b.n_inexact


def test_blocks_of_the_corpus_merge_to_the_whole_in_any_order(tiny_model, setup):
    """Blocks of whole batches, collected apart and absorbed in reverse order, give exactly what one
    pass over the corpus gives: statistics, top and sampled examples, bin counts, ERA sums."""
    from dataclasses import replace

    from atlas.lens.activations import bin_edges, collect_block, finish, new_part, warmup_stats

    tset, tokens, _ = setup
    cfg = replace(CFG, per_bin_reservoir=5)  # small reservoirs: the merge must keep the right ones
    V = (tset[0].W_dec @ tset[1].W_enc).detach()
    src, dst = (V.abs() > 0.3).nonzero(as_tuple=True)

    def new_era():
        return EraAccumulator(torch.zeros_like(src), src, torch.ones_like(dst), dst, V[src, dst])

    whole_era = new_era()
    whole = collect(tiny_model, tset, tokens, cfg, era=whole_era)
    edges = {l: bin_edges(s, cfg) for l, s in warmup_stats(tiny_model, tset, tokens, [0, 1], cfg).items()}
    acc, era = {l: new_part(24, cfg) for l in (0, 1)}, new_era()
    for lo in reversed(range(0, 30, 14)):  # blocks [28, 30), [14, 28), [0, 14): two batches of 7
        block_era = new_era()
        parts = collect_block(
            tiny_model, tset, tokens, cfg, edges, torch.arange(lo, min(lo + 14, 30)), [0, 1], block_era
        )
        for l, p in parts.items():
            acc[l].absorb(p)
        era.absorb(block_era.digits, block_era.n_tokens)
    for l in (0, 1):
        _same_result(finish(acc[l], tokens, cfg), whole[l])
    assert torch.equal(era.digits, whole_era.digits) and era.n_tokens == whole_era.n_tokens


def test_one_forward_per_batch_for_every_layer(tiny_model, setup):
    """collect runs the warm-up batches and then each batch once, every layer in the same forward,
    stopped after the deepest layer it needs."""
    from dataclasses import replace

    tset, tokens, _ = setup
    seen = {"embed": [], "top_block": 0}
    tiny_model.add_hook("hook_embed", lambda x, hook: seen["embed"].append(x.shape[0]), is_permanent=True)
    tiny_model.add_hook(
        f"blocks.{tiny_model.cfg.n_layers - 1}.hook_resid_post",
        lambda x, hook: seen.__setitem__("top_block", seen["top_block"] + 1),
        is_permanent=True,
    )
    try:
        collect(tiny_model, tset, tokens, replace(CFG, bin_warmup_seqs=10), layers=[0])
        warm, main = seen["embed"][:2], seen["embed"][2:]
        assert warm == [7, 3] and main == [7, 7, 7, 7, 2]  # 10 warm-up sequences, then 30 once each
        assert seen["top_block"] == 0  # layer 0 alone: the last block never ran
        seen["embed"].clear()
        collect(tiny_model, tset, tokens, replace(CFG, bin_warmup_seqs=10))
        assert seen["embed"] == [7, 3, 7, 7, 7, 7, 2]  # both layers: the same forwards
        assert seen["top_block"] == 7 and tiny_model.cfg.n_layers == 2
    finally:
        tiny_model.reset_hooks(including_permanent=True)
