"""Ids: what may become a subject token or a KV key part, and how a new one is made."""

from __future__ import annotations

import re
import uuid
from typing import Annotated

from pydantic import StringConstraints

# Ids become subject tokens (events end in the user id) and KV keys, so they may not hold
# `.`, `*`, `>` or whitespace. The one rule for every such token: `checked_id`.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
_ID_RE = re.compile(ID_PATTERN)


class InvalidId(ValueError):
    """A value that would break out of its subject token or KV key."""


def checked_id(value: str, what: str = "id") -> str:
    """`value` when it is safe as one subject token or key part; else `InvalidId`."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise InvalidId(f"invalid {what}: {value!r:.80}")
    return value


def new_id() -> str:
    return uuid.uuid4().hex
