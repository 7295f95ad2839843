"""Revoked sessions: per user, the time up to which their access tokens are refused.

Whoever ends sessions (auth_service: an account deleted, "sign out everywhere") writes
`revocation_key(user_id)` -> an ISO time into `REVOCATIONS_KV` with `Revocations.revoke`;
the latest time wins. An entry lives as long as the bucket's TTL, which must outlast any
access token. A token issued at or before its user's time is refused (`is_revoked`); one
issued later (the user signed in again) is not.

An entry that cannot be read as a time counts as revoked, always (fail closed): only
auth_service writes the bucket, so such an entry is damage or an attack, and a damaged
revocation must not let a revoked token through. auth_service's next revocation of that
user overwrites it.

`RevocationWatch` keeps the whole list in memory for a process that checks tokens on
every request (the gateway): it lists the bucket, then follows every write to it
(`terra.nats.follow`: the stream's republished copy, what was missed read by sequence; no
consumer). A broker fault makes it start over after a pause, and it is not `caught_up`
until the new listing is read. Until then `revoked_at` asks the bucket directly.
Listeners hear of every time that moves a user's revocation later (to close that user's
open sockets).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from contracts.topology import REVOCATIONS_KV, revocation_key
from terra.nats.faults import BROKER_ERRORS
from terra.nats.follow import Stored, StreamFollower
from terra.nats.listings import live_entries
from terra.records.store import update_entry

log = logging.getLogger(__name__)

_KEY_PREFIX = revocation_key("x")[:-1]  # "user."

Listener = Callable[[str, datetime], None]


def is_revoked(issued_at: float, revoked_at: datetime | None) -> bool:
    """A token issued (`iat`, in seconds) at or before its user's revocation is refused."""
    return revoked_at is not None and issued_at <= revoked_at.timestamp()


# What an unreadable entry means: every token of that user refused, whenever issued.
UNREADABLE = datetime.max.replace(tzinfo=UTC)


def _decode(value: bytes | None) -> datetime | None:
    """The revocation time an entry holds; `UNREADABLE` when it holds anything else."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.decode())
    except (ValueError, UnicodeDecodeError):
        log.error("unreadable revocation entry: its user's tokens are all refused",
                  extra={"value": value[:64]})
        return UNREADABLE
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Revocations:
    """The bucket: write a revocation, read one."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @property
    def kv(self) -> KeyValue:
        return self._kv

    @classmethod
    async def open(cls, js: JetStreamContext) -> Revocations:
        return cls(await js.key_value(REVOCATIONS_KV.bucket))

    async def revoke(self, user_id: str, at: datetime) -> datetime:
        """Refuse the user's tokens issued up to `at` (or a later time already stored);
        returns the time stored. Revision-checked, so a concurrent earlier time never
        overwrites a later one."""

        def later(current: datetime | None) -> datetime | None:
            if current is not None and current is not UNREADABLE and current >= at:
                return None  # a damaged entry is overwritten with a real time
            return at

        seen, written = await update_entry(
            self._kv, revocation_key(user_id), later, decode=_decode,
            encode=lambda moment: moment.astimezone(UTC).isoformat().encode())
        return seen if written is None else written

    async def revoked_at(self, user_id: str) -> datetime | None:
        try:
            entry = await self._kv.get(revocation_key(user_id))
        except KeyNotFoundError:  # also a deleted or expired entry
            return None
        return _decode(entry.value)


