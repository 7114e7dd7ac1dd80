"""A transcoder feature, addressed by its public id model/source/index (Neuronpedia's convention)."""

from __future__ import annotations

import strawberry

from api import graph, queries
from api.errors import check_range
from api.types.cluster import Cluster
from api.types.edge import Edge
from api.types.enums import EdgeKind, OutputSide, Sign
from api.types.example import Example
from api.types.explanation import Explanation
from api.types.score import Score
from api.types.stats import FeatureStats
from api.types.token import Token
from atlas.ids import split_fid


def _edges_field(upstream: bool, description: str):
    """The field ``upstream`` (True) or ``downstream`` of Feature: its edges on that side, with the filters
    as arguments (Feature._edges)."""

    def edges(
        self,
        info: strawberry.Info,
        kind: EdgeKind = EdgeKind.VIRTUAL,
        variant: str | None = None,
        sign: Sign = Sign.ANY,
        min_weight: float = 0.0,
        layers: list[int] | None = None,
        top_k: int = 10,
    ) -> list[Edge]:
        return self._edges(info, upstream, kind, variant, sign, min_weight, layers, top_k)

    return strawberry.field(resolver=edges, description=description)


@strawberry.type(description="A transcoder feature with everything the atlas knows about it.")
class Feature:
    id: strawberry.ID = strawberry.field(description="Public id model/source/index, e.g. gpt2-small/8-tres-dc/1234.")
    model: str
    source: str = strawberry.field(description="The transcoder layer, '{layer}-{set_name}'.")
    layer: int
    index: int
    fid: strawberry.Private[int]
    _core: strawberry.Private[dict | None] = None

    @classmethod
    def from_fid(cls, catalog, fid: int) -> Feature:
        s = catalog.source(fid)
        return cls(
            id=strawberry.ID(catalog.public_id(fid)),
            model=s.model_id,
            source=s.source_id,
            layer=s.layer,
            index=split_fid(fid).idx,
            fid=fid,
        )

    def core(self, info) -> dict:
        """WeightLens and activation statistics, fetched once per feature object however many fields ask."""
        if self._core is None:
            self._core = info.context.rows(queries.FEATURE_CORE, {"fid": self.fid})[0]
        return self._core

    @strawberry.field(description="WeightLens description terms joined by ', ' (null: not described).")
    def description(self, info: strawberry.Info) -> str | None:
        terms = (self.core(info))["description"]
        return ", ".join(terms) if terms else None

    @strawberry.field(description="WeightLens description terms.")
    def description_terms(self, info: strawberry.Info) -> list[str]:
        return (self.core(info))["description"] or []

    @strawberry.field(description="[BOS] + description activates the feature (WeightLens validation).")
    def validated(self, info: strawberry.Info) -> bool | None:
        return (self.core(info))["validated"]

    @strawberry.field(description="Validated input tokens (before inheritance).")
    def n_input_tokens(self, info: strawberry.Info) -> int | None:
        return (self.core(info))["n_input_tokens"]

    @strawberry.field(description="Activation statistics over the corpus (null: not computed).")
    def stats(self, info: strawberry.Info) -> FeatureStats | None:
        return FeatureStats.from_row(self.core(info))

    @strawberry.field(description="Input tokens (W_E f_enc), strongest first.")
    def input_tokens(self, info: strawberry.Info, first: int = 10) -> list[Token]:
        return self._tokens(info, ["input"], first)

    @strawberry.field(description="Output tokens (f_dec W_U), promoted and/or suppressed, strongest first.")
    def output_tokens(self, info: strawberry.Info, side: OutputSide = OutputSide.BOTH, first: int = 10) -> list[Token]:
        sides = ["promoted", "suppressed"] if side == OutputSide.BOTH else [side.value]
        return self._tokens(info, sides, first)

    def _tokens(self, info, sides: list[str], first: int) -> list[Token]:
        check_range("first", first, 1, info.context.limits.max_page)
        rows = info.context.rows(queries.feature_tokens(sides), {"fid": self.fid, "limit": first})
        return [Token.from_row(r) for r in rows]

    @strawberry.field(description="Activating examples, highest activation first.")
    def examples(self, info: strawberry.Info, kind: str | None = None, first: int = 10) -> list[Example]:
        check_range("first", first, 1, info.context.limits.max_page)
        rows = info.context.rows(queries.FEATURE_EXAMPLES, {"fid": self.fid, "kind": kind, "limit": first})
        return [Example.from_row(r) for r in rows]

    @strawberry.field(description="CircuitLens clusters of the feature's examples.")
    def clusters(self, info: strawberry.Info) -> list[Cluster]:
        return [Cluster.from_row(r) for r in info.context.rows(queries.FEATURE_CLUSTERS, {"fid": self.fid})]

    @strawberry.field(description="Explanations of the feature (and of its clusters), by every method.")
    def explanations(self, info: strawberry.Info) -> list[Explanation]:
        rows = info.context.rows(queries.FEATURE_EXPLANATIONS, {"fid": self.fid})
        return [Explanation.from_row(self.fid, r) for r in rows]

    @strawberry.field(description="Every score of the feature's descriptions.")
    def scores(self, info: strawberry.Info) -> list[Score]:
        rows = info.context.rows(queries.FEATURE_SCORES, {"fid": self.fid, "explanation_id": None})
        return [Score.from_row(r) for r in rows]

    upstream = _edges_field(True, "Edges into this feature from upstream features, strongest |weight| first.")
    downstream = _edges_field(False, "Edges from this feature to downstream features, strongest |weight| first.")

    def _edges(self, info, upstream, kind, variant, sign, min_weight, layers, top_k) -> list[Edge]:
        ctx = info.context
        rows = graph.neighbours(ctx, self.fid, upstream, kind.value, variant, sign.value, min_weight, layers, top_k)
        return [Edge.make(ctx.catalog, e.src, e.dst, e.kind, e.variant, e.weight, e.rel) for e in rows]
