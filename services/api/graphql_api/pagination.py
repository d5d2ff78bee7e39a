"""Relay-style connections with opaque, key-based cursors.

Cursors encode the sort key of the last item (a circuit id, an edge name), never an offset,
so a page stays correct while rows are added before it. One generic ``Connection`` type
gives every list the same shape: ``edges { cursor node }`` and ``pageInfo``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import strawberry

from .errors import InputError

T = TypeVar("T")
Item = TypeVar("Item")

DEFAULT_PAGE_SIZE = 20


@strawberry.type
class PageInfo:
    """Where this page ends and whether another follows."""

    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class ConnectionEdge(Generic[T]):
    """One item of a page with the cursor that resumes after it."""

    cursor: str
    node: T


@strawberry.type
class Connection(Generic[T]):
    """A page of items in a defined order."""

    edges: list[ConnectionEdge[T]]
    page_info: PageInfo
    total_count: int | None = strawberry.field(
        default=None, description="Number of items in the whole list, when known cheaply."
    )

    @strawberry.field(description="The items of the page without their cursors.")
    def nodes(self) -> list[T]:
        return [edge.node for edge in self.edges]


def encode_cursor(key: str) -> str:
    """An opaque cursor for a sort key."""
    return base64.urlsafe_b64encode(key.encode()).decode()


def decode_cursor(cursor: str | None, field: str = "after") -> str | None:
    """The sort key inside a cursor; a cursor this API did not hand out is an InputError."""
    if cursor is None:
        return None
    try:
        key = base64.b64decode(cursor.encode(), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        key = ""
    if not key:
        raise InputError(field, f"not a cursor returned by this API: {cursor!r}")
    return key


def check_first(first: int, max_page_size: int, field: str = "first") -> int:
    """The page size, refused outside 1..max_page_size (the bound on result sizes)."""
    if first < 1 or first > max_page_size:
        raise InputError(field, f"must be between 1 and {max_page_size}, got {first}")
    return first


def paginate_sorted(
    items: Sequence[Item],
    key: Callable[[Item], str],
    first: int,
    after: str | None,
    max_page_size: int,
    convert: Callable[[Item], T],
) -> Connection[T]:
    """Page through an in-memory list by its sort key (items must be sorted by ``key``)."""
    check_first(first, max_page_size)
    after_key = decode_cursor(after)
    start = 0
    if after_key is not None:
        start = next((i for i, item in enumerate(items) if key(item) > after_key), len(items))
    chunk = items[start : start + first]
    edges = [ConnectionEdge(cursor=encode_cursor(key(item)), node=convert(item)) for item in chunk]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=start + first < len(items),
            end_cursor=edges[-1].cursor if edges else None,
        ),
        total_count=len(items),
    )


def paginate_in_order(
    items: Sequence[Item],
    first: int,
    after: str | None,
    max_page_size: int,
    convert: Callable[[Item], T],
) -> Connection[T]:
    """Page through a list whose order has no sortable key; the key is the item's rank."""
    ranked = list(enumerate(items))
    return paginate_sorted(
        ranked,
        key=lambda pair: f"{pair[0]:012d}",
        first=first,
        after=after,
        max_page_size=max_page_size,
        convert=lambda pair: convert(pair[1]),
    )
