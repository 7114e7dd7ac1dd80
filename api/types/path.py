"""A path of edges from one feature to another (api/graph.py states the ranking)."""

from __future__ import annotations

import strawberry

from api.types.edge import Edge
from api.types.feature import Feature


@strawberry.type(description="A path source -> ... -> target; score = product of its edge weights.")
class Path:
    features: list[Feature]
    edges: list[Edge]
    score: float
    hops: int

    @classmethod
    def from_row(cls, catalog, p) -> Path:
        edges = [Edge.make(catalog, e.src, e.dst, e.kind, e.variant, e.weight, e.rel) for e in p.edges]
        return cls(features=[edges[0].source] + [e.target for e in edges], edges=edges, score=p.score, hops=len(edges))
