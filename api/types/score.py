"""A score of a feature's description (e.g. token-membership precision)."""

from __future__ import annotations

import strawberry
from strawberry.scalars import JSON

from api.types.cluster import _json


@strawberry.type(description="One metric of one scoring method, for a feature or one of its explanations.")
class Score:
    id: strawberry.ID
    explanation_id: strawberry.ID | None
    method: str
    metric: str
    value: float | None
    data: str | None = strawberry.field(description="The held-out text it was measured on.")
    params: JSON | None

    @classmethod
    def from_row(cls, r: dict) -> Score:
        eid = r["explanation_id"]
        return cls(
            id=strawberry.ID(str(r["score_id"])),
            explanation_id=None if eid is None else strawberry.ID(str(eid)),
            method=r["method"],
            metric=r["metric"],
            value=r["value"],
            data=r["data"],
            params=_json(r["params"]),
        )
