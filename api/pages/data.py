"""What each page shows, as JSON-ready dicts (the body of ``?format=json``).

Builders take (ctx, path params, query params), read through ``ctx.rows`` (named SQL on the
request's read-only cursor, statement and request time-outs) and the API's graph functions, and
check every size argument against ``ctx.limits`` (400 naming the limit). Ids are public ids
(model/source/index); an unknown one is a ``NotFoundError`` naming it.
"""

from __future__ import annotations

import json
import re
import threading
import weakref
from typing import Any, TypeVar

from api import graph, queries
from api.context import Context
from api.errors import BadArgument, check_range
from api.pages import sql
from atlas.errors import NotFoundError
from atlas.ids import FeatureRef, split_fid

EDGE_KINDS = ("virtual", "era", "twera")
SIGNS = {"any": 0, "positive": 1, "negative": -1}
EXAMPLES_PER_PAGE = 10
MAX_EXAMPLE_PAGE = 1000
MEMBERS_PER_CLUSTER = 5
SEARCH_PAGE = 20


# ---- arguments -------------------------------------------------------------------------------


_D = TypeVar("_D")  # the type of _int's default (an int, or None for an optional argument)


def _int(params: dict, name: str, default: _D, lo: int, hi: int) -> int | _D:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"-?[0-9]{1,12}", raw):
        raise BadArgument(f"argument {name} = {raw!r} is not an integer")
    value = int(raw)
    check_range(name, value, lo, hi)
    return value


def _choice(params: dict, name: str, default: str, allowed) -> str:
    value = params.get(name) or default
    if value not in allowed:
        raise BadArgument(f"argument {name} = {value!r} is not one of {', '.join(allowed)}")
    return value


def _fid(ctx: Context, public_id: str | None, name: str) -> int:
    if not public_id:
        raise BadArgument(f"argument {name} (a feature id model/source/index) is required")
    ref = FeatureRef.parse(public_id)  # NotFoundError naming a malformed id
    return ctx.catalog.fid(str(ref))


def _path_fid(ctx: Context, p: dict) -> int:
    public_id = f"{p['model']}/{p['source']}/{p['index']}"
    if not re.fullmatch(r"[0-9]{1,10}", p["index"]):
        raise NotFoundError(f"feature {public_id!r} is not in the atlas (index {p['index']!r} is not a number)")
    return ctx.catalog.fid(public_id)


def _labels(ctx: Context, fids) -> dict[int, str]:
    fids = sorted(set(fids))
    if not fids:
        return {}
    return {r["fid"]: r["description"] for r in ctx.rows(queries.FEATURE_LABELS, {"fids": fids})}


def _node(ctx: Context, fid: int, labels: dict[int, str]) -> dict:
    s = ctx.catalog.source(fid)
    return {"id": ctx.catalog.public_id(fid), "layer": s.layer, "description": labels.get(fid) or None}


def _json(text):
    return json.loads(text) if isinstance(text, str) else text


# ---- index -------------------------------------------------------------------------------------

_LAYERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # Version -> (models, layers)
_LAYERS_LOCK = threading.Lock()


def index(ctx: Context, _path: dict, params: dict) -> dict:
    """Models and layers are fixed for one atlas version (a published file never changes): computed
    once per version (coverage_per_layer counts every feature) and kept while the version is open."""
    with _LAYERS_LOCK:
        cached = _LAYERS.get(ctx.version)
    if cached is None:
        cached = _layers(ctx)
        with _LAYERS_LOCK:
            _LAYERS[ctx.version] = cached
    models, layers = cached
    out = {"page": "index", "models": models, "layers": layers, "search": None}
    q = params.get("q") or ""
    if q.strip():  # searched as given: spaces matter to text search (tokens match up to spaces)
        out["search"] = search(ctx, q, params)
    return out


def _layers(ctx: Context) -> tuple[list, list]:
    quality: dict[tuple, dict] = {}
    for r in ctx.rows(sql.QUALITY):
        quality.setdefault((r["model_id"], r["source_id"]), {})[r["metric"]] = r["value"]
    layers = []
    for r in ctx.rows(queries.COVERAGE, {"model": None}):
        q = quality.get((r["model_id"], r["source_id"]), {})
        n = r["n_features"] or 1
        layers.append(
            {
                **r,
                "fve": q.get("fve"),
                "l0": q.get("l0"),
                "dead_share": q.get("dead_share"),
                "coverage": r["n_described"] / n,
                "validated_share": r["n_validated"] / n,
            }
        )
    return ctx.rows(sql.MODELS), layers


