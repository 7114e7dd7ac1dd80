"""Errors the API shows to clients as they are; any other exception is masked."""

from __future__ import annotations

from graphql import GraphQLError

from atlas.errors import AtlasError


class BadArgument(AtlasError):
    """An argument is out of range or inconsistent; the message names it and the allowed range."""


class TimeLimit(AtlasError):
    """The request or one of its SQL statements ran past the time limit."""


def check_range(name: str, value: int | float | None, lo: float, hi: float) -> None:
    if value is not None and not (lo <= value <= hi):
        raise BadArgument(f"argument {name} = {value} is out of range [{lo}, {hi}]")


def should_mask(error: GraphQLError) -> bool:
    """Keep our own errors and GraphQL's validation errors; mask everything else."""
    original = error.original_error
    return original is not None and not isinstance(original, (AtlasError, GraphQLError))
