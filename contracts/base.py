"""What every message on the wire has in common.

Messages are frozen, carry a `type` literal naming their schema and version, and ignore
unknown fields so that producers may add optional fields within a version.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from contracts.ids import Id, new_id
from contracts.topology import command_subject, event_subject


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
        return command_subject(self.domain, self.verb)


class Event(Message):
    """A past-tense fact that fans out; its subject ends in the owning user's id."""

    domain: ClassVar[str]
    name: ClassVar[str]
    user_id: Id

    def subject(self) -> str:
        return event_subject(self.domain, self.name, self.user_id)
