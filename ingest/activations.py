"""Job: activation statistics, examples and ERA/TWERA edges over a corpus (docs/method.md §3, §4.1).

Shards (run by the shared runner, ingest/shards.py, as parts of the atlas's units):
1. ``warmup-0-W``: one forward per batch of the first ``bin_warmup_seqs`` sequences, every layer:
   the statistics the bin edges come from (atlas/lens/activations.py, step 2);
2. ``seqs-LO-HI``: a block of ``seqs_per_shard`` sequences (whole batches), one forward per batch for
   every layer, stopped after the deepest: each layer's mergeable state (statistics as integers,
   top and sample candidates with windows, bin counts) and the ERA sums of every virtual edge.
The driver folds the parts in as they are loaded (exactly: atlas/lens/exact.py) and writes one unit
per transcoder layer (``layer-{l}``): ``feature_stats`` rows for every feature, ``examples`` (top and
bin-weighted samples, with windows) and ``edges`` of kind 'era' and 'twera' next to the stored
'virtual' edges that end in the layer (same src, dst and variant). The units are the same whatever
``seqs_per_shard`` is and whichever worker finishes first.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pyarrow as pa

from atlas import db
from atlas.config import ActivationsConfig
from atlas.errors import AtlasError
from atlas.ids import fid_range, make_fids, split_fids
from atlas.progress import progress
from ingest.inputs import tokens_fingerprint
from ingest.registry import register
from ingest.shards import LOCAL, Context, ExecutorConfig, Shard, run_job

if TYPE_CHECKING:
    import torch

    from atlas.lens.era import EraAccumulator, EraResult

JOB = "activations"


def _unit(layer: int) -> str:
    return f"layer-{layer}"


def virtual_edges(writer, sids: dict[int, int], dst_layers: list[int], variant: str | None):
    """The stored 'virtual' edges between this set's layers that end in dst_layers, as numpy columns."""
    e = writer.execute(
        "SELECT src_fid, dst_fid, variant, weight FROM edges WHERE kind = 'virtual' "
        "AND ($variant IS NULL OR variant = $variant) AND list_contains($src, fid_source(src_fid)) "
        "AND list_contains($dst, fid_source(dst_fid)) ORDER BY src_fid, dst_fid, variant",
        {"variant": variant, "src": list(sids.values()), "dst": [sids[l] for l in dst_layers]},
    ).fetchnumpy()
    if len(e["src_fid"]) == 0:
        return None
    layer_of = np.zeros(max(sids.values()) + 1, dtype=np.int64)
    layer_of[list(sids.values())] = list(sids.keys())
    src, dst = np.asarray(e["src_fid"]), np.asarray(e["dst_fid"])
    s, d = split_fids(src), split_fids(dst)
    return dict(
        src_fid=src,
        dst_fid=dst,
        variant=np.asarray(e["variant"]),
        weight=np.asarray(e["weight"], dtype=float),
        src_layer=layer_of[s.sid],
        dst_layer=layer_of[d.sid],
        src_idx=s.idx,
        dst_idx=d.idx,
    )


def stats_table(res, sid: int, cfg: ActivationsConfig, run_id: str) -> pa.Table:
    s = res.stats
    n_act = s.n_active.numpy()
    active = n_act > 0
    q = res.quantiles.numpy()
    hist = s.hist.view(s.d_sae, cfg.hist_bins).numpy()
    return pa.table(
        {
            "fid": make_fids(sid, np.arange(s.d_sae)),
            "n_tokens": np.full(s.d_sae, s.n_tokens, dtype=np.int64),
            "n_active": n_act,
            "frequency": n_act / max(s.n_tokens, 1),
            "max_act": pa.array(np.where(active, s.max.numpy(), np.nan), from_pandas=True),
            "mean_act": pa.array(np.where(active, s.sum.numpy() / np.maximum(n_act, 1), np.nan), from_pandas=True),
            "quantiles": [list(map(float, q[i])) if active[i] else None for i in range(s.d_sae)],
            "quantile_levels": [list(cfg.quantile_levels)] * s.d_sae,
            "hist_edges": [s.hist_edges().tolist()] * s.d_sae,
            "hist_counts": list(hist),
            "run_id": [run_id] * s.d_sae,
        }
    )


def _lists(values: np.ndarray, valid: np.ndarray) -> pa.ListArray:
    """Ragged rows of values[valid] as one arrow list column (no Python loop over examples)."""
    offsets = np.concatenate([[0], np.cumsum(valid.sum(1))]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values[valid]))


