"""An explanation (description) of a feature or of one of its clusters, with its scores."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from api import queries
from api.types.cluster import _json
from api.types.rows import from_columns
from api.types.score import Score


@strawberry.type(description="A description of a feature, by one method, with its parameters.")
class Explanation:
    id: strawberry.ID
    cluster_label: int | None = strawberry.field(description="NULL: the whole feature.")
    method: str
    text: str
    tokens: list[str] | None
    params: JSON | None
    created_at: datetime
    fid: strawberry.Private[int]

    @strawberry.field(description="Scores of this explanation.")
    def scores(self, info: strawberry.Info) -> list[Score]:
        rows = info.context.rows(queries.FEATURE_SCORES, {"fid": self.fid, "explanation_id": int(self.id)})
        return [Score.from_row(r) for r in rows]

    @classmethod
    def from_row(cls, fid: int, r: dict) -> Explanation:
        return from_columns(cls, r, id=strawberry.ID(str(r["explanation_id"])), params=_json(r["params"]), fid=fid)
