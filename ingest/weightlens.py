"""The WeightLens ingest job: every feature's weight-based description and every virtual-weight edge.

One shard (unit of work) per transcoder layer, run by the shared runner (ingest/shards.py). A
layer's descriptions inherit from earlier layers', so its shard depends on theirs and reads their
descriptions back from ``feature_tokens`` (side 'description') once they are loaded. Loading a
shard deletes that layer's previous WeightLens rows (feature_tokens, feature_weightlens, virtual
edges of this variant, weightlens explanations and source metrics) and inserts the new ones in one
transaction, so re-runs never duplicate rows and a killed run resumes at the first layer not done.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from time import perf_counter

import numpy as np
import pyarrow as pa

from atlas.config import WeightLensConfig, as_dict
from atlas.db import AtlasWriter, config_hash
from atlas.ids import fid_range, make_fids
from ingest.registry import register
from ingest.shards import LOCAL, Context, ExecutorConfig, Shard, layer_shard, run_job

JOB = "weightlens"
# Fields that change no result (where and in which blocks it is computed) stay out of the unit hash,
# so a run can resume on another device or with other block sizes.
_NOT_HASHED = {"device", "feature_block", "vocab_block", "upstream_block", "forward_batch_tokens"}


@dataclass
class WeightLensReport:
    coverage: dict[int, float] = field(default_factory=dict)  # layer -> share validated
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows written this run
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> seconds this run
    layer_seconds: dict[int, dict] = field(default_factory=dict)  # layer -> stage -> seconds
    layers_computed: list[int] = field(default_factory=list)
    layers_skipped: list[int] = field(default_factory=list)  # already done (resumed)
    run: object = None  # the runner's RunReport


def run_weightlens(
    model,
    tset,
    db_path,
    cfg: WeightLensConfig = WeightLensConfig(),
    *,
    model_id: str,
    model_spec: str | None = None,
    executor: ExecutorConfig = LOCAL,
) -> WeightLensReport:
    """Compute WeightLens for every layer of ``tset`` and load it into the atlas at ``db_path``."""
    from atlas.lens.weightlens import description_bos, inherit_from, resolve_bos, resolve_family

    tset.check_against(model)
    settings = {
        **as_dict(cfg),
        "family_resolved": resolve_family(cfg, model),
        "inherit_layers_resolved": sorted(inherit_from(cfg, model, tset.layer_ids)),
        "bos_resolved": resolve_bos(cfg, model),
        "description_bos_resolved": description_bos(cfg, model),
        "edge_scope_resolved": cfg.scope,
        "edge_sign_resolved": cfg.sign,
        "model_id": model_id,
        "set_name": tset.set_name,
    }
    report = WeightLensReport()
    with AtlasWriter(db_path) as w:
        sids = register(w, model, tset, model_id=model_id, model_spec=model_spec)
        job = WeightLensJob(settings, cfg, sids, [tc.layer for tc in tset], {tc.layer: tc.d_sae for tc in tset}, report)
        run = run_job(job, Context(model, tset), db_path, w, executor)
        done = set(job.loaded)
        report.layers_skipped = [l for l in job.layers if l not in done]
        report.layers_computed = [l for l in job.layers if l in done]
        for table, n in run.rows.items():
            report.rows[table] = report.rows.get(table, 0) + n
        report.seconds["db_load"] = run.seconds.get("load", 0.0)
        report.run = run
        report.coverage = {
            layer: value
            for layer, value in w.fetchall(
                "SELECT s.layer, m.value FROM source_metrics m JOIN sources s USING (sid) "
                "WHERE m.method = 'weightlens' AND m.metric = 'coverage' AND s.model_id = $m AND s.set_name = $s "
                "ORDER BY s.layer",
                {"m": model_id, "s": tset.set_name},
            )
        }
    return report


class WeightLensJob:
    """Shards: one per layer. A layer's description inherits from earlier layers' (the resolved
    inheritance set), so its shard depends on theirs and reads their descriptions from the atlas."""

    name = JOB

    def __init__(
        self,
        settings: dict,
        cfg: WeightLensConfig,
        sids: dict[int, int],
        layers: list[int],
        d_sae: dict[int, int],
        report: WeightLensReport,
    ):
        self.params, self.cfg, self.sids, self.layers, self.d_sae = settings, cfg, sids, layers, d_sae
        self.scope = f"{settings['model_id']}/{settings['set_name']}"
        self.chash = config_hash({k: v for k, v in settings.items() if k not in _NOT_HASHED})
        self.inherit = set(settings["inherit_layers_resolved"])
        self.report = report
        self.loaded: list[int] = []  # the layers loaded into the atlas, in order

    def plan(self, w) -> list[Shard]:
        return [
            layer_shard(
                l,
                self.chash,
                deps=tuple(f"layer-{d}" for d in self.layers if d < l and d in self.inherit),
                deletes=tuple(layer_deletes(self.sids[l], self.cfg.edge_variant)),
            )
            for l in self.layers
        ]

    def inputs(self, w, shard: Shard) -> dict:
        """Descriptions D of the earlier layers this layer inherits from (already in the atlas)."""
        deps = [int(u.removeprefix("layer-")) for u in shard.deps]
        return {
            l: load_description(w, self.sids[l], self.d_sae[l], strings=self.cfg.profile == "reference") for l in deps
        }

    def started(self, w, run_id: str) -> None:
        """The run's row records the profile (ingest_runs.profile, migration 0003)."""
        w.execute("UPDATE ingest_runs SET profile = $p WHERE run_id = $r", {"p": self.cfg.profile, "r": run_id})

    def compute(self, ctx, shard: Shard, descriptions: dict) -> tuple[dict, dict]:
        from atlas.lens.weightlens import weightlens_layer

        res = weightlens_layer(ctx.model, ctx.tset, shard.key["layer"], self.cfg, descriptions)
        t0 = perf_counter()
        tables = layer_tables(ctx.model, res, self.sids, "", self.cfg, self.params)
        return tables, {"seconds": {**res.seconds, "arrow_tables": perf_counter() - t0}}

    def account(self, shard: Shard, info: dict) -> None:
        layer = shard.key["layer"]
        self.loaded.append(layer)
        self.report.layer_seconds[layer] = dict(info["seconds"])
        for stage, s in info["seconds"].items():
            self.report.seconds[stage] = self.report.seconds.get(stage, 0) + s