def examples_table(model, res, sid: int, cfg: ActivationsConfig, run_id: str) -> pa.Table:
    from atlas.models import token_strings

    parts = []
    for kind, c, weight in (("top", res.top, None), ("quantile", res.samples, res.sample_weight)):
        start, toks, acts = (t.numpy() for t in res.windows["samples" if kind == "quantile" else "top"])
        valid = toks >= 0
        uniq, inv = np.unique(toks[valid], return_inverse=True)
        strs = np.array(token_strings(model, uniq), dtype=object)
        n = len(c)
        parts.append(
            pa.table(
                {
                    "fid": make_fids(sid, c.feature.numpy()),
                    "kind": [kind] * n,
                    "bin": pa.array(c.bin.numpy() if kind == "quantile" else np.full(n, None), type=pa.int32()),
                    "sample_weight": pa.array(
                        weight.numpy() if weight is not None else np.full(n, None), type=pa.float64()
                    ),
                    "doc_id": c.doc.numpy(),
                    "pos": c.pos.numpy().astype(np.int32),
                    "activation": c.act.numpy().astype(float),
                    "window_start": start.astype(np.int32),
                    "tokens": _lists(toks.astype(np.int32), valid),
                    "token_strs": pa.ListArray.from_arrays(
                        _lists(toks, valid).offsets, pa.array(strs[inv], type=pa.string())
                    ),
                    "acts": _lists(acts.astype(np.float32), valid),
                    "run_id": [run_id] * n,
                }
            )
        )
    table = pa.concat_tables(parts)
    return table.append_column("example_id", pa.array(example_ids(table.column("fid").to_numpy()), type=pa.int64()))


EXAMPLES_PER_FEATURE = 1024  # example_id = fid * 1024 + the example's ordinal among its feature's examples


def example_ids(fid: np.ndarray) -> np.ndarray:
    """Ids from content, not a sequence: fid * EXAMPLES_PER_FEATURE + the ordinal of the row among
    its feature's rows (top examples first, then the samples, in the stores' deterministic order).
    A unit rewritten after an interruption gets the ids an uninterrupted run gives it."""
    order = np.argsort(fid, kind="stable")
    sorted_fid = fid[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_fid)) + 1]
    first = np.repeat(starts, np.diff(np.r_[starts, len(fid)]))
    ordinal = np.empty(len(fid), dtype=np.int64)
    ordinal[order] = np.arange(len(fid)) - first
    if len(fid) and (ordinal.max() >= EXAMPLES_PER_FEATURE or int(fid.max()) >= (1 << 53)):
        raise AtlasError(
            f"more than {EXAMPLES_PER_FEATURE} examples of one feature (n_top + n_samples), or a "
            f"source id over 2**21: example ids would collide"
        )
    return fid.astype(np.int64) * EXAMPLES_PER_FEATURE + ordinal


def edges_table(edges: dict, mask: np.ndarray, era, run_id: str) -> pa.Table:
    n = int(mask.sum())
    cols = {k: edges[k][mask] for k in ("src_fid", "dst_fid", "variant")}
    return pa.table(
        {
            "src_fid": np.concatenate([cols["src_fid"]] * 2),
            "dst_fid": np.concatenate([cols["dst_fid"]] * 2),
            "kind": ["era"] * n + ["twera"] * n,
            "variant": np.concatenate([cols["variant"]] * 2),
            "weight": np.concatenate([era.era.numpy()[mask], era.twera.numpy()[mask]]),
            "run_id": [run_id] * (2 * n),
        }
    )


def run(
    db_path,
    model,
    tset,
    tokens,
    cfg: ActivationsConfig = ActivationsConfig(),
    *,
    model_id: str,
    model_spec: str,
    executor: ExecutorConfig = LOCAL,
) -> dict:
    """Collect and store activation statistics, examples and ERA/TWERA; returns a small report."""
    from atlas.lens.activations import check_tokens

    tset.check_against(model)
    tokens = check_tokens(tokens, model)
    config = {
        **{k: v for k, v in asdict(cfg).items() if k != "seqs_per_shard"},
        "corpus": tokens_fingerprint(tokens),
        "n_docs": tokens.shape[0],
        "set_name": tset.set_name,
    }
    with db.AtlasWriter(db_path) as w:
        sids = register(w, model, tset, model_id=model_id, model_spec=model_spec)
        job = ActivationsJob(
            config, cfg, sids, {l: tset[l].d_sae for l in tset.layer_ids}, f"{model_id}/{tset.set_name}"
        )
        run = run_job(job, Context(model, tset, tokens), db_path, w, executor)
    return {
        "layers_done_before": run.done_before,
        "layers_written": run.written,
        "era_edges": job.era_edges,
        "inexact_sample_features": job.inexact,
        "shards": run.summary(),
    }


