"""HTML of each page from its builder's dict (api/pages/data.py); every value passes through ``tag``."""

from __future__ import annotations

import json

from api.pages import svg
from api.pages.html import Html, feature_href, href, page, tag


def _num(v, fmt: str = ".3g") -> str:
    return "–" if v is None else format(v, fmt)


def _pct(v) -> str:
    return "–" if v is None else f"{v:.1%}"


def _flink(node: dict) -> Html:
    return tag("a", node["id"], href=feature_href(node["id"]), class_="feature-link")


def _json_href(request_path: str, params: dict) -> str:
    return href(*[s for s in request_path.split("/") if s], **{**params, "format": "json"})


# ---- index


def _models_table(models: list[dict]) -> Html:
    return tag(
        "table",
        tag(
            "tr",
            tag("th", "model"),
            tag("th", "loader"),
            tag("th", "layers"),
            tag("th", "d_model"),
            tag("th", "vocabulary"),
        ),
        [
            tag(
                "tr",
                tag("td", m["model_id"]),
                tag("td", m["loader"]),
                tag("td", m["n_layers"], class_="num"),
                tag("td", m["d_model"], class_="num"),
                tag("td", m["d_vocab"], class_="num"),
            )
            for m in models
        ],
        class_="models",
    )


def _layers_table(layers: list[dict]) -> Html:
    heads = [
        "model",
        "source",
        "layer",
        "features",
        "FVE",
        "L0",
        "dead",
        "WeightLens coverage",
        "validated",
        "alive",
        "explained",
    ]
    return tag(
        "table",
        tag("tr", [tag("th", h) for h in heads]),
        [
            tag(
                "tr",
                tag("td", r["model_id"]),
                tag("td", r["source_id"]),
                tag("td", r["layer"], class_="num"),
                tag("td", r["n_features"], class_="num"),
                tag("td", _num(r["fve"]), class_="num"),
                tag("td", _num(r["l0"], ".1f"), class_="num"),
                tag("td", _pct(r["dead_share"]), class_="num"),
                tag("td", _pct(r["coverage"]), class_="num coverage"),
                tag("td", _pct(r["validated_share"]), class_="num"),
                tag("td", r["n_alive"], class_="num"),
                tag("td", r["n_explained"], class_="num"),
                class_="layer",
            )
            for r in layers
        ],
        class_="layers",
    )


def _search_section(q: str, sec: dict) -> Html:
    """One section of the search results (one way of matching), with its 'more' link."""
    items = [
        tag(
            "li",
            _flink(f),
            " ",
            tag("span", f["description"] or "", class_="muted"),
            f" ({f['side']} {f['score']:.3g})" if f.get("side") else "",
        )
        for f in sec["features"]
    ]
    more = (
        tag("a", "more", href=href("", q=q, by=sec["by"], after=sec["next_after"]))
        if sec["next_after"] is not None
        else None
    )
    return tag(
        "section",
        tag("h3", sec["title"], f" ({len(sec['features'])}{'+' if more else ''})"),
        tag("ul", items) if items else tag("p", "none", class_="muted"),
        more,
        class_="search-results",
        data_by=sec["by"],
    )


def _search(s: dict) -> list[Html]:
    """The search's heading, the feature its query names (or why it names none), its sections."""
    body = [tag("h2", f"Search: {s['q']}")]
    if s.get("id"):
        body.append(tag("p", "Feature ", tag("a", s["id"], href=feature_href(s["id"]), class_="feature-link")))
    elif s.get("id_error"):
        body.append(tag("p", s["id_error"], class_="muted"))
    return body + [_search_section(s["q"], sec) for sec in s["sections"]]


def index(d: dict) -> Html:
    body = [
        tag("h1", "Atlas"),
        tag("h2", "Models"),
        _models_table(d["models"]),
        tag("h2", "Transcoder layers"),
        _layers_table(d["layers"]),
    ]
    s = d["search"]
    if s is not None:
        body += _search(s)
    json_params = {"q": s["q"]} if s else {}
    return page("index", tag("main", *body), json_href=href("", **json_params, format="json"))


# ---- feature page


def _shade(a: float, top: float) -> str:
    return f"a{min(9, max(0, int(a / top * 9.999)))}" if top > 0 and a > 0 else "a0"


def example_html(e: dict, top: float) -> Html:
    """An example's tokens, each shaded by its activation (classes a0..a9), its value on hover (title)."""
    target = e["pos"] - e["window_start"]
    toks = [
        tag(
            "span",
            t,
            class_=f"tok {_shade(a, top)}" + (" max" if i == target else ""),
            title=f"{a:.4g}",
            data_act=f"{a:.6g}",
        )
        for i, (t, a) in enumerate(zip(e["token_strs"], e["acts"]))
    ]
    return tag(
        "div", tag("span", f"{e['activation']:.3g} ", class_="muted"), *toks, class_="example", data_example=e["id"]
    )


