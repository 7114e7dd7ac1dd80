"""Job: activation statistics, examples and ERA/TWERA edges over a corpus (docs/method.md §3, §4.1).

Shards: one per transcoder layer (``layer-{l}``), done for one configuration and one corpus, run
by the shared runner (ingest/shards.py). Each shard collects its layer in its own streaming pass
(with the source layers its virtual edges read) and writes its unit: ``feature_stats`` rows for every
feature, ``examples`` (top and bin-weighted samples, with windows) and ``edges`` of kind 'era' and
'twera' next to the stored 'virtual' edges that end in the layer (same src, dst and variant).
"""

from __future__ import annotations

from dataclasses import asdict

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

JOB = "activations"


def _unit(layer: int) -> str:
    return f"layer-{layer}"


def virtual_edges(writer, sids: dict[int, int], dst_layers: list[int], variant: str | None):
    """The stored 'virtual' edges between this set's layers that end in dst_layers, as numpy columns."""
    e = writer.execute(
        "SELECT src_fid, dst_fid, variant, weight FROM edges WHERE kind = 'virtual' "
        "AND ($variant IS NULL OR variant = $variant) AND list_contains($src, fid_source(src_fid)) "
        "AND list_contains($dst, fid_source(dst_fid))",
        {"variant": variant, "src": list(sids.values()), "dst": [sids[l] for l in dst_layers]}).fetchnumpy()
    if len(e["src_fid"]) == 0:
        return None
    layer_of = np.zeros(max(sids.values()) + 1, dtype=np.int64)
    layer_of[list(sids.values())] = list(sids.keys())
    src, dst = np.asarray(e["src_fid"]), np.asarray(e["dst_fid"])
    s, d = split_fids(src), split_fids(dst)
    return dict(src_fid=src, dst_fid=dst, variant=np.asarray(e["variant"]), weight=np.asarray(e["weight"], dtype=float),
                src_layer=layer_of[s.sid], dst_layer=layer_of[d.sid], src_idx=s.idx, dst_idx=d.idx)


def stats_table(res, sid: int, cfg: ActivationsConfig, run_id: str) -> pa.Table:
    s = res.stats
    n_act = s.n_active.numpy()
    active = n_act > 0
    q = res.quantiles.numpy()
    hist = s.hist.view(s.d_sae, cfg.hist_bins).numpy()
    return pa.table({
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
    })


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
        parts.append(pa.table({
            "fid": make_fids(sid, c.feature.numpy()),
            "kind": [kind] * n,
            "bin": pa.array(c.bin.numpy() if kind == "quantile" else np.full(n, None), type=pa.int32()),
            "sample_weight": pa.array(weight.numpy() if weight is not None else np.full(n, None), type=pa.float64()),
            "doc_id": c.doc.numpy(), "pos": c.pos.numpy().astype(np.int32), "activation": c.act.numpy().astype(float),
            "window_start": start.astype(np.int32),
            "tokens": _lists(toks.astype(np.int32), valid),
            "token_strs": pa.ListArray.from_arrays(_lists(toks, valid).offsets, pa.array(strs[inv], type=pa.string())),
            "acts": _lists(acts.astype(np.float32), valid),
            "run_id": [run_id] * n,
        }))
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
        raise AtlasError(f"more than {EXAMPLES_PER_FEATURE} examples of one feature (n_top + n_samples), or a "
                         f"source id over 2**21: example ids would collide")
    return fid.astype(np.int64) * EXAMPLES_PER_FEATURE + ordinal


def edges_table(edges: dict, mask: np.ndarray, era, run_id: str) -> pa.Table:
    n = int(mask.sum())
    cols = {k: edges[k][mask] for k in ("src_fid", "dst_fid", "variant")}
    return pa.table({
        "src_fid": np.concatenate([cols["src_fid"]] * 2), "dst_fid": np.concatenate([cols["dst_fid"]] * 2),
        "kind": ["era"] * n + ["twera"] * n, "variant": np.concatenate([cols["variant"]] * 2),
        "weight": np.concatenate([era.era.numpy()[mask], era.twera.numpy()[mask]]),
        "run_id": [run_id] * (2 * n),
    })