def block_ranges(n_docs: int, cfg: ActivationsConfig) -> list[tuple[int, int]]:
    """[lo, hi) sequence ranges of the blocks: ``seqs_per_shard`` rounded up to whole batches, so a
    block's batches are the whole corpus's (the same forwards, the same float sums)."""
    size = -(-max(1, cfg.seqs_per_shard) // cfg.batch_size) * cfg.batch_size
    return [(lo, min(lo + size, n_docs)) for lo in range(0, n_docs, size)]


class BlockInputs(NamedTuple):
    """What a block shard computes with, besides the context."""

    bin_edges: dict  # layer -> [d_sae, n_bins + 1] bin edges, from the loaded warm-up
    vedges: dict | None  # the virtual edges (``virtual_edges``, every layer), None without ERA


class PartStats(NamedTuple):
    """One layer's row of a part's stats table."""

    stats: Any  # LayerStats of the part's sequences
    bin_counts: Any  # [d_sae * n_bins] int64 (empty for the warm-up)


class ActivationsJob:
    """Parts: the warm-up, then blocks of sequences for every layer; outputs: one unit per layer."""

    name = JOB

    def __init__(self, config: dict, cfg: ActivationsConfig, sids: dict[int, int], d_sae: dict[int, int], scope: str):
        self.params, self.cfg, self.sids, self.d_sae, self.scope = config, cfg, sids, d_sae, scope
        self.layers = sorted(d_sae)
        self.chash = db.config_hash(config)
        self.era_edges = self.inexact = 0
        self.vedges: dict | None = None  # the virtual edges (``virtual_edges``, set by plan), None without ERA
        self.bin_edges: dict[int, torch.Tensor] | None = None  # layer -> bin edges, once the warm-up is taken
        self.era: EraAccumulator | None = None  # the blocks' ERA sums, folded in (with ERA only)
        self._era_result: EraResult | None = None  # ERA/TWERA of every edge, once the first output needs it
        self.acc: dict = {}  # layer -> LayerPart, the parts folded in

    def plan(self, w) -> list[Shard]:
        """The warm-up part, then the blocks (each waits for the warm-up's bin edges)."""
        n = self.params["n_docs"]
        self.vedges = virtual_edges(w, self.sids, self.layers, self.cfg.edge_variant) if self.cfg.era else None
        warm = Shard(
            unit=f"warmup-0-{min(n, max(1, self.cfg.bin_warmup_seqs))}", key={"kind": "warmup"}, chash=self.chash
        )
        bchash = db.config_hash({"config": self.chash, "edges": _edges_fingerprint(self.vedges)})
        return [warm] + [
            Shard(unit=f"seqs-{lo}-{hi}", key={"kind": "block", "lo": lo, "hi": hi}, chash=bchash, deps=(warm.unit,))
            for lo, hi in block_ranges(n, self.cfg)
        ]

    def outputs(self, w) -> list[Shard]:
        out = []
        for l in self.layers:
            rng = fid_range(self.sids[l])
            out.append(
                Shard(
                    unit=_unit(l),
                    key={"layer": l},
                    chash=self.chash,
                    deletes=(
                        (f"DELETE FROM feature_stats WHERE {rng.sql()}", rng.params()),
                        (f"DELETE FROM examples WHERE {rng.sql()}", rng.params()),
                        (f"DELETE FROM edges WHERE kind IN ('era', 'twera') AND {rng.sql('dst_fid')}", rng.params()),
                    ),
                )
            )
        return out

    def inputs(self, w, shard: Shard) -> BlockInputs | None:
        """A block's: the bin edges per layer (from the loaded warm-up) and the virtual edges."""
        if shard.key["kind"] == "warmup":
            return None
        if self.bin_edges is None:
            raise AtlasError(f"{shard.unit}: the warm-up part is not loaded yet")
        return BlockInputs(self.bin_edges, self.vedges)

    def compute(self, ctx, shard: Shard, inputs: BlockInputs | None) -> tuple[dict, dict]:
        import torch

        from atlas.lens.activations import collect_block, warmup_stats

        if shard.key["kind"] == "warmup":
            stats = warmup_stats(ctx.model, ctx.tset, ctx.tokens, self.layers, self.cfg)
            return {"stats": stats_part_table(stats)}, {}
        assert inputs is not None  # inputs() gives None only for the warm-up
        era = _era_accumulator(inputs.vedges)
        lo, hi = shard.key["lo"], shard.key["hi"]
        parts = collect_block(
            ctx.model,
            ctx.tset,
            ctx.tokens,
            self.cfg,
            inputs.bin_edges,
            torch.arange(lo, hi),
            self.layers,
            era,
            lambda desc, total: progress(f"{desc} sequences {lo}-{hi}", total, "seq"),
        )
        tables = {
            "stats": stats_part_table(
                {l: p.stats for l, p in parts.items()}, {l: p.res.counts for l, p in parts.items()}
            ),
            "candidates": candidates_table(parts),
        }
        if era is not None:
            tables["era"] = pa.table({"n_tokens": [era.n_tokens], "digits": _large_lists([era.digits.numpy().ravel()])})
        return tables, {"sequences": hi - lo}

    def take(self, shard: Shard, tables: dict) -> None:
        """Fold a loaded part in: the warm-up gives the bin edges, a block is absorbed per layer."""
        import torch

        from atlas.lens.activations import bin_edges, new_part

        stats = read_stats(tables["stats"], self.cfg)
        if shard.key["kind"] == "warmup":
            self.bin_edges = {l: bin_edges(row.stats, self.cfg) for l, row in stats.items()}
            return
        cands = read_candidates(tables["candidates"])
        for l, row in stats.items():
            acc = self.acc.setdefault(l, new_part(self.d_sae[l], self.cfg))
            acc.stats.absorb(row.stats)
            acc.top.absorb(lambda c: c.feature, cands.get((l, 0), _empty(self.cfg)))
            acc.res.absorb_counts(row.bin_counts, cands.get((l, 1), _empty(self.cfg)))
        if "era" in tables:
            if self.era is None:
                self.era = _era_accumulator(self.vedges)
            if self.era is None:  # a block wrote ERA sums, so plan() found virtual edges
                raise AtlasError(f"{shard.unit}: a part with ERA sums, but this run has no virtual edges")
            row = tables["era"]
            digits = torch.from_numpy(_rows(row.column("digits"))[0].copy()).view(self.era.digits.shape)
            self.era.absorb(digits, int(row.column("n_tokens")[0].as_py()))

    def merge(self, ctx, out: Shard) -> dict:
        """A layer's unit from the folded parts: statistics, examples, ERA/TWERA of its incoming edges."""
        from atlas.lens.activations import finish

        l = out.key["layer"]
        sid = self.sids[l]
        res = finish(self.acc.pop(l), ctx.tokens, self.cfg)
        self.inexact += int(res.n_inexact)
        tables = {
            "feature_stats": stats_table(res, sid, self.cfg, ""),
            "examples": examples_table(ctx.model, res, sid, self.cfg, ""),
        }
        if self.vedges is not None and (mask := self.vedges["dst_layer"] == l).any():  # edges into layer l
            if self._era_result is None:
                if self.era is None:
                    raise AtlasError(f"{out.unit}: ERA is asked for, but no part's ERA sums were loaded")
                self._era_result = self.era.result()
            tables["edges"] = edges_table(self.vedges, mask, self._era_result, "")
            self.era_edges += int(mask.sum())
        return tables

    def account(self, shard: Shard, info: dict) -> None:
        pass


# ---- a part's tables (Parquet in the shard directory, never in the atlas) ------------------------------


def _large_lists(arrays: list[np.ndarray]) -> pa.LargeListArray:
    """One list row per array."""
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays])]).astype(np.int64)
    values = np.concatenate(arrays) if arrays else np.zeros(0)
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values))