def layer_deletes(sid: int, variant: str) -> list[tuple[str, dict]]:
    r = fid_range(sid)
    return [
        (f"DELETE FROM feature_tokens WHERE {r.sql()}", r.params()),
        (f"DELETE FROM feature_weightlens WHERE {r.sql()}", r.params()),
        (
            f"DELETE FROM edges WHERE kind = 'virtual' AND variant = $v AND {r.sql('dst_fid')}",
            {**r.params(), "v": variant},
        ),
        (f"DELETE FROM explanations WHERE method = 'weightlens' AND {r.sql()}", r.params()),
        ("DELETE FROM source_metrics WHERE sid = $sid AND method = 'weightlens'", {"sid": sid}),
    ]


def load_description(w: AtlasWriter, sid: int, d_sae: int, strings: bool = False):
    """D(l, i) of a layer already in the atlas, from feature_tokens side 'description' (with its
    strings, which the reference profile inherits, when ``strings``)."""
    from atlas.lens.weightlens import Ragged

    r = fid_range(sid)
    got = w.execute(
        "SELECT fid_index(fid) AS feat, token_id, token FROM feature_tokens WHERE side = 'description' "
        f"AND {r.sql()} ORDER BY fid, rank",
        r.params(),
    ).fetchnumpy()
    return Ragged(
        np.asarray(got["feat"], dtype=np.int64),
        np.asarray(got["token_id"], dtype=np.int64),
        d_sae,
        strings=np.asarray(got["token"], dtype=object) if strings else None,
    )


def _token_rows(model, sid: int, side: str, t: dict, run_id: str, validated=None) -> pa.Table:
    from atlas.models import token_strings

    if t.get("strings") is not None:  # the reference's description: its own strings
        text = pa.array(list(t["strings"]), pa.string())
    else:
        uniq, inv = np.unique(t["token"], return_inverse=True)
        strings = np.array(token_strings(model, uniq) if len(uniq) else [], dtype=object)
        text = pa.array(strings[inv] if len(uniq) else [], pa.string())
    cols = {
        "fid": make_fids(sid, t["feat"]),
        "side": pa.array([side] * len(t["feat"]), pa.string()),
        "rank": t["rank"].astype(np.int32),
        "token_id": t["token"].astype(np.int32),
        "token": text,
        "score": t.get("score", np.full(len(t["feat"]), np.nan)),
        "zscore": t.get("z", np.full(len(t["feat"]), np.nan)),
        "validated": pa.array(validated, pa.bool_()) if validated is not None else pa.nulls(len(t["feat"]), pa.bool_()),
        "run_id": pa.array([run_id] * len(t["feat"]), pa.string()),
    }
    table = pa.table(cols)
    if "score" not in t:  # description rows have no score
        table = table.drop(["score", "zscore"])
    return table