def run(db_path, model, tset, tokens, cfg: ActivationsConfig = ActivationsConfig(), *, model_id: str,
        model_spec: str, executor: ExecutorConfig = LOCAL) -> dict:
    """Collect and store activation statistics, examples and ERA/TWERA; returns a small report."""
    from atlas.lens.activations import check_tokens

    tset.check_against(model)
    tokens = check_tokens(tokens, model)
    config = {**asdict(cfg), "corpus": tokens_fingerprint(tokens), "n_docs": tokens.shape[0],
              "set_name": tset.set_name}
    with db.AtlasWriter(db_path) as w:
        sids = register(w, model, tset, model_id=model_id, model_spec=model_spec)
        job = ActivationsJob(config, cfg, sids, tset.layer_ids, f"{model_id}/{tset.set_name}")
        run = run_job(job, Context(model, tset, tokens), db_path, w, executor)
    return {"layers_done_before": run.done_before, "layers_written": run.loaded, "era_edges": job.era_edges,
            "inexact_sample_features": job.inexact, "shards": run.summary()}


class ActivationsJob:
    """Shards: one per layer. Each collects its layer in its own pass over the corpus (the ERA
    source layers it reads run alongside), so no state is shared between shards."""

    name = JOB

    def __init__(self, config: dict, cfg: ActivationsConfig, sids: dict[int, int], layers: list[int], scope: str):
        self.params, self.cfg, self.sids, self.layers, self.scope = config, cfg, sids, layers, scope
        self.chash = db.config_hash(config)
        self.era_edges = self.inexact = 0

    def plan(self, w) -> list[Shard]:
        out = []
        for l in self.layers:
            rng = fid_range(self.sids[l])
            out.append(Shard(unit=_unit(l), key={"layer": l}, chash=self.chash, deletes=(
                (f"DELETE FROM feature_stats WHERE {rng.sql()}", rng.params()),
                (f"DELETE FROM examples WHERE {rng.sql()}", rng.params()),
                (f"DELETE FROM edges WHERE kind IN ('era', 'twera') AND {rng.sql('dst_fid')}", rng.params()))))
        return out

    def inputs(self, w, shard: Shard):
        """The stored virtual edges that end in the shard's layer (ERA/TWERA go next to them)."""
        return virtual_edges(w, self.sids, [shard.key["layer"]], self.cfg.edge_variant) if self.cfg.era else None

    def compute(self, ctx, shard: Shard, edges) -> tuple[dict, dict]:
        from atlas.lens.activations import collect
        from atlas.lens.era import EraAccumulator

        l, sid = shard.key["layer"], self.sids[shard.key["layer"]]
        era = (EraAccumulator(edges["src_layer"], edges["src_idx"], edges["dst_layer"], edges["dst_idx"],
                              edges["weight"]) if edges is not None else None)
        res = collect(ctx.model, ctx.tset, ctx.tokens, self.cfg, layers=[l], era=era,
                      progress=lambda desc, total: progress(f"{desc} layer {l}", total, "seq"))[l]
        tables = {"feature_stats": stats_table(res, sid, self.cfg, ""),
                  "examples": examples_table(ctx.model, res, sid, self.cfg, "")}
        n_era = 0
        if era is not None:
            mask = np.ones(len(edges["dst_fid"]), dtype=bool)
            tables["edges"] = edges_table(edges, mask, era.result(), "")
            n_era = int(mask.sum())
        return tables, {"era_edges": n_era, "inexact_sample_features": int(res.n_inexact)}

    def account(self, shard: Shard, info: dict) -> None:
        self.era_edges += info["era_edges"]
        self.inexact += info["inexact_sample_features"]