def search(ctx: Context, q: str, params: dict) -> dict:
    """Features by id, by a token they read or write, or by description / explanation text."""
    check_range("length of q", len(q), 1, 200)
    by = _choice(params, "by", "all", ("all", "readers", "writers", "text"))
    after = _int(params, "after", -1, -1, 2**62)
    first = _int(params, "first", SEARCH_PAGE, 1, ctx.limits.max_page)
    result: dict[str, Any] = {"q": q, "by": by, "id": None, "sections": []}
    if q.strip().count("/") == 2:
        try:
            result["id"] = ctx.catalog.public_id(ctx.catalog.fid(q.strip()))
        except NotFoundError as exc:
            result["id_error"] = str(exc)
    titles = {
        "readers": "features that read the token",
        "writers": "features that write (promote or suppress) the token",
        "text": "features whose description or explanation contains the text",
    }
    sections = []
    for name in ("readers", "writers", "text"):
        if by in ("all", name):
            rows = (
                ctx.rows(sql.TEXT_MATCHES, {"after": after, "text": q, "limit": first + 1})
                if name == "text"
                else token_search(ctx, name, q, after, first + 1)
            )
            sections.append((name, titles[name], rows))
    labels = _labels(ctx, [r["fid"] for _, _, rows in sections for r in rows[:first]])
    for name, title, rows in sections:
        items = [
            {**_node(ctx, r["fid"], labels), **({"side": r["side"], "score": r["score"]} if "side" in r else {})}
            for r in rows[:first]
        ]
        result["sections"].append(
            {
                "by": name,
                "title": title,
                "features": items,
                "next_after": rows[first - 1]["fid"] if len(rows) > first else None,
            }
        )
    return result


def token_search(ctx: Context, by: str, token: str, after: int, n: int) -> list[dict]:
    """The first ``n`` features (by fid) with a ``by`` token equal to ``token`` up to spaces, each with its
    strongest such token (lowest rank, then side): batches of rows in (fid, rank, side) order."""
    out: list[dict] = []
    batch_size = 4 * n
    while len(out) < n:
        rows = ctx.rows(sql.token_rows(by), {"token": token, "after": after, "limit": batch_size})
        for r in rows:
            if not out or out[-1]["fid"] != r["fid"]:
                out.append(r)
        if len(rows) < batch_size:
            break
        after = rows[-1]["fid"]  # its first row is already kept; the batch may have cut its others
    return out[:n]


# ---- feature page --------------------------------------------------------------------------------


def _examples_pages(ctx: Context, fid: int, top_page: int, q_page: int) -> dict:
    """The requested page of the top and of the quantile examples: {"top": ..., "quantile": ...}."""
    example_rows = ctx.rows(
        sql.EXAMPLES_PAGES,
        {
            "fid": fid,
            "limit": EXAMPLES_PER_PAGE + 1,
            "top_offset": top_page * EXAMPLES_PER_PAGE,
            "quantile_offset": q_page * EXAMPLES_PER_PAGE,
        },
    )

    def examples(kind_: str, page_no: int) -> dict:
        rows = [r for r in example_rows if r["kind"] == kind_]
        return {
            "page": page_no,
            "per_page": EXAMPLES_PER_PAGE,
            "has_next": len(rows) > EXAMPLES_PER_PAGE,
            "items": [_example(r) for r in rows[:EXAMPLES_PER_PAGE]],
        }

    return {"top": examples("top", top_page), "quantile": examples("quantile", q_page)}


def _clusters(ctx: Context, fid: int, model_id: str) -> list[dict]:
    """The feature's CircuitLens clusters, with their first members; the upstream features of their summaries
    as links (``id``: a public id, None when no source of ``model_id`` has that layer)."""
    cluster_rows = ctx.rows(queries.FEATURE_CLUSTERS, {"fid": fid})
    members: dict[int, list] = {}
    for r in ctx.rows(sql.CLUSTER_MEMBERS, {"fid": fid, "per_cluster": MEMBERS_PER_CLUSTER}) if cluster_rows else []:
        members.setdefault(r["label"], []).append(_example(r))
    clusters = [
        {
            "label": r["label"],
            "n_examples": r["n_examples"],
            "contributors": _json(r["contributors"]),
            "summary": _json(r["summary"]),
            "members": members.get(r["label"], []),
        }
        for r in cluster_rows
    ]
    sources = ctx.catalog.by_sid.values()
    for c in clusters:
        for u in (c["summary"] or {}).get("upstream", []) if isinstance(c["summary"], dict) else []:
            src = next((x for x in sources if x.model_id == model_id and x.layer == u.get("layer")), None)
            u["id"] = f"{src.model_id}/{src.source_id}/{u.get('index')}" if src is not None else None
    return clusters


