"""auth_service's account record writes, over an in-memory KV: revision-checked, so a
stale copy never overwrites a concurrent change and a deleted account is never written
back (sign-out everywhere racing a deletion, a password rehash racing a Google link)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from nats.js.errors import KeyNotFoundError

from auth_service.domain import UserRecord
from auth_service.repository import _USER_RECORD, RefreshTokenStore, TokenFamily, UserRepository
from contracts.auth import Provider
from contracts.base import utcnow
from tests.fakes import FakeKeyValue

USER = UserRecord(id="u1", email="ana@example.com", created_at=utcnow(),
                  providers=[Provider.PASSWORD], password_hash="old")


class InterleavedKeyValue(FakeKeyValue):
    """Another writer changes the record between our read and our first write."""

    def __init__(self, other_change) -> None:
        super().__init__("users")
        self.other_change = other_change

    async def update(self, key: str, value: bytes, last: int | None = None) -> int:
        if self.other_change is not None:
            change, self.other_change = self.other_change, None
            current = _USER_RECORD.validate_json((await self.get(key)).value)
            await self.put(key, _USER_RECORD.dump_json(change(current)))
        return await super().update(key, value, last)


async def stored(kv: FakeKeyValue) -> UserRecord | None:
    try:
        return _USER_RECORD.validate_json((await kv.get(USER.id)).value)
    except KeyNotFoundError:
        return None


async def test_an_update_keeps_what_another_writer_changed_meanwhile():
    signed_out = utcnow()
    kv = InterleavedKeyValue(lambda u: replace(u, signed_out_at=signed_out))
    users = UserRepository(kv, FakeKeyValue("credentials"))
    await users.save(USER)

    written = await users.update(USER.id, lambda u: replace(u, password_hash="new"))

    assert written.password_hash == "new" and written.signed_out_at == signed_out
    assert await stored(kv) == written


async def test_an_update_never_writes_back_a_deleted_account():
    kv = FakeKeyValue("users")
    users = UserRepository(kv, FakeKeyValue("credentials"))
    await users.save(USER)
    await users.delete_record(USER.id)

    assert await users.update(USER.id, lambda u: replace(u, signed_out_at=utcnow())) is None
    assert await stored(kv) is None
    assert kv.writes(USER.id) == 2  # the save and the purge: nothing after


async def test_an_update_that_changes_nothing_writes_nothing():
    kv = FakeKeyValue("users")
    users = UserRepository(kv, FakeKeyValue("credentials"))
    later = replace(USER, signed_out_at=utcnow())
    await users.save(later)
    earlier = later.signed_out_at - timedelta(seconds=5)

    kept = await users.update(USER.id, lambda u: replace(u, signed_out_at=earlier)
                              if u.signed_out_at is None or u.signed_out_at < earlier else None)
    assert kept == later
    assert kv.writes(USER.id) == 1


def test_linking_google_returns_a_copy_with_the_provider_once():
    linked = USER.linked_to_google("1234")
    again = linked.linked_to_google("1234")
    assert linked.google_sub == "1234" and USER.google_sub is None
    assert again.providers == [Provider.PASSWORD, Provider.GOOGLE]
    assert USER.providers == [Provider.PASSWORD]


async def test_revoking_an_erased_family_writes_nothing_back():
    kv = FakeKeyValue("refresh_tokens")
    tokens = RefreshTokenStore(kv)
    await tokens.add_family("f1", TokenFamily(user_id=USER.id))
    await tokens.revoke_family("f1", USER.id)
    assert (await tokens.get_family("f1"))[0].revoked

    await tokens.erase_user(USER.id)
    await tokens.revoke_family("f1", USER.id)  # a reuse detected after the erasure
    assert await tokens.get_family("f1") is None
    assert kv.live_keys() == []