def _rows(col) -> list[np.ndarray]:
    """The rows of a list column as numpy arrays."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    off, values = col.offsets.to_numpy(), col.values.to_numpy(zero_copy_only=False)
    return [values[off[i] : off[i + 1]] for i in range(len(col))]


def stats_part_table(stats: dict, counts: dict | None = None) -> pa.Table:
    """One row per layer: its LayerStats (sums as integer digits) and, for a block, its bin counts."""
    layers = sorted(stats)

    def col(f):
        return _large_lists([f(stats[l]) for l in layers])

    return pa.table(
        {
            "layer": pa.array(layers, pa.int32()),
            "n_tokens": pa.array([stats[l].n_tokens for l in layers], pa.int64()),
            "n_active": col(lambda s: s.n_active.numpy()),
            "sum_digits": col(lambda s: s.sum_digits.numpy().ravel()),
            "max": col(lambda s: s.max.numpy()),
            "hist": col(lambda s: s.hist.numpy()),
            "bin_counts": _large_lists([counts[l].numpy() if counts else np.zeros(0, np.int64) for l in layers]),
        }
    )


def read_stats(table: pa.Table, cfg: ActivationsConfig) -> dict[int, PartStats]:
    """layer -> its row of a part's stats table."""
    import torch

    from atlas.lens.activations import LayerStats

    cols = {c: _rows(table.column(c)) for c in ("n_active", "sum_digits", "max", "hist", "bin_counts")}
    out = {}
    for i, l in enumerate(table.column("layer").to_pylist()):
        s = LayerStats(len(cols["n_active"][i]), cfg)
        s.n_tokens = int(table.column("n_tokens")[i].as_py())
        s.n_active = torch.from_numpy(cols["n_active"][i].copy())
        s.sum_digits = torch.from_numpy(cols["sum_digits"][i].copy()).view(3, -1)
        s.max = torch.from_numpy(cols["max"][i].copy())
        s.hist = torch.from_numpy(cols["hist"][i].copy())
        out[l] = PartStats(s, torch.from_numpy(cols["bin_counts"][i].copy()))
    return out