def _explanations(ctx: Context, fid: int) -> list[dict]:
    """The feature's explanations, each with its scores."""
    explanation_rows = ctx.rows(queries.FEATURE_EXPLANATIONS, {"fid": fid})
    scores: dict[Any, list] = {}  # the page shows the scores of explanations only
    for r in ctx.rows(queries.FEATURE_SCORES, {"fid": fid, "explanation_id": None}) if explanation_rows else []:
        scores.setdefault(r["explanation_id"], []).append(
            {"method": r["method"], "metric": r["metric"], "value": r["value"], "data": r["data"]}
        )
    return [
        {
            "id": r["explanation_id"],
            "cluster_label": r["cluster_label"],
            "method": r["method"],
            "text": r["text"],
            "tokens": r["tokens"],
            "scores": scores.get(r["explanation_id"], []),
        }
        for r in explanation_rows
    ]


def _edges(ctx: Context, fid: int, kind: str, top: int) -> dict:
    """The ``top`` strongest upstream and downstream edges of ``kind``."""
    up = graph.neighbours(ctx, fid, True, kind, None, 0, 0.0, None, top)
    down = graph.neighbours(ctx, fid, False, kind, None, 0, 0.0, None, top)
    labels = _labels(ctx, [e.src for e in up] + [e.dst for e in down])
    return {
        "kind": kind,
        "top": top,
        "max_top": ctx.limits.max_page,
        "upstream": [{**_node(ctx, e.src, labels), "weight": e.weight, "rel": e.rel, "variant": e.variant} for e in up],
        "downstream": [
            {**_node(ctx, e.dst, labels), "weight": e.weight, "rel": e.rel, "variant": e.variant} for e in down
        ],
    }


def feature(ctx: Context, path: dict, params: dict) -> dict:
    fid = _path_fid(ctx, path)
    lim = ctx.limits
    kind = _choice(params, "kind", "virtual", EDGE_KINDS)
    top = _int(params, "top", 10, 1, lim.max_page)
    tokens_n = _int(params, "tokens", 10, 1, lim.max_page)
    top_page = _int(params, "top_page", 0, 0, MAX_EXAMPLE_PAGE)
    q_page = _int(params, "quantile_page", 0, 0, MAX_EXAMPLE_PAGE)
    cat = ctx.catalog
    s = cat.source(fid)
    core = ctx.rows(queries.FEATURE_CORE, {"fid": fid})[0]
    token_rows = ctx.rows(sql.FEATURE_TOKENS, {"fid": fid, "limit": tokens_n})
    examples = _examples_pages(ctx, fid, top_page, q_page)
    clusters = _clusters(ctx, fid, s.model_id)
    explanations = _explanations(ctx, fid)
    edges = _edges(ctx, fid, kind, top)
    stats = None
    if core["n_tokens"] is not None:
        stats = {k: core[k] for k in queries.FEATURE_STATS_COLUMNS}
    return {
        "page": "feature",
        "id": cat.public_id(fid),
        "model": s.model_id,
        "source": s.source_id,
        "layer": s.layer,
        "index": split_fid(fid).idx,
        "description": core["description"] or [],
        "validated": core["validated"],
        "validation_soft": core["validation_soft"],
        "n_input_tokens": core["n_input_tokens"],
        "stats": stats,
        "input_tokens": [_token(r) for r in token_rows if r["side"] == "input"],
        "output_tokens": [_token(r) for r in token_rows if r["side"] != "input"],
        "examples": examples,
        "clusters": clusters,
        "explanations": explanations,
        "edges": edges,
        "graphql": FEATURE_QUERY.replace("$ID", json.dumps(cat.public_id(fid))),
    }


