"""Files for the viewers the field already uses, written from an atlas (read-only).

circuit-tracer (its local graph viewer, ``circuit_tracer/frontend``): one JSON file per feature with
the fields of its ``feature_models.Model`` (transcoder_id, index, examples_quantiles of
{quantile_name, examples of {tokens, tokens_acts_list, train_token_ind, is_repeated_datapoint}},
top_logits, bottom_logits, act_min, act_max, quantile_values, histogram, activation_frequency).
Its viewer names a feature ``layer * 10**ceil(log10(d_sae)) + index`` (graph_models.Node.feature_node)
and loads ``{scan}/{feature}.json``; so the files are ``OUT/features/{model}/{feature}.json``, and
``OUT/features/{model}/index.json`` maps each file back to its atlas id. Served with circuit-tracer's
``serve(data_dir=OUT)``, a graph whose metadata.scan is ``./data/features/{model}`` reads them.
atlas adds ``atlas_id`` and ``description`` (the viewer ignores unknown fields).

Neuronpedia: JSON Lines of its tables' fields (webapp prisma schema: ``Neuron``, ``Activation``,
``Explanation``): ``features.jsonl`` (modelId, layer = the source id, index as a string,
maxActApprox, frac_nonzero, pos_str / pos_values = promoted tokens, neg_str / neg_values =
suppressed tokens, freq_hist_data_bar_heights / _values, hookName), ``activations.jsonl``
(modelId, layer, index, tokens, values, maxValue, maxValueTokenIndex, minValue, dataIndex,
binMin / binMax for quantile examples) and ``explanations.jsonl`` (modelId, layer, index,
description, typeName = the atlas method, explanationModelName, scores).

1. Select features: every feature, or the given public ids, or those of some layers; at most ``limit``.
2. Per batch of 1,000 features (fid order): read tokens, statistics, examples, explanations, scores.
3. Write the files; return counts (``ExportReport``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from atlas import db
from atlas.errors import AtlasError, NotFoundError
from atlas.ids import FeatureRef, make_fid, split_fid

BATCH = 1000
N_LOGITS = 10


@dataclass(frozen=True)
class ExportReport:
    features: int
    activations: int
    explanations: int
    files: int


@dataclass(frozen=True)
class Source:
    sid: int
    model_id: str
    source_id: str
    layer: int
    d_sae: int
    hook_in: str


def ct_feature_index(layer: int, index: int, d_sae: int) -> int:
    """circuit-tracer's feature number: index + 10**ceil(log10(d_sae)) * layer."""
    return index + 10 ** math.ceil(math.log10(d_sae)) * layer


def _sources(con) -> dict[int, Source]:
    return {
        r[0]: Source(*r)
        for r in con.execute(
            "SELECT sid, model_id, source_id, layer, d_sae, hook_in FROM sources ORDER BY sid"
        ).fetchall()
    }


def select_fids(
    con, sources: dict[int, Source], ids: list[str] | None, layers: list[int] | None, limit: int | None
) -> list[int]:
    by_name = {(s.model_id, s.source_id): s for s in sources.values()}
    if ids:
        fids = []
        for text in ids:
            ref = FeatureRef.parse(text)
            s = by_name.get((ref.model, ref.source))
            if s is None or ref.index >= s.d_sae:
                raise NotFoundError(f"feature {text!r} is not in the atlas")
            fids.append(make_fid(s.sid, ref.index))
        fids = sorted(set(fids))
    else:
        sids = [s.sid for s in sources.values() if layers is None or s.layer in layers]
        if layers is not None and not sids:
            raise NotFoundError(f"no source of the atlas is in layers {layers}")
        fids = [
            r[0]
            for r in con.execute(
                "SELECT fid FROM features WHERE list_contains($sids, sid) ORDER BY fid LIMIT $n",
                {"sids": sids, "n": limit if limit is not None else 2**62},
            ).fetchall()
        ]
    return fids[:limit] if limit is not None else fids


def _rows(con, sql: str, fids: list[int]) -> list[dict]:
    res = con.execute(sql, {"fids": fids})
    names = [d[0] for d in res.description]
    return [dict(zip(names, r)) for r in res.fetchall()]


