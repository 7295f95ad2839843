"""Paged listings of the caller's things (images, models, photo sets, jobs): newest first,
a page at a time, with an opaque cursor.

The order is keyset order: (created_at, id), both descending, the id breaking ties. A
cursor is the position of the last item a page showed, and the next page is what comes
strictly after it, so items added while a client pages (newer, so before the first page)
or deleted meanwhile never make it see an item twice or miss one that existed when it
started.

A cursor is not signed: it selects nothing by itself. Every listing reads only the
caller's own keys (`<user_id>.*`, `uploads/<user_id>/`), so a forged or borrowed cursor
can only move the caller's position among the caller's own items. It is still checked
strictly (canonical base64url JSON, a valid id, a sane time) and carries a fingerprint
of what it was made for (the listing, the caller, the filters): one made for another
user, another listing or other filters is refused (422 naming `cursor`) rather than
quietly mixed. An HMAC would add nothing that scoping does not already give, and would
need a secret shared by every gateway replica and kept through rotations.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from contracts.ids import InvalidId, checked_id
from terra.errors import TerraError

ItemT = TypeVar("ItemT")

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
CURSOR_MAX_CHARS = 256
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"  # base64url without padding
_CURSOR_RE = re.compile(CURSOR_PATTERN)
# What a listing's presigned URLs are good for (what it says in their `..._expire_at`).
PRESIGNED_FOR = timedelta(minutes=15)
_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_LATEST_MICROS = (datetime(9999, 12, 31, tzinfo=UTC) - _EPOCH) // _MICROSECOND


class InvalidCursor(TerraError):
    """A cursor this listing did not make (damaged, forged, or made for another)."""


@dataclass(frozen=True, order=True)
class Position:
    """Where an item sits in a listing: compared by time, then id."""

    created_at: datetime
    id: str


@dataclass(frozen=True)
class Scope:
    """What a cursor is valid for: one listing of one user with the same filters."""

    listing: str
    user_id: str
    filters: tuple[str, ...] = ()

    def fingerprint(self) -> str:
        text = "\n".join((self.listing, self.user_id, *self.filters))
        digest = hashlib.sha256(text.encode()).digest()[:12]
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def filters(**chosen: Iterable[str] | str | None) -> tuple[str, ...]:
    """A listing's filters as the scope records them: sorted, so the same choice in
    another order is the same scope."""
    parts = []
    for name, value in sorted(chosen.items()):
        values = [] if value is None else [value] if isinstance(value, str) else list(value)
        parts.append(f"{name}={','.join(sorted(str(v) for v in values))}")
    return tuple(parts)


def encode_cursor(position: Position, scope: Scope) -> str:
    return _encoded(position, scope.fingerprint())


def _encoded(position: Position, fingerprint: object) -> str:
    micros = (position.created_at - _EPOCH) // _MICROSECOND  # exact: no float on the way
    payload = {"v": _VERSION, "t": micros, "i": position.id, "s": fingerprint}
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, scope: Scope) -> Position:
    """The position `cursor` names, when this listing made it for this scope; else
    `InvalidCursor` saying why."""
    if len(cursor) > CURSOR_MAX_CHARS or not _CURSOR_RE.match(cursor):
        raise InvalidCursor("not a cursor this API made")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
    except (binascii.Error, ValueError):
        raise InvalidCursor("not a cursor this API made") from None
    if (not isinstance(payload, dict) or set(payload) != {"v", "t", "i", "s"}
            or payload["v"] != _VERSION or type(payload["t"]) is not int
            or not 0 <= payload["t"] <= _LATEST_MICROS):
        raise InvalidCursor("not a cursor this API made")
    try:
        item_id = checked_id(payload["i"])
    except InvalidId:
        raise InvalidCursor("not a cursor this API made") from None
    position = Position(_EPOCH + payload["t"] * _MICROSECOND, item_id)
    # Canonical form only: one position has one cursor (no padding or key-order variants).
    if cursor != _encoded(position, payload["s"]):
        raise InvalidCursor("not a cursor this API made")
    if payload["s"] != scope.fingerprint():
        raise InvalidCursor("this cursor was made for another listing or other filters; "
                            "list again without it")
    return position


@dataclass(frozen=True)
class Paged(Generic[ItemT]):
    items: list[ItemT]
    next_position: Position | None  # None: this is the last page


def page_of(items: Iterable[ItemT], position_of: Callable[[ItemT], Position], limit: int,
            after: Position | None = None) -> Paged[ItemT]:
    """The `limit` newest items strictly after `after` (None: from the newest), and the
    position to go on from when more remain."""
    ordered = sorted(items, key=position_of, reverse=True)
    if after is not None:
        ordered = [item for item in ordered if position_of(item) < after]
    shown = ordered[:limit]
    more = len(ordered) > limit
    return Paged(shown, position_of(shown[-1]) if more and shown else None)


# -- HTTP side: the two query parameters every listing takes, and its answer's shape.

class Page(BaseModel, Generic[ItemT]):
    items: list[ItemT] = Field(description="This page's items, newest first.")
    next_cursor: str | None = Field(
        description="Pass it as `cursor` to get the next page, with the same filters; "
        "null on the last page. Opaque: its form may change.",
        examples=["eyJ2IjoxLCJ0IjoxNzk2NjM1MjAwMDAwMDAwLCJpIjoiN2E5ZiIsInMiOiJhYmMifQ"])


@dataclass(frozen=True)
class PageRequest:
    limit: int
    cursor: str | None

    def page(self, items: Iterable[ItemT], position_of: Callable[[ItemT], Position],
             scope: Scope) -> tuple[list[ItemT], str | None]:
        """This request's page of `items` and the cursor of the next one; a cursor not
        made for `scope` is a 422 naming `cursor`, like any invalid parameter."""
        after = None
        if self.cursor is not None:
            try:
                after = decode_cursor(self.cursor, scope)
            except InvalidCursor as exc:
                raise RequestValidationError([{
                    "type": "value_error", "loc": ("query", "cursor"), "msg": str(exc),
                    "input": self.cursor}]) from exc
        paged = page_of(items, position_of, self.limit, after)
        following = paged.next_position
        return paged.items, None if following is None else encode_cursor(following, scope)


async def page_request(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
    = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(
        min_length=1, max_length=CURSOR_MAX_CHARS, pattern=CURSOR_PATTERN,
        description="`next_cursor` from the page before; leave out for the first page.")]
    = None,
) -> PageRequest:
    return PageRequest(limit, cursor)


Paging = Annotated[PageRequest, Depends(page_request)]
