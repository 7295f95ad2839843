"""What every message on the wire has in common.

Messages are frozen, carry a `type` literal naming their schema and version, and ignore
unknown fields so that producers may add optional fields within a version.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

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


def utcnow() -> datetime:
    return datetime.now(UTC)


class Model(BaseModel):
    """A frozen value that ignores unknown fields (additive changes within a version)."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Message(Model):
    message_id: Id = Field(default_factory=new_id)
    correlation_id: str = Field(
        default_factory=new_id,
        max_length=128,
        description="The REST request or job that caused this message.",
    )
    occurred_at: AwareDatetime = Field(default_factory=utcnow)


class Command(Message):
    """An imperative request with exactly one consumer."""

    domain: ClassVar[str]
    verb: ClassVar[str]

    def subject(self) -> str:
        from contracts.topology import command_subject

        return command_subject(self.domain, self.verb)


class Event(Message):
    """A past-tense fact that fans out; its subject ends in the owning user's id."""

    domain: ClassVar[str]
    name: ClassVar[str]
    user_id: Id

    def subject(self) -> str:
        from contracts.topology import event_subject

        return event_subject(self.domain, self.name, self.user_id)
