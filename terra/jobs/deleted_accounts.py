"""Deleted accounts: auth_service marks one before announcing its deletion; job services ask.

Erasure runs when `account.deleted` arrives, and once more a minute later. A command of
that account can still come after both passes (a training command waits up to a week in
its stream, a redelivery comes when it comes). The mark (`DELETED_ACCOUNTS_KV`, kept
longer than any command waits) lets the job lifecycle drop such a command before it runs,
and refuse to record a result a running job produces after the account went.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import UTC, datetime

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from contracts.topology import DELETED_ACCOUNTS_KV, deleted_account_key

_REMEMBERED = 10_000  # deleted ids kept in memory: a deletion is never undone


class DeletedAccounts:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self._known: OrderedDict[str, None] = OrderedDict()

    @classmethod
    async def open(cls, js: JetStreamContext) -> DeletedAccounts:
        return cls(await js.key_value(DELETED_ACCOUNTS_KV.bucket))

    async def mark(self, user_id: str, at: datetime) -> None:
        await self._kv.put(deleted_account_key(user_id), at.astimezone(UTC).isoformat().encode())

    async def is_deleted(self, user_id: str) -> bool:
        """Asks the bucket each time until the answer is yes (then remembers it): a live
        account is asked about again, since it may be deleted at any moment."""
        if user_id in self._known:
            return True
        try:
            entry = await self._kv.get(deleted_account_key(user_id))
        except KeyNotFoundError:  # never deleted (or deleted long ago: nothing is left)
            return False
        if not entry.value:
            return False
        self._known[user_id] = None
        while len(self._known) > _REMEMBERED:
            self._known.popitem(last=False)
        return True
