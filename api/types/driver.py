"""A driver of a target feature through an intermediate one: driver -> via -> target."""

from __future__ import annotations

import strawberry

from api.types.edge import Edge
from api.types.feature import Feature


@strawberry.type(description="A two-edge path driver -> via -> target, ranked by |product of weights|.")
class Driver:
    driver: Feature
    via: Feature
    target: Feature
    first: Edge = strawberry.field(description="The edge driver -> via.")
    second: Edge = strawberry.field(description="The edge via -> target.")
    product: float = strawberry.field(description="first.weight * second.weight.")

    @classmethod
    def from_row(cls, catalog, d) -> Driver:
        first = Edge.make(catalog, d.first.src, d.first.dst, d.first.kind, d.first.variant, d.first.weight, d.first.rel)
        second = Edge.make(
            catalog, d.second.src, d.second.dst, d.second.kind, d.second.variant, d.second.weight, d.second.rel
        )
        return cls(
            driver=first.source, via=first.target, target=second.target, first=first, second=second, product=d.product
        )