def _feature_tokens(model, res, sid: int, run_id: str) -> pa.Table:
    """feature_tokens: the input, negative input, promoted, suppressed and description tokens of the layer."""
    d = res.description
    desc_rank = np.arange(len(d.feat)) - d.offsets[d.feat]  # position inside D(l, i)
    return pa.concat_tables(
        [
            _token_rows(model, sid, "input", res.inputs, run_id, validated=res.inputs["validated"]),
            _token_rows(model, sid, "input_negative", res.negative_inputs, run_id),
            _token_rows(model, sid, "promoted", res.promoted, run_id),
            _token_rows(model, sid, "suppressed", res.suppressed, run_id),
            _token_rows(
                model,
                sid,
                "description",
                {"feat": d.feat, "token": d.token, "rank": desc_rank, "strings": d.strings},
                run_id,
            ),
        ],
        promote_options="default",
    )


def _feature_weightlens(res, sid: int, run_id: str) -> pa.Table:
    """feature_weightlens: one row per feature of the layer (flags, counts, post-processed description)."""
    F = res.d_sae
    return pa.table(
        {
            "fid": make_fids(sid, np.arange(F)),
            "validated": res.validated,
            "validation_soft": pa.array(res.validation_soft, pa.float64(), from_pandas=True),
            "n_input_tokens": res.n_input_tokens.astype(np.int32),
            "n_upstream": res.n_upstream.astype(np.int32),
            "n_description_tokens": res.description.lengths().astype(np.int32),
            "description": pa.array(res.terms, pa.list_(pa.string())),
            "run_id": pa.array([run_id] * F, pa.string()),
        }
    )


def _virtual_edges(res, sids: dict[int, int], run_id: str, variant: str) -> pa.Table:
    """edges: the layer's kept virtual-weight links (kind 'virtual', ``variant``)."""
    e = res.edges
    src_sid = np.zeros(len(e["src_layer"]), dtype=np.int64)
    for layer, s in sids.items():
        src_sid[e["src_layer"] == layer] = s
    n = len(e["dst"])
    return pa.table(
        {
            "src_fid": make_fids(src_sid, e["src_idx"]),
            "dst_fid": make_fids(sids[res.layer], e["dst"]),
            "kind": pa.array(["virtual"] * n, pa.string()),
            "variant": pa.array([variant] * n, pa.string()),
            "weight": e["weight"],
            "rel_contribution": e["rel"],
            "run_id": pa.array([run_id] * n, pa.string()),
        }
    )


def _explanations(res, sid: int, run_id: str, params: str) -> pa.Table:
    """explanations: method 'weightlens', one per validated feature with a non-empty description."""
    described = np.nonzero(res.validated & np.array([len(t) > 0 for t in res.terms], dtype=bool))[0]
    return pa.table(
        {
            "fid": make_fids(sid, described),
            "method": pa.array(["weightlens"] * len(described), pa.string()),
            "text": pa.array([", ".join(res.terms[i]) for i in described], pa.string()),
            "tokens": pa.array([res.terms[i] for i in described], pa.list_(pa.string())),
            "params": pa.array([params] * len(described), pa.string()),
            "run_id": pa.array([run_id] * len(described), pa.string()),
        }
    )


_METRICS_SCHEMA = pa.schema(
    [
        ("sid", pa.int32()),
        ("method", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("data", pa.string()),
        ("params", pa.string()),
        ("run_id", pa.string()),
        ("profile", pa.string()),
    ]
)


def _coverage_metric(res, sid: int, run_id: str, params: str, profile: str) -> pa.Table:
    """source_metrics: the layer's WeightLens coverage."""
    # coverage = share of *validated* features (docs/sql.md, coverage_per_layer, defines the three counts)
    coverage = float(res.validated.mean()) if res.d_sae else 0.0
    return pa.table(
        {
            "sid": [sid],
            "method": ["weightlens"],
            "metric": ["coverage"],
            "value": [coverage],
            "data": [None],
            "params": [params],
            "run_id": [run_id],
            "profile": [profile],
        },
        schema=_METRICS_SCHEMA,
    )


def layer_tables(model, res, sids: dict[int, int], run_id: str, cfg: WeightLensConfig, settings: dict) -> dict:
    """The rows of one layer: feature_tokens, feature_weightlens, edges, explanations, source_metrics."""
    sid = sids[res.layer]
    params = json.dumps(settings, default=str)
    return {
        "feature_tokens": _feature_tokens(model, res, sid, run_id),
        "feature_weightlens": _feature_weightlens(res, sid, run_id),
        "edges": _virtual_edges(res, sids, run_id, cfg.edge_variant),
        "explanations": _explanations(res, sid, run_id, params),
        "source_metrics": _coverage_metric(res, sid, run_id, params, cfg.profile),
    }