_CAND = ("feature", "doc", "pos", "act", "key", "bin")


def candidates_table(parts: dict) -> pa.Table:
    """Every layer's kept candidates: kind 0 top, 1 sample; win a fixed-size list of activations."""
    from atlas.lens.sampling import Candidates

    chunks = [(l, k, c) for l, p in sorted(parts.items()) for k, c in ((0, p.top.result), (1, p.res.kept))]
    if not chunks:
        raise ValueError("candidates_table: no layer's part to write")
    c = Candidates.cat([c for _, _, c in chunks])
    cols = {f: getattr(c, f).numpy() for f in _CAND}
    width = c.win.shape[1]
    return pa.table(
        {
            "layer": pa.array(np.concatenate([np.full(len(x), l, np.int32) for l, _, x in chunks])),
            "kind": pa.array(np.concatenate([np.full(len(x), k, np.int8) for _, k, x in chunks])),
            **cols,
            "win": pa.FixedSizeListArray.from_arrays(pa.array(c.win.numpy().ravel().astype(np.float32)), width),
        }
    )


def read_candidates(table: pa.Table) -> dict:
    """(layer, kind) -> Candidates of a part's candidates table."""
    import torch

    from atlas.lens.sampling import Candidates

    win = table.column("win").combine_chunks()
    wins = win.values.to_numpy().reshape(len(table), win.type.list_size)
    cols = {c: table.column(c).to_numpy() for c in ("layer", "kind", *_CAND)}
    out = {}
    for l, k in sorted(set(zip(cols["layer"].tolist(), cols["kind"].tolist()))):
        m = (cols["layer"] == l) & (cols["kind"] == k)
        out[(l, k)] = Candidates(
            **{f: torch.from_numpy(cols[f][m].copy()) for f in _CAND}, win=torch.from_numpy(wins[m].copy())
        )
    return out


def _empty(cfg: ActivationsConfig):
    from atlas.lens.sampling import Candidates

    return Candidates.empty(cfg.window_before + cfg.window_after + 1)


def _era_accumulator(edges: dict | None) -> EraAccumulator | None:
    from atlas.lens.era import EraAccumulator

    if edges is None:
        return None
    return EraAccumulator(edges["src_layer"], edges["src_idx"], edges["dst_layer"], edges["dst_idx"], edges["weight"])


def _edges_fingerprint(edges) -> str:
    """What a block's ERA sums are indexed by: the virtual edges, in order, and their weights."""
    if edges is None:
        return "none"
    h = hashlib.sha256()
    for k in ("src_fid", "dst_fid", "weight"):
        h.update(np.ascontiguousarray(edges[k]).tobytes())
    h.update("\0".join(map(str, edges["variant"])).encode())
    return h.hexdigest()[:16]
