"""Statistics: of one feature's activations, and of the whole atlas (counts, coverage per layer)."""

from __future__ import annotations

import strawberry

from api import queries


@strawberry.type(description="Activation statistics of a feature over the corpus.")
class FeatureStats:
    n_tokens: int
    n_active: int
    frequency: float
    max_act: float | None
    mean_act: float | None = strawberry.field(description="Mean over active tokens.")
    quantiles: list[float] | None
    quantile_levels: list[float] | None
    hist_edges: list[float] | None
    hist_counts: list[int] | None

    @classmethod
    def from_row(cls, r: dict) -> FeatureStats | None:
        if r["n_tokens"] is None:
            return None
        return cls(**{k: r[k] for k in queries.FEATURE_STATS_COLUMNS})


@strawberry.type(description="How much of one layer (source) the atlas covers.")
class LayerCoverage:
    model_id: str
    source_id: str
    layer: int
    n_features: int
    n_described: int
    n_validated: int
    n_alive: int
    n_explained: int

    @classmethod
    def from_row(cls, r: dict) -> LayerCoverage:
        return cls(**r)


@strawberry.type(description="Edge count of one kind.")
class EdgeCount:
    kind: str
    n: int


@strawberry.type(description="Counts over the whole atlas, and coverage per layer.")
class AtlasStats:
    n_models: int
    n_sources: int
    n_features: int
    n_examples: int
    n_explanations: int
    n_clusters: int
    edges: list[EdgeCount]
    coverage: list[LayerCoverage]
