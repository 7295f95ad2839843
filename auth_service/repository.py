"""JetStream KV adapters: accounts, credential indexes, refresh tokens; and the event sink.

Accounts are written record-first, then the email index is created (create-if-absent):
that create is the commit point. A record without an index pointing back at it is
invisible, so a process killed between the two steps leaves the email free.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

from nats.js import JetStreamContext
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import TypeAdapter

from auth_service.domain import UserRecord, email_digest
from contracts.topology import CREDENTIALS_KV, REFRESH_TOKENS_KV, USERS_KV
from terra.nats.listings import live_entries
from terra.records.store import update_entry

log = logging.getLogger(__name__)

_USER_RECORD = TypeAdapter(UserRecord)


def email_key(email: str) -> str:
    return f"email.{email_digest(email)}"


def google_key(sub: str) -> str:
    # Google subjects are decimal strings; anything else is refused by KV key validation.
    return f"google.{sub}"


async def _get(kv: KeyValue, key: str) -> KeyValue.Entry | None:
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None
    return entry if entry.value is not None else None


class UserRepository:
    def __init__(self, users: KeyValue, credentials: KeyValue) -> None:
        self._users = users
        self._credentials = credentials

    @classmethod
    async def open(cls, js: JetStreamContext) -> UserRepository:
        return cls(await js.key_value(USERS_KV.bucket), await js.key_value(CREDENTIALS_KV.bucket))

    # --- records ------------------------------------------------------------------------

    async def save(self, user: UserRecord) -> None:
        await self._users.put(user.id, _USER_RECORD.dump_json(user))

    async def get_record(self, user_id: str) -> UserRecord | None:
        """The stored record, committed or not (account deletion cleans up both)."""
        entry = await _get(self._users, user_id)
        return _USER_RECORD.validate_json(entry.value) if entry else None

    async def update(self, user_id: str,
                     change: Callable[[UserRecord], UserRecord | None]) -> UserRecord | None:
        """Rewrite the stored record with `change(record)` (None: leave it), revision-
        checked and retried, so a concurrent write is never overwritten by a stale copy and
        a purged record is never written back. Returns what is stored, None when the
        record is gone."""
        seen, written = await update_entry(self._users, user_id, change,
                                           decode=_USER_RECORD.validate_json,
                                           encode=_USER_RECORD.dump_json, create=False)
        return seen if written is None else written

    async def delete_record(self, user_id: str) -> None:
        await self._users.purge(user_id)  # purge: no earlier revision stays readable

    async def get(self, user_id: str) -> UserRecord | None:
        """A committed account: its email index points back at it."""
        user = await self.get_record(user_id)
        if user is None or await self.user_id_for_email(user.email) != user_id:
            return None
        return user

    # --- indexes ------------------------------------------------------------------------

    async def claim_email(self, email: str, user_id: str) -> bool:
        """Create the email index; False when another account holds the email."""
        return await self._claim(email_key(email), user_id)

    async def claim_google(self, sub: str, user_id: str) -> bool:
        return await self._claim(google_key(sub), user_id)

    async def user_id_for_email(self, email: str) -> str | None:
        entry = await _get(self._credentials, email_key(email))
        return entry.value.decode() if entry else None

    async def find_by_email(self, email: str) -> UserRecord | None:
        """The committed account of a (normalised) email: the index, then the record that
        names the same email (what `get` checks, without reading the index twice)."""
        user_id = await self.user_id_for_email(email)
        user = await self.get_record(user_id) if user_id else None
        return user if user is not None and user.email == email else None

    async def find_by_google(self, sub: str) -> UserRecord | None:
        """The committed account linked to this Google subject; stale links are removed."""
        entry = await _get(self._credentials, google_key(sub))
        if entry is None:
            return None
        user = await self.get(entry.value.decode())
        if user is None or user.google_sub != sub:
            await self._release(google_key(sub), entry.value.decode())
            return None
        return user

    async def release_email(self, email: str, user_id: str) -> None:
        await self._release(email_key(email), user_id)

    async def release_google(self, sub: str, user_id: str) -> None:
        await self._release(google_key(sub), user_id)

    async def _claim(self, key: str, user_id: str) -> bool:
        try:
            await self._credentials.create(key, user_id.encode())
        except KeyWrongLastSequenceError:
            return False
        return True

    async def _release(self, key: str, user_id: str) -> None:
        """Delete an index only while it still points at this user (another may own it now)."""
        entry = await _get(self._credentials, key)
        if entry is None or entry.value.decode() != user_id:
            return
        try:
            await self._credentials.delete(key, last=entry.revision)
        except APIError as exc:  # changed under us: someone else's now
            log.info("index changed while releasing", extra={"key": key, "error": str(exc)})


@dataclass
class RefreshTokenEntry:
    user_id: str
    family_id: str
    expires_at: float
    used: bool = False


@dataclass
class TokenFamily:
    user_id: str
    revoked: bool = False


def _family(value: bytes) -> TokenFamily:
    return TokenFamily(**json.loads(value))


class RefreshTokenStore:
    """`rt.<sha256>` -> token state; `family.<id>` -> the rotation chain it belongs to."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext) -> RefreshTokenStore:
        return cls(await js.key_value(REFRESH_TOKENS_KV.bucket))

    async def add_family(self, family_id: str, family: TokenFamily) -> None:
        await self._kv.put(f"family.{family_id}", json.dumps(asdict(family)).encode())

    async def get_family(self, family_id: str) -> tuple[TokenFamily, int] | None:
        entry = await _get(self._kv, f"family.{family_id}")
        return (_family(entry.value), entry.revision) if entry else None

    async def revoke_family(self, family_id: str, user_id: str) -> None:
        """Mark the family revoked, revision-checked: a family already gone (erased with
        its account) stays gone, which refuses its tokens just the same."""
        await update_entry(
            self._kv, f"family.{family_id}",
            lambda family: None if family.revoked else TokenFamily(user_id=user_id, revoked=True),
            decode=_family, encode=lambda family: json.dumps(asdict(family)).encode(),
            create=False)

    async def forget(self, family_id: str, token_hash: str) -> None:
        """A family and token written for an account deleted meanwhile."""
        await self._kv.purge(f"rt.{token_hash}")
        await self._kv.purge(f"family.{family_id}")

    async def touch_family(self, family_id: str, family: TokenFamily, revision: int) -> bool:
        """Rewrite the family (restarting its TTL) unless it changed meanwhile."""
        try:
            await self._kv.update(
                f"family.{family_id}", json.dumps(asdict(family)).encode(), last=revision
            )
        except KeyWrongLastSequenceError:
            return False
        return True

    async def erase_user(self, user_id: str) -> int:
        """Every token and family of a deleted account (a scan: deletions are rare, and the
        records are keyed by hash, not by user)."""
        keys = [key for key, entry in (await live_entries(self._kv)).items()
                if entry.value and json.loads(entry.value).get("user_id") == user_id]
        for key in keys:
            await self._kv.purge(key)
        return len(keys)

    async def add_token(self, token_hash: str, entry: RefreshTokenEntry) -> None:
        await self._kv.put(f"rt.{token_hash}", json.dumps(asdict(entry)).encode())

    async def get_token(self, token_hash: str) -> tuple[RefreshTokenEntry, int] | None:
        entry = await _get(self._kv, f"rt.{token_hash}")
        return (RefreshTokenEntry(**json.loads(entry.value)), entry.revision) if entry else None

    async def mark_used(self, token_hash: str, entry: RefreshTokenEntry, revision: int) -> bool:
        """Spend a token; False when it was spent concurrently (only one caller wins)."""
        spent = RefreshTokenEntry(**{**asdict(entry), "used": True})
        try:
            await self._kv.update(
                f"rt.{token_hash}", json.dumps(asdict(spent)).encode(), last=revision
            )
        except KeyWrongLastSequenceError:
            return False
        return True

