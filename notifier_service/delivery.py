"""The rules of one delivery, pure: its id, what a send came to (`Outcome`), when to try
again, and the `Sender` every channel implements."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Protocol

from contracts.notifications import Notice

Draw = type(random.random)

# Each scheduled wait is drawn within ±JITTER of itself: targets that failed together
# (one outage) do not all come back at the same second.
JITTER = 0.1


def delivery_id(event_id: str, target_id: str) -> str:
    """The same for one event and one target however often either comes back: it is the
    webhook's `webhook-id`, the key of the delivery record and the stream's dedup id."""
    return hashlib.sha256(f"terra-delivery:{event_id}:{target_id}".encode()).hexdigest()[:32]


def target_id(user_id: str, address: str) -> str:
    """A target's id from what it is (an endpoint, a token): registering the same browser
    or phone twice finds the one record."""
    return hashlib.sha256(f"terra-target:{user_id}:{address}".encode()).hexdigest()[:24]


class OutcomeKind(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"  # worth another attempt on the schedule (timeouts, 5xx, 429)
    GONE = "gone"  # the target says it no longer exists: remove it
    REFUSED = "refused"  # this notice can never go there (a 400, a payload too large)


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    status_code: int | None = None
    error: str | None = None
    retry_after_s: float | None = None  # from a 429/502/503's `Retry-After`
    duration_ms: int = 0
    expo_tickets: tuple[str, ...] = field(default=())  # Expo receipts to read later

    @property
    def summary(self) -> str:
        code = f"HTTP {self.status_code}" if self.status_code is not None else "no answer"
        return f"{code}: {self.error}" if self.error else code


class Sender(Protocol):
    async def send(self, target: object, notice: Notice, delivery_id: str) -> Outcome: ...


def next_wait_s(attempts: int, schedule: tuple[float, ...], *,
                retry_after_s: float | None = None, max_retry_after_s: float = 86_400.0,
                draw: Draw = random.random) -> float | None:
    """The wait before the next attempt after `attempts` failed ones (from 1), or None
    when the schedule is spent. A `Retry-After` makes it at least that long (capped)."""
    if attempts < 1:
        raise ValueError("attempts are counted from 1")
    if attempts > len(schedule):
        return None
    wait = schedule[attempts - 1] * (1 - JITTER + 2 * JITTER * draw())
    if retry_after_s is not None:
        wait = max(wait, min(retry_after_s, max_retry_after_s))
    return wait


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP date; None when absent or
    unreadable (the schedule then decides)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def web_push_topic(key: str) -> str:
    """RFC 8030's `Topic` (at most 32 base64url characters): a later message with the same
    topic replaces one the push service still holds. One per job."""
    return hashlib.sha256(f"terra-topic:{key}".encode()).hexdigest()[:32]