def _token_table(rows: list[dict], output: bool) -> Html:
    head = [tag("th", "side")] if output else []
    return tag(
        "table",
        tag(
            "tr",
            *head,
            tag("th", "token"),
            tag("th", "score"),
            tag("th", "z"),
            *([] if output else [tag("th", "validated")]),
        ),
        [
            tag(
                "tr",
                *([tag("td", r["side"])] if output else []),
                tag("td", tag("span", r["token"], class_="tok")),
                tag("td", _num(r["score"]), class_="num"),
                tag("td", _num(r["zscore"]), class_="num"),
                *([] if output else [tag("td", {True: "yes", False: "no"}.get(r["validated"], "–"))]),
            )
            for r in rows
        ],
        class_="tokens " + ("output" if output else "input"),
    )


def _edges_table(rows: list[dict], title: str) -> Html:
    return tag(
        "section",
        tag("h3", title),
        tag(
            "table",
            tag(
                "tr",
                tag("th", "feature"),
                tag("th", "layer"),
                tag("th", "weight"),
                tag("th", "rel."),
                tag("th", "description"),
            ),
            [
                tag(
                    "tr",
                    tag("td", _flink(r)),
                    tag("td", r["layer"], class_="num"),
                    tag("td", _num(r["weight"], ".4g"), class_="num " + ("pos" if r["weight"] >= 0 else "neg")),
                    tag("td", _num(r["rel"]), class_="num"),
                    tag("td", r["description"] or "", class_="muted"),
                )
                for r in rows
            ],
        )
        if rows
        else tag("p", "none", class_="muted"),
        class_="edges",
    )


def _cluster(c: dict, top: float) -> Html:
    s = c["summary"] if isinstance(c["summary"], dict) else {}
    ups = [
        tag(
            "li",
            tag("a", u["id"], href=feature_href(u["id"]))
            if u.get("id")
            else f"layer {u.get('layer')} #{u.get('index')}",
            f" share {_num(u.get('share'))} ",
            tag("span", u.get("description") or "", class_="muted"),
        )
        for u in s.get("upstream", [])
    ]
    heads = [
        tag(
            "li",
            f"head L{h.get('layer')}.{h.get('head')} at relative position {h.get('offset')}, "
            f"share {_num(h.get('share'))}",
        )
        for h in s.get("heads", [])
    ]
    srcs = [
        tag("li", tag("span", t.get("token"), class_="tok"), f" at offset {t.get('offset')} ×{t.get('count')}")
        for t in s.get("source_tokens", [])
    ]
    return tag(
        "div",
        tag("h3", "noise" if c["label"] < 0 else f"cluster {c['label']}", f" · {c['n_examples']} examples"),
        tag("p", "upstream features:", tag("ul", ups)) if ups else None,
        tag("p", "heads:", tag("ul", heads)) if heads else None,
        tag("p", "source tokens:", tag("ul", srcs)) if srcs else None,
        tag("details", tag("summary", "contributors"), tag("code", json.dumps(c["contributors"])))
        if c["contributors"]
        else None,
        [example_html(m, top) for m in c["members"]],
        class_="cluster",
        data_label=c["label"],
    )


# tag()'s children: None is left out, a list flattened
Body = list[Html | list[Html] | None]


def _top_activation(d: dict) -> float:
    """The activation that shades darkest: the largest shown or of the stats, 1.0 when there is none."""
    return (
        max(
            [max(e["acts"], default=0) for k in ("top", "quantile") for e in d["examples"][k]["items"]]
            + [(d["stats"] or {}).get("max_act") or 0],
            default=0,
        )
        or 1.0
    )


def _feature_head(d: dict) -> Body:
    """The id, the description, and the activation statistics with their histogram."""
    st = d["stats"]
    body: Body = [
        tag("h1", d["id"]),
        tag(
            "p",
            "Description: ",
            tag("b", ", ".join(d["description"]), class_="description")
            if d["description"]
            else tag("span", "not described", class_="muted"),
            f" · validated: {d['validated']}" if d["validated"] is not None else "",
        ),
    ]
    if st:
        body += [
            tag("h2", "Activations"),
            tag(
                "p",
                f"frequency {_pct(st['frequency'])} of {st['n_tokens']} tokens · max {_num(st['max_act'])} "
                f"· mean (active) {_num(st['mean_act'])}",
            ),
            svg.histogram(st),
        ]
    return body


def _examples(d: dict, top: float) -> Body:
    """The top and the quantile examples, each with its pager."""
    model, source, index = d["id"].split("/")
    body: Body = []
    for kind, name in (("top", "Top examples"), ("quantile", "Quantile examples")):
        ex = d["examples"][kind]
        pager = tag(
            "nav",
            tag("a", "previous", href=href("feature", model, source, index, **{f"{kind}_page": ex["page"] - 1}))
            if ex["page"] > 0
            else None,
            tag("a", "next", href=href("feature", model, source, index, **{f"{kind}_page": ex["page"] + 1}))
            if ex["has_next"]
            else None,
            class_="pager",
        )
        body += [
            tag("h2", name),
            tag(
                "section",
                [example_html(e, top) for e in ex["items"]] or tag("p", "none", class_="muted"),
                pager,
                class_="examples " + kind,
            ),
        ]
    return body