class RevocationWatch:
    """Every user's revocation time, in memory, kept current from the bucket. Run `run`
    under a `terra.runtime.supervise.Supervisor`; it never returns and waits out broker faults."""

    def __init__(self, nc: NatsClient, js: JetStreamContext, store: Revocations, *,
                 quiet_s: float = 1.0, retry_pause_s: float = 1.0,
                 keep_s: float = REVOCATIONS_KV.ttl_s or 0.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._nc = nc
        self._js = js
        self.store = store
        self.quiet_s = quiet_s
        self.retry_pause_s = retry_pause_s
        self._keep_s = keep_s  # entries older than this have left the bucket: forget them
        self._clock = clock
        self._revoked: dict[str, datetime] = {}
        self._listeners: list[Listener] = []
        self._seen_seq = 0  # the last stream sequence applied
        self._waiters: list[tuple[int, asyncio.Future]] = []  # `sync` calls: (target, done)
        self._caught_up = False
        self._caught_up_event = asyncio.Event()
        self._pruned_at = clock()
        self.restarts = 0

    # --- what callers use -------------------------------------------------------------------

    @property
    def caught_up(self) -> bool:
        """The list holds every revocation written up to a moment ago."""
        return self._caught_up and self._nc.is_connected

    async def wait_caught_up(self, timeout_s: float) -> bool:
        """Wait (a while) for the first full list; False when it did not come in time."""
        try:
            await asyncio.wait_for(self._caught_up_event.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def on_revoked(self, listener: Listener) -> None:
        """`listener(user_id, revoked_at)` for each revocation that moves a time later."""
        self._listeners.append(listener)

    def known(self, user_id: str) -> datetime | None:
        """What the list says now (without asking the bucket)."""
        return self._revoked.get(user_id)

    async def revoked_at(self, user_id: str) -> datetime | None:
        """From memory once caught up; until then from the bucket itself."""
        if self.caught_up:
            return self._revoked.get(user_id)
        found = await self.store.revoked_at(user_id)
        if found is not None:
            self._apply(user_id, found)
        return self._revoked.get(user_id)

    async def sync(self, timeout_s: float = 1.0) -> bool:
        """Wait until the list holds every entry written before this call (after this
        process asked for a revocation: it applies here before the request is answered,
        not a moment later). False when that did not happen within `timeout_s`; while the
        watch is not caught up there is nothing to wait for (tokens are checked against
        the bucket)."""
        if not self.caught_up:
            return False
        try:
            info = await self._js.stream_info(REVOCATIONS_KV.stream)
        except BROKER_ERRORS:
            return False  # the watch catches up by itself; the caller's work is done
        target = info.state.last_seq
        if self._seen_seq >= target:
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((target, waiter))
        try:
            await asyncio.wait_for(waiter, timeout_s)
        except TimeoutError:
            return False
        finally:
            self._waiters = [(seq, w) for seq, w in self._waiters if w is not waiter]
        return True

    # --- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                await self._watch_once()
            except BROKER_ERRORS as why:
                self.restarts += 1
                log.warning("revocation watch restarts", extra={
                    "reason": f"{type(why).__name__}: {why}", "restarts": self.restarts})
            finally:
                self._set_caught_up(False)
            await asyncio.sleep(self.retry_pause_s)

    async def _watch_once(self) -> None:
        """The bucket's current entries, then each new write, until a broker fault."""
        follower = StreamFollower.of(self._nc, self._js, REVOCATIONS_KV,
                                     quiet_s=self.quiet_s)
        try:
            await follower.subscribe()  # first: no write falls between the list and the copies
            listed_up_to = (await self._js.stream_info(REVOCATIONS_KV.stream)).state.last_seq
            for key, entry in (await live_entries(self.store.kv)).items():
                self._apply_entry(key, entry.value, deleted=False)
            follower.start_after(listed_up_to)
            self._advance(listed_up_to)
            self._set_caught_up(True)
            async for stored in follower.messages():
                if stored is None:
                    self._prune()
                else:
                    self._take(stored)
        finally:
            await follower.close()

    def _take(self, stored: Stored) -> None:
        key = stored.subject.removeprefix(f"$KV.{REVOCATIONS_KV.bucket}.")
        deleted = stored.headers.get("KV-Operation") in ("DEL", "PURGE")
        self._apply_entry(key, stored.data, deleted=deleted)
        self._advance(stored.seq)

    def _apply_entry(self, key: str, value: bytes | None, *, deleted: bool) -> None:
        if not key.startswith(_KEY_PREFIX):
            return
        user_id = key.removeprefix(_KEY_PREFIX)
        if deleted:
            self._revoked.pop(user_id, None)  # an operator took it back
        elif (moment := _decode(value)) is not None:
            self._apply(user_id, moment)

    def _advance(self, seq: int) -> None:
        self._seen_seq = max(self._seen_seq, seq)
        for target, waiter in self._waiters:
            if target <= self._seen_seq and not waiter.done():
                waiter.set_result(None)

    def _set_caught_up(self, value: bool) -> None:
        self._caught_up = value
        if value:
            self._caught_up_event.set()
        else:
            self._caught_up_event.clear()

    def _apply(self, user_id: str, moment: datetime) -> None:
        known = self._revoked.get(user_id)
        if known is not None and known is not UNREADABLE and known >= moment:
            return  # a damaged entry gives way to the next real time auth writes
        self._revoked[user_id] = moment
        for listener in self._listeners:
            try:
                listener(user_id, moment)
            except Exception:  # one listener's bug must not stop the list
                log.exception("revocation listener failed", extra={"user_id": user_id})

    def _prune(self) -> None:
        """Forget entries the bucket has let go (older than its TTL): tokens they refused
        have all expired. At most once a minute."""
        now = self._clock()
        if now - self._pruned_at < 60 or not self._keep_s:
            return
        self._pruned_at = now
        horizon = now - self._keep_s
        self._revoked = {user: t for user, t in self._revoked.items()
                         if t.timestamp() > horizon}