def _group(rows: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for r in rows:
        out.setdefault(r["fid"], []).append(r)
    return out


IN_BATCH = "fid IN (SELECT unnest($fids::BIGINT[]))"


def _batch(con, fids: list[int]) -> dict[str, dict[int, list[dict]]]:
    return {
        "weightlens": _group(
            _rows(con, f"SELECT fid, description, validated FROM feature_weightlens WHERE {IN_BATCH}", fids)
        ),
        "tokens": _group(
            _rows(
                con,
                f"SELECT fid, side, rank, token, score FROM feature_tokens WHERE {IN_BATCH} "
                "AND side IN ('promoted', 'suppressed') ORDER BY fid, side, rank",
                fids,
            )
        ),
        "stats": _group(_rows(con, f"SELECT * FROM feature_stats WHERE {IN_BATCH}", fids)),
        "examples": _group(
            _rows(
                con,
                f"SELECT fid, example_id, kind, bin, doc_id, pos, activation, window_start, "
                f"token_strs, acts FROM examples WHERE {IN_BATCH} "
                "ORDER BY fid, kind, activation DESC, example_id",
                fids,
            )
        ),
        "explanations": _group(
            _rows(
                con,
                f"SELECT fid, explanation_id, cluster_label, method, text, params "
                f"FROM explanations WHERE {IN_BATCH} ORDER BY fid, explanation_id",
                fids,
            )
        ),
        "scores": _group(
            _rows(
                con,
                f"SELECT fid, explanation_id, method, metric, value FROM scores "
                f"WHERE {IN_BATCH} ORDER BY fid, score_id",
                fids,
            )
        ),
    }


def _target(e: dict) -> int:
    return int(e["pos"] - e["window_start"])


def ct_feature(s: Source, index: int, b: dict, fid: int) -> dict:
    """One feature in circuit-tracer's feature-file shape."""
    examples = b["examples"].get(fid, [])
    toks = b["tokens"].get(fid, [])
    st = (b["stats"].get(fid) or [None])[0]
    wl = (b["weightlens"].get(fid) or [None])[0]
    groups = [("Top activations", [e for e in examples if e["kind"] == "top"])]
    bins = sorted({e["bin"] for e in examples if e["kind"] == "quantile"}, key=lambda x: (x is None, x), reverse=True)
    groups += [(f"Quantile bin {q}", [e for e in examples if e["kind"] == "quantile" and e["bin"] == q]) for q in bins]
    acts = [float(a) for e in examples for a in e["acts"]]
    return {
        "transcoder_id": f"{s.model_id}/{s.source_id}",
        "index": ct_feature_index(s.layer, index, s.d_sae),
        "examples_quantiles": [
            {
                "quantile_name": name,
                "examples": [
                    {
                        "tokens": list(e["token_strs"]),
                        "tokens_acts_list": [float(a) for a in e["acts"]],
                        "train_token_ind": _target(e),
                        "is_repeated_datapoint": False,
                    }
                    for e in group
                ],
            }
            for name, group in groups
            if group
        ],
        "top_logits": [t["token"] for t in toks if t["side"] == "promoted"][:N_LOGITS],
        "bottom_logits": [t["token"] for t in toks if t["side"] == "suppressed"][:N_LOGITS],
        "act_min": min(acts, default=0.0),
        "act_max": max(acts + ([st["max_act"]] if st and st["max_act"] is not None else []), default=0.0),
        "quantile_values": [float(x) for x in (st["quantiles"] or [])] if st else [],
        "histogram": [float(x) for x in (st["hist_counts"] or [])] if st else [],
        "activation_frequency": float(st["frequency"]) if st else 0.0,
        "atlas_id": f"{s.model_id}/{s.source_id}/{index}",
        "description": ", ".join(wl["description"]) if wl and wl["description"] else "",
    }


def _np_feature(key: dict, s: Source, toks: list[dict], st: dict | None) -> dict:
    """The feature row: activation statistics, histogram, promoted and suppressed tokens."""
    pos = [t for t in toks if t["side"] == "promoted"]
    neg = [t for t in toks if t["side"] == "suppressed"]
    edges, counts = (st["hist_edges"], st["hist_counts"]) if st else (None, None)
    return {
        **key,
        "maxActApprox": float(st["max_act"]) if st and st["max_act"] is not None else 0.0,
        "frac_nonzero": float(st["frequency"]) if st else 0.0,
        "pos_str": [t["token"] for t in pos],
        "pos_values": [float(t["score"]) for t in pos],
        "neg_str": [t["token"] for t in neg],
        "neg_values": [float(t["score"]) for t in neg],
        "freq_hist_data_bar_heights": [float(c) for c in counts] if counts else [],
        "freq_hist_data_bar_values": [float((a + z) / 2) for a, z in zip(edges, edges[1:])] if edges else [],
        "hookName": s.hook_in,
    }


def _np_activations(key: dict, examples: list[dict]) -> list[dict]:
    """One activation row per stored example."""
    activations = []
    for e in examples:
        values = [float(a) for a in e["acts"]]
        row = {
            **key,
            "tokens": list(e["token_strs"]),
            "values": values,
            "maxValue": max(values, default=0.0),
            "maxValueTokenIndex": max(range(len(values)), key=values.__getitem__) if values else 0,
            "minValue": min(values, default=0.0),
            "dataIndex": str(e["doc_id"]),
            "dataSource": "atlas examples",
            "atlas_kind": e["kind"],
            "atlas_example_id": e["example_id"],
        }
        if e["kind"] == "quantile" and e["bin"] is not None:
            row["atlas_bin"] = e["bin"]
        activations.append(row)
    return activations


def _np_explanations(key: dict, b: dict, fid: int) -> list[dict]:
    """The WeightLens description (scores of explanation id None) and every stored explanation, with scores."""
    scores: dict = {}
    for sc in b["scores"].get(fid, []):
        scores.setdefault(sc["explanation_id"], []).append(
            {"explanationScoreTypeName": f"{sc['method']}/{sc['metric']}", "value": sc["value"]}
        )
    explanations = []
    wl = (b["weightlens"].get(fid) or [None])[0]
    if wl and wl["description"]:
        explanations.append(
            {
                **key,
                "description": ", ".join(wl["description"]),
                "typeName": "atlas-weightlens",
                "explanationModelName": None,
                "scores": scores.get(None, []),
            }
        )
    for x in b["explanations"].get(fid, []):
        params = json.loads(x["params"]) if isinstance(x["params"], str) else (x["params"] or {})
        explanations.append(
            {
                **key,
                "description": x["text"],
                "typeName": f"atlas-{x['method']}",
                "explanationModelName": params.get("explainer_model") if isinstance(params, dict) else None,
                "scores": scores.get(x["explanation_id"], []),
                "atlas_cluster_label": x["cluster_label"],
            }
        )
    return explanations


def np_rows(s: Source, index: int, b: dict, fid: int) -> tuple[dict, list[dict], list[dict]]:
    """(feature, activations, explanations) in Neuronpedia's field names."""
    key = {"modelId": s.model_id, "layer": s.source_id, "index": str(index)}
    st = (b["stats"].get(fid) or [None])[0]
    feature = _np_feature(key, s, b["tokens"].get(fid, []), st)
    return feature, _np_activations(key, b["examples"].get(fid, [])), _np_explanations(key, b, fid)


def export(
    db_path: str | Path,
    out: str | Path,
    fmt: str,
    ids: list[str] | None = None,
    layers: list[int] | None = None,
    limit: int | None = None,
) -> ExportReport:
    if fmt not in ("circuit-tracer", "neuronpedia"):
        raise AtlasError(f"export format {fmt!r} is not one of circuit-tracer, neuronpedia")
    out = Path(out)
    con = db.connect_readonly(db_path)
    try:
        sources = _sources(con)
        fids = select_fids(con, sources, ids, layers, limit)
        out.mkdir(parents=True, exist_ok=True)
        n_f = n_a = n_x = n_files = 0
        index_maps: dict[str, dict] = {}
        handles = {}
        if fmt == "neuronpedia":
            handles = {
                k: open(out / f"{k}.jsonl", "w", encoding="utf-8") for k in ("features", "activations", "explanations")
            }
            n_files = 3
        try:
            for i in range(0, len(fids), BATCH):
                chunk = fids[i : i + BATCH]
                b = _batch(con, chunk)
                for fid in chunk:
                    sid, index = split_fid(fid)
                    s = sources[sid]
                    n_f += 1
                    if fmt == "circuit-tracer":
                        feat = ct_feature(s, index, b, fid)
                        d = out / "features" / s.model_id
                        d.mkdir(parents=True, exist_ok=True)
                        (d / f"{feat['index']}.json").write_text(json.dumps(feat), encoding="utf-8")
                        index_maps.setdefault(s.model_id, {})[str(feat["index"])] = feat["atlas_id"]
                        n_files += 1
                        n_a += sum(len(q["examples"]) for q in feat["examples_quantiles"])
                    else:
                        feature, acts, expls = np_rows(s, index, b, fid)
                        handles["features"].write(json.dumps(feature) + "\n")
                        for row in acts:
                            handles["activations"].write(json.dumps(row) + "\n")
                        for row in expls:
                            handles["explanations"].write(json.dumps(row) + "\n")
                        n_a += len(acts)
                        n_x += len(expls)
        finally:
            for h in handles.values():
                h.close()
        for model, mapping in index_maps.items():
            (out / "features" / model / "index.json").write_text(json.dumps(mapping), encoding="utf-8")
            n_files += 1
        return ExportReport(n_f, n_a, n_x, n_files)
    finally:
        con.close()
