"""Enumerations shared by several types."""

from __future__ import annotations

from enum import Enum

import strawberry


@strawberry.enum(description="Kind of edge weight: virtual weight (WeightLens), ERA or TWERA.")
class EdgeKind(Enum):
    VIRTUAL = "virtual"
    ERA = "era"
    TWERA = "twera"


@strawberry.enum(description="Sign of a weight (or of a product of weights).")
class Sign(Enum):
    ANY = 0
    POSITIVE = 1
    NEGATIVE = -1


@strawberry.enum(description="Which output tokens: promoted, suppressed, or both.")
class OutputSide(Enum):
    PROMOTED = "promoted"
    SUPPRESSED = "suppressed"
    BOTH = "both"