def _explanations_table(explanations: list[dict]) -> Html:
    if not explanations:
        return tag("p", "none", class_="muted")
    return tag(
        "table",
        tag("tr", tag("th", "method"), tag("th", "cluster"), tag("th", "text"), tag("th", "scores")),
        [
            tag(
                "tr",
                tag("td", x["method"]),
                tag("td", "–" if x["cluster_label"] is None else x["cluster_label"]),
                tag("td", x["text"], class_="explanation"),
                tag("td", "; ".join(f"{s['metric']} {_num(s['value'])}" for s in x["scores"])),
            )
            for x in explanations
        ],
        class_="explanations",
    )


def _edge_kinds(fid: str, e: dict) -> Html:
    """The links to the other edge kinds, to more edges, and to the strongest drivers."""
    model, source, index = fid.split("/")
    return tag(
        "p",
        "edges: ",
        [
            [
                tag(
                    "a",
                    k,
                    href=href("feature", model, source, index, kind=k, top=e["top"]),
                    class_="current" if k == e["kind"] else None,
                ),
                " ",
            ]
            for k in ("virtual", "era", "twera")
        ],
        " · ",
        tag(
            "a", "more", href=href("feature", model, source, index, kind=e["kind"], top=min(e["top"] * 2, e["max_top"]))
        )
        if e["top"] < e["max_top"]
        else None,
        " · ",
        tag("a", "strongest drivers", href=href("circuit", "drivers", target=fid, kind=e["kind"])),
    )


def feature(d: dict) -> Html:
    fid = d["id"]
    model, source, index = fid.split("/")
    top = _top_activation(d)
    e = d["edges"]
    body: Body = [
        *_feature_head(d),
        tag("h2", "Input tokens"),
        _token_table(d["input_tokens"], False),
        tag("h2", "Output tokens"),
        _token_table(d["output_tokens"], True),
        *_examples(d, top),
        tag("h2", "CircuitLens clusters"),
        [_cluster(c, top) for c in d["clusters"]] or tag("p", "none", class_="muted"),
        tag("h2", "Explanations"),
        _explanations_table(d["explanations"]),
        tag("h2", f"Edges ({e['kind']}, top {e['top']})"),
        _edge_kinds(fid, e),
        _edges_table(e["upstream"], "Upstream"),
        _edges_table(e["downstream"], "Downstream"),
        tag("h2", "GraphQL"),
        tag("details", tag("summary", "the query this page's data comes from"), tag("pre", d["graphql"])),
    ]
    return page(fid, tag("main", *body), json_href=href("feature", model, source, index, format="json"))


# ---- circuit views


def _graph_section(g: dict) -> list:
    drawn = svg.layered_graph(g)
    return [drawn if drawn is not None else tag("p", "nothing to draw", class_="muted")]


def drivers(d: dict) -> Html:
    via = (
        f"via {d['via']}"
        if d["via"]
        else (f"via layer {d['viaLayer']}" if d["viaLayer"] is not None else "via any layer")
    )
    rows = tag(
        "table",
        tag(
            "tr",
            tag("th", "driver"),
            tag("th", "via"),
            tag("th", "w(driver→via)"),
            tag("th", "w(via→target)"),
            tag("th", "product"),
        ),
        [
            tag(
                "tr",
                tag("td", _flink({"id": r["driver"]})),
                tag("td", _flink({"id": r["via"]})),
                tag("td", _num(r["w1"], ".4g"), class_="num"),
                tag("td", _num(r["w2"], ".4g"), class_="num"),
                tag("td", _num(r["product"], ".4g"), class_="num"),
            )
            for r in d["drivers"]
        ],
        class_="drivers",
    )
    params = {k: d[k] for k in ("target", "via", "viaLayer", "kind", "sign", "topK", "fanout") if d[k] is not None}
    return page(
        "drivers",
        tag(
            "main",
            tag("h1", "Drivers of ", _flink({"id": d["target"]}), f" {via}"),
            tag("p", f"{d['kind']} edges, sign {d['sign']}, top {d['topK']}, fanout {d['fanout']}"),
            *_graph_section(d["graph"]),
            rows,
        ),
        json_href=href("circuit", "drivers", **params, format="json"),
    )


def paths(d: dict) -> Html:
    rows = tag(
        "table",
        tag("tr", tag("th", "score"), tag("th", "path")),
        [
            tag(
                "tr",
                tag("td", _num(p["score"], ".4g"), class_="num"),
                tag("td", [[" → " if i else "", _flink({"id": n})] for i, n in enumerate(p["nodes"])]),
            )
            for p in d["paths"]
        ],
        class_="paths",
    )
    params = {k: d[k] for k in ("source", "target", "kind", "sign", "maxHops", "fanout", "beam", "topK")}
    return page(
        "paths",
        tag(
            "main",
            tag("h1", "Paths from ", _flink({"id": d["source"]}), " to ", _flink({"id": d["target"]})),
            tag(
                "p",
                f"{d['kind']} edges, up to {d['maxHops']} hops, fanout {d['fanout']}, "
                f"beam {d['beam']}, top {d['topK']}",
            ),
            *_graph_section(d["graph"]),
            rows,
        ),
        json_href=href("circuit", "paths", **params, format="json"),
    )