FEATURE_QUERY = """{ feature(id: $ID) { id description validated stats { frequency maxAct histEdges histCounts }
  inputTokens { token score validated } outputTokens { side token score }
  examples(first: 10) { activation tokenStrs acts } clusters { label nExamples contributors summary }
  explanations { method text scores { metric value } }
  upstream(topK: 10) { weight source { id description } }
  downstream(topK: 10) { weight target { id description } } } }"""


def _token(r: dict) -> dict:
    return {k: r[k] for k in ("side", "rank", "token_id", "token", "score", "zscore", "validated")}


def _example(r: dict) -> dict:
    acts = [float(a) for a in r["acts"]]
    return {
        "id": r["example_id"],
        "activation": r["activation"],
        "pos": r["pos"],
        "window_start": r["window_start"],
        "token_strs": list(r["token_strs"]),
        "acts": acts,
        **({"kind": r["kind"], "bin": r["bin"], "doc_id": r["doc_id"]} if "kind" in r else {}),
    }


# ---- circuit views -------------------------------------------------------------------------------


def _graph(ctx: Context, edges: list[graph.EdgeRow], focus: list[int]) -> dict:
    fids = sorted(set(focus) | {e.src for e in edges} | {e.dst for e in edges})
    labels = _labels(ctx, fids)
    uniq = {(e.src, e.dst, e.variant): e for e in edges}
    return {
        "nodes": [{**_node(ctx, f, labels), "focus": f in focus} for f in fids],
        "edges": [
            {
                "source": ctx.catalog.public_id(e.src),
                "target": ctx.catalog.public_id(e.dst),
                "weight": e.weight,
                "variant": e.variant,
            }
            for e in uniq.values()
        ],
    }


def drivers(ctx: Context, _path: dict, params: dict) -> dict:
    lim = ctx.limits
    target = _fid(ctx, params.get("target"), "target")
    via = _fid(ctx, params["via"], "via") if params.get("via") else None
    via_layer = _int(params, "viaLayer", None, 0, 10_000) if params.get("viaLayer") else None
    kind = _choice(params, "kind", "virtual", EDGE_KINDS)
    sign = _choice(params, "sign", "any", tuple(SIGNS))
    top_k = _int(params, "topK", 10, 1, lim.max_page)
    fanout = _int(params, "fanout", 20, 1, lim.max_fanout)
    rows = graph.drivers(ctx, target, via, via_layer, kind, None, SIGNS[sign], top_k, fanout)
    g = _graph(ctx, [e for d in rows for e in (d.first, d.second)], [target] + ([via] if via else []))
    cat = ctx.catalog
    return {
        "page": "drivers",
        "target": cat.public_id(target),
        "via": cat.public_id(via) if via else None,
        "viaLayer": via_layer,
        "kind": kind,
        "sign": sign,
        "topK": top_k,
        "fanout": fanout,
        "drivers": [
            {
                "driver": cat.public_id(d.first.src),
                "via": cat.public_id(d.first.dst),
                "w1": d.first.weight,
                "w2": d.second.weight,
                "product": d.product,
            }
            for d in rows
        ],
        "graph": g,
    }


def paths(ctx: Context, _path: dict, params: dict) -> dict:
    lim = ctx.limits
    source = _fid(ctx, params.get("source"), "source")
    target = _fid(ctx, params.get("target"), "target")
    kind = _choice(params, "kind", "virtual", EDGE_KINDS)
    sign = _choice(params, "sign", "any", tuple(SIGNS))
    max_hops = _int(params, "maxHops", 3, 1, lim.max_hops)
    fanout = _int(params, "fanout", 10, 1, lim.max_fanout)
    beam = _int(params, "beam", 200, 1, lim.max_beam)
    top_k = _int(params, "topK", 10, 1, lim.max_page)
    found = graph.paths(ctx, source, target, max_hops, kind, None, SIGNS[sign], fanout, beam, top_k)
    cat = ctx.catalog
    return {
        "page": "paths",
        "source": cat.public_id(source),
        "target": cat.public_id(target),
        "kind": kind,
        "sign": sign,
        "maxHops": max_hops,
        "fanout": fanout,
        "beam": beam,
        "topK": top_k,
        "paths": [
            {
                "score": p.score,
                "nodes": [cat.public_id(source)] + [cat.public_id(e.dst) for e in p.edges],
                "weights": [e.weight for e in p.edges],
            }
            for p in found
        ],
        "graph": _graph(ctx, [e for p in found for e in p.edges], [source, target]),
    }
