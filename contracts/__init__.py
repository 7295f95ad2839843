"""Terra's wire contracts: every message, subject, stream and bucket, defined once."""

from contracts.base import Command, Event, Message, Model, utcnow
from contracts.ids import Id, new_id

__all__ = ["Command", "Event", "Id", "Message", "Model", "new_id", "utcnow"]
