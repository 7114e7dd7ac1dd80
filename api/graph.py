"""Graph questions over the edges: neighbours, drivers of X via Y, and paths A -> B.

Edges point downstream (source upstream of target). All rankings are by |weight| (or |product
of weights| for drivers and paths), ties broken by fid, so answers are deterministic.

Paths (``paths``), an iterative beam search, one SQL statement per hop:
1. Start with the one partial path [A] (score 1).
2. For hop h = 1..max_hops, read the out-edges of every node at the end of a partial path: its
   ``fanout`` strongest edges (|w|, of the requested sign) into features of layers strictly
   between layer(A) and layer(B) of the same model, plus its edge into B if it has one (PATH_HOP).
3. Extend each partial path by each such edge (score *= w). Extensions that reach B are
   complete; the others are kept, the ``beam`` best by |score|, for the next hop.
4. Return the complete paths ranked by |score| (the product of the weights along the path),
   then by fewer hops, then by their fids: at most ``top_k``.
A path is found when every intermediate hop is among its node's ``fanout`` strongest allowed
edges and the partial path stays in the beam; the last hop into B is always taken. With fanout
and beam large enough this is the exact set of paths of <= max_hops hops.
"""

from __future__ import annotations

from dataclasses import dataclass

from api import queries
from api.context import Context
from api.errors import BadArgument, check_range


@dataclass(frozen=True)
class EdgeRow:
    src: int
    dst: int
    kind: str
    variant: str
    weight: float
    rel: float | None


def _edge_params(kind: str, variant: str | None, sign: int) -> dict:
    return {"kind": kind, "variant": variant, "sign": sign}


def neighbours(
    ctx: Context,
    fid: int,
    upstream: bool,
    kind: str,
    variant: str | None,
    sign: int,
    min_weight: float,
    layers: list[int] | None,
    top_k: int,
) -> list[EdgeRow]:
    check_range("topK", top_k, 1, ctx.limits.max_page)
    model = ctx.catalog.source(fid).model_id
    sids = None if layers is None else ctx.catalog.sids(model, layers)
    sql = queries.neighbours(
        "edges_in" if upstream else "edges_out",
        variant=variant is not None,
        sign=sign != 0,
        min_weight=bool(min_weight),
        layers=sids is not None,
    )
    rows = ctx.rows(
        sql,
        {
            "fid": fid,
            **_edge_params(kind, variant, sign),
            "min_weight": float(min_weight or 0.0),
            "sids": sids,
            "limit": top_k,
        },
    )
    if upstream:
        return [EdgeRow(r["other"], fid, kind, r["variant"], r["weight"], r["rel_contribution"]) for r in rows]
    return [EdgeRow(fid, r["other"], kind, r["variant"], r["weight"], r["rel_contribution"]) for r in rows]


@dataclass(frozen=True)
class DriverRow:
    first: EdgeRow  # driver -> via
    second: EdgeRow  # via -> target
    product: float


def drivers(
    ctx: Context,
    target: int,
    via: int | None,
    via_layer: int | None,
    kind: str,
    variant: str | None,
    sign: int,
    top_k: int,
    fanout: int,
) -> list[DriverRow]:
    """Features Z with edges Z -> Y -> target, ranked by |w(Z->Y) * w(Y->target)|."""
    check_range("topK", top_k, 1, ctx.limits.max_page)
    check_range("fanout", fanout, 1, ctx.limits.max_fanout)
    if via is not None and via_layer is not None:
        raise BadArgument("give either via (a feature) or viaLayer, not both")
    params = {"target": target, **_edge_params(kind, variant, sign), "limit": top_k}
    if via is not None:
        rows = ctx.rows(queries.drivers_via_feature(variant is not None, sign != 0), {**params, "via": via})
    else:
        model = ctx.catalog.source(target).model_id
        sids = None if via_layer is None else ctx.catalog.sids(model, [via_layer])
        if sids == []:
            raise BadArgument(f"viaLayer {via_layer} has no source in model {model!r}")
        rows = ctx.rows(
            queries.drivers_via_layer(variant is not None, sign != 0, sids is not None),
            {**params, "sids": sids, "fanout": fanout},
        )
    return [
        DriverRow(
            EdgeRow(r["z"], r["y"], kind, r["variant"], r["w1"], r["r1"]),
            EdgeRow(r["y"], target, kind, r["variant"], r["w2"], r["r2"]),
            r["product"],
        )
        for r in rows
    ]


@dataclass(frozen=True)
class PathRow:
    edges: tuple[EdgeRow, ...]
    score: float


def paths(
    ctx: Context,
    source: int,
    target: int,
    max_hops: int,
    kind: str,
    variant: str | None,
    sign: int,
    fanout: int,
    beam: int,
    top_k: int,
) -> list[PathRow]:
    lim = ctx.limits
    check_range("maxHops", max_hops, 1, lim.max_hops)
    check_range("fanout", fanout, 1, lim.max_fanout)
    check_range("beam", beam, 1, lim.max_beam)
    check_range("topK", top_k, 1, lim.max_page)
    cat = ctx.catalog
    a, b = cat.source(source), cat.source(target)
    if a.model_id != b.model_id or a.layer >= b.layer:
        raise BadArgument(
            f"paths go downstream within one model: {cat.public_id(source)} (layer {a.layer}) "
            f"cannot reach {cat.public_id(target)} (layer {b.layer})"
        )
    between = [s.sid for s in cat.by_sid.values() if s.model_id == a.model_id and a.layer < s.layer < b.layer]
    partial: list[PathRow] = [PathRow((), 1.0)]
    done: list[PathRow] = []
    for _hop in range(max_hops):
        ends = sorted({p.edges[-1].dst if p.edges else source for p in partial})
        rows = ctx.rows(
            queries.path_hop(variant is not None, sign != 0),
            {
                "frontier": ends,
                "target": target,
                "sids": between,
                "fanout": fanout,
                **_edge_params(kind, variant, sign),
            },
        )
        out: dict[int, list[EdgeRow]] = {}
        for r in rows:
            out.setdefault(r["src"], []).append(
                EdgeRow(r["src"], r["dst"], kind, r["variant"], r["weight"], r["rel_contribution"])
            )
        grown = [
            PathRow(p.edges + (e,), p.score * e.weight)
            for p in partial
            for e in out.get(p.edges[-1].dst if p.edges else source, [])
        ]
        done += [p for p in grown if p.edges[-1].dst == target]
        partial = sorted((p for p in grown if p.edges[-1].dst != target), key=_rank)[:beam]
        if not partial:
            break
    return sorted(done, key=_rank)[:top_k]


def _rank(p: PathRow):
    return (-abs(p.score), len(p.edges), tuple(e.dst for e in p.edges))
