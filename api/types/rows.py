"""What the types' ``from_row`` share: a row's columns become the fields of the same names."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")  # a dataclass (strawberry's types are)


def from_columns(cls: type[T], row: dict, **computed: Any) -> T:
    """A ``cls``: each of its constructor's fields from ``row``'s column of that name, but for those
    given in ``computed`` (ids made from numbers, JSON parsed, values not in the row)."""
    same_named = {f.name: row[f.name] for f in dataclasses.fields(cls) if f.init and f.name not in computed}
    return cls(**same_named, **computed)
