"""An activating example of a feature: a window of tokens with the feature's activation on each."""

from __future__ import annotations

import strawberry

from api.types.rows import from_columns


@strawberry.type(description="A top or quantile example of a feature, with its token window.")
class Example:
    id: strawberry.ID
    kind: str = strawberry.field(description="'top' or 'quantile'.")
    bin: int | None
    sample_weight: float | None
    doc_id: int
    pos: int = strawberry.field(description="Document position of the activating token.")
    activation: float
    window_start: int
    tokens: list[int]
    token_strs: list[str]
    acts: list[float]

    @classmethod
    def from_row(cls, r: dict) -> Example:
        return from_columns(cls, r, id=strawberry.ID(str(r["example_id"])))
