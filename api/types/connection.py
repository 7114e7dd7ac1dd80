"""Cursor pagination (Relay style): a page of items, their cursors, and whether more follow."""

from __future__ import annotations

import base64
import re
from typing import Generic, TypeVar

import strawberry

from api.errors import BadArgument

T = TypeVar("T")


@strawberry.type(description="Where a page ends, and whether another follows.")
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type(description="An item of a page with its cursor.")
class Item(Generic[T]):
    cursor: str
    node: T


@strawberry.type(description="A page of items.")
class Connection(Generic[T]):
    edges: list[Item[T]]
    page_info: PageInfo

    @strawberry.field(description="The items of the page, without cursors.")
    def nodes(self) -> list[T]:
        return [e.node for e in self.edges]


def encode_cursor(key: int) -> str:
    return base64.urlsafe_b64encode(f"fid:{key}".encode()).decode()


def decode_cursor(cursor: str | None) -> int:
    """The key after which the next page starts (-1: from the beginning)."""
    if cursor is None:
        return -1
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
    except ValueError:
        text = ""
    if not text.startswith("fid:") or re.fullmatch(r"[0-9]{1,20}", text[4:]) is None:
        raise BadArgument(f"cursor {cursor!r} is not a cursor this API returned")
    return int(text[4:])


def page(rows: list, first: int, key, node) -> Connection:
    """Rows fetched with LIMIT first+1 -> a Connection; ``key(row)`` is the cursor key, ``node(row)`` the item."""
    items = [Item(cursor=encode_cursor(key(r)), node=node(r)) for r in rows[:first]]
    return Connection(
        edges=items, page_info=PageInfo(has_next_page=len(rows) > first, end_cursor=items[-1].cursor if items else None)
    )
