"""An edge of the feature graph: upstream feature -> downstream feature, with its weight."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import strawberry

if TYPE_CHECKING:
    from api.types.feature import Feature


@strawberry.type(description="A weighted edge source -> target (source upstream of target).")
class Edge:
    kind: str = strawberry.field(description="'virtual', 'era' or 'twera'.")
    variant: str
    weight: float
    rel_contribution: float | None = strawberry.field(description="|c| / (sum|s| + sum|c|), WeightLens edges.")
    source: Annotated[Feature, strawberry.lazy("api.types.feature")]
    target: Annotated[Feature, strawberry.lazy("api.types.feature")]

    @classmethod
    def make(cls, catalog, src: int, dst: int, kind: str, variant: str, weight: float, rel) -> Edge:
        from api.types.feature import Feature

        return cls(
            kind=kind,
            variant=variant,
            weight=weight,
            rel_contribution=rel,
            source=Feature.from_fid(catalog, src),
            target=Feature.from_fid(catalog, dst),
        )
