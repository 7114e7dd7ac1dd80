"""A CircuitLens circuit cluster of a feature's examples."""

from __future__ import annotations

import json

import strawberry
from strawberry.scalars import JSON


@strawberry.type(description="A cluster of a feature's examples that share contributors (-1 = noise).")
class Cluster:
    label: int
    n_examples: int
    contributors: JSON | None
    summary: JSON | None

    @classmethod
    def from_row(cls, r: dict) -> Cluster:
        return cls(
            label=r["label"],
            n_examples=r["n_examples"],
            contributors=_json(r["contributors"]),
            summary=_json(r["summary"]),
        )


def _json(text):
    return json.loads(text) if isinstance(text, str) else text
