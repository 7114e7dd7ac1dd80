"""Plots as inline SVG markup (no script): a feature's activation histogram, and a layered graph.

Layered graph:
1. Rows are layers, the highest on top (inputs at the bottom, as in circuit-tracer's viewer).
2. In each row the nodes are spread evenly in (source, index) order, the index compared as a number.
3. An edge is a line from its source's node to its target's; width 1..6 px by |weight| relative to
   the largest |weight| drawn; class ``pos`` or ``neg`` (colour) by its sign.
4. Each node is a link to its feature page, labelled with its index; its description is its title.
"""

from __future__ import annotations

from collections.abc import Callable

from api.pages.html import Html, feature_href, tag

W = 760


def _svg(parts: list, class_: str, height: int, label: str) -> Html:
    """The ``<svg>`` element of a plot ``W`` wide and ``height`` high, an image named ``label`` to readers."""
    return tag(
        "svg",
        *parts,
        class_=class_,
        width=str(W),
        height=str(height),
        viewBox=f"0 0 {W} {height}",
        role="img",
        aria_label=label,
    )


H, PAD = 160, 30  # the histogram's height and its padding on every side (px)


def _scale(lo: float, hi: float) -> Callable[[float], float]:
    """The x pixel of an activation: lo at the left padding, hi at the right."""
    span = (hi - lo) or 1.0
    return lambda v: PAD + (v - lo) / span * (W - 2 * PAD)


def _bars(edges: list, counts: list, x: Callable[[float], float]) -> list[Html]:
    """A bar per bin (height by count), and the density (count / total / bin width) as a line."""
    parts = []
    top = max(counts)
    total = sum(counts)
    density = [c / total / max(edges[i + 1] - edges[i], 1e-12) for i, c in enumerate(counts)]
    dmax = max(density) or 1.0
    for i, c in enumerate(counts):
        bh = c / top * (H - 2 * PAD)
        parts.append(
            tag(
                "rect",
                tag("title", f"[{edges[i]:.3g}, {edges[i + 1]:.3g}): {c}"),
                class_="bar",
                x=f"{x(edges[i]):.1f}",
                y=f"{H - PAD - bh:.1f}",
                width=f"{max(x(edges[i + 1]) - x(edges[i]) - 1, 1):.1f}",
                height=f"{bh:.1f}",
            )
        )
    pts = " ".join(
        f"{(x(edges[i]) + x(edges[i + 1])) / 2:.1f},{H - PAD - d / dmax * (H - 2 * PAD):.1f}"
        for i, d in enumerate(density)
    )
    parts.append(tag("polyline", class_="density", points=pts))
    return parts


def _axis(stats: dict, lo: float, hi: float, x: Callable[[float], float]) -> list[Html]:
    """A tick per quantile inside [lo, hi], the axis line, and lo and hi as its labels."""
    parts = []
    for v, level in zip(stats.get("quantiles") or [], stats.get("quantile_levels") or []):
        if lo <= v <= hi:
            parts.append(
                tag(
                    "line",
                    tag("title", f"q{level:g} = {v:.3g}"),
                    class_="axis quantile",
                    x1=f"{x(v):.1f}",
                    x2=f"{x(v):.1f}",
                    y1=str(H - PAD),
                    y2=str(H - PAD + 6),
                )
            )
    parts.append(tag("line", class_="axis", x1=str(PAD), x2=str(W - PAD), y1=str(H - PAD), y2=str(H - PAD)))
    for v, anchor in ((lo, "start"), (hi, "end")):
        parts.append(tag("text", f"{v:.3g}", x=f"{x(v):.1f}", y=str(H - 8), text_anchor=anchor))
    return parts


def histogram(stats: dict | None) -> Html | None:
    """Bars of the activation histogram (hist_edges, hist_counts), the density as a line, quantiles as ticks;
    without a histogram, the quantile curve alone (activation -> level)."""
    if not stats:
        return None
    edges, counts = stats.get("hist_edges"), stats.get("hist_counts")
    if edges and counts and len(edges) == len(counts) + 1 and max(counts) > 0:
        lo, hi = edges[0], edges[-1]
        x = _scale(lo, hi)
        parts = _bars(edges, counts, x)
    else:
        q, lv = stats.get("quantiles") or [], stats.get("quantile_levels") or []
        if not q:
            return None
        lo, hi = 0.0, max(max(q), stats.get("max_act") or 0.0) or 1.0
        x = _scale(lo, hi)
        pts = " ".join(f"{x(v):.1f},{H - PAD - level * (H - 2 * PAD):.1f}" for v, level in zip(q, lv))
        parts = [tag("polyline", class_="density", points=pts)]
    return _svg(parts + _axis(stats, lo, hi, x), "histogram", H, "activation histogram")


def _order(node: dict) -> tuple[str, int]:
    source, index = node["id"].rsplit("/", 1)
    return source, int(index)


def layered_graph(g: dict) -> Html | None:
    nodes, edges = g["nodes"], g["edges"]
    if not nodes:
        return None
    layers = sorted({n["layer"] for n in nodes}, reverse=True)
    row_h, pad, nw, nh = 90, 60, 64, 24
    h = row_h * len(layers) + 20
    pos = {}
    for r, layer in enumerate(layers):
        row = sorted((n for n in nodes if n["layer"] == layer), key=_order)
        for i, n in enumerate(row):
            pos[n["id"]] = (pad + (i + 0.5) * (W - pad) / len(row), 20 + r * row_h + nh / 2)
    wmax = max((abs(e["weight"]) for e in edges), default=1.0) or 1.0
    parts = [
        tag("text", f"layer {layer}", class_="layerlabel", x="4", y=f"{24 + r * row_h + nh / 2:.0f}")
        for r, layer in enumerate(layers)
    ]
    for e in edges:
        (x1, y1), (x2, y2) = pos[e["source"]], pos[e["target"]]
        parts.append(
            tag(
                "line",
                tag("title", f"{e['source']} -> {e['target']}: {e['weight']:.4g}"),
                class_="edge " + ("pos" if e["weight"] >= 0 else "neg"),
                x1=f"{x1:.1f}",
                y1=f"{y1:.1f}",
                x2=f"{x2:.1f}",
                y2=f"{y2:.1f}",
                stroke_width=f"{1 + 5 * abs(e['weight']) / wmax:.2f}",
                data_weight=f"{e['weight']:.6g}",
            )
        )
    for n in nodes:
        x, y = pos[n["id"]]
        label = n["id"].rsplit("/", 1)[1]
        parts.append(
            tag(
                "a",
                tag(
                    "g",
                    tag("title", n["id"] + (": " + n["description"] if n["description"] else "")),
                    tag("rect", x=f"{x - nw / 2:.1f}", y=f"{y - nh / 2:.1f}", width=str(nw), height=str(nh), rx="4"),
                    tag("text", label, x=f"{x:.1f}", y=f"{y + 4:.1f}", text_anchor="middle"),
                    class_="node" + (" focus" if n.get("focus") else ""),
                    data_id=n["id"],
                ),
                href=feature_href(n["id"]),
            )
        )
    return _svg(parts, "circuit", h, "circuit graph")
