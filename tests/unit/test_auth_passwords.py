"""argon2id hashing: the production parameters meet OWASP; hashes verify; no leaks."""

from __future__ import annotations

from argon2 import extract_parameters

from auth_service.config import AuthSettings
from auth_service.passwords import PasswordHasher


def light() -> PasswordHasher:
    return PasswordHasher(memory_kib=1024, time_cost=1, parallelism=1)


def test_production_defaults_meet_owasp_argon2id():
    settings = AuthSettings()
    assert settings.argon2_memory_kib >= 19 * 1024
    assert settings.argon2_time_cost >= 2
    assert settings.argon2_parallelism >= 1


async def test_a_hash_is_argon2id_with_the_configured_parameters():
    hasher = PasswordHasher(memory_kib=19_456, time_cost=2, parallelism=1)
    password_hash = await hasher.hash("correct horse battery")
    assert password_hash.startswith("$argon2id$")
    params = extract_parameters(password_hash)
    assert (params.memory_cost, params.time_cost, params.parallelism) == (19_456, 2, 1)
    assert await hasher.verify(password_hash, "correct horse battery")


async def test_a_wrong_password_or_a_broken_hash_does_not_verify():
    hasher = light()
    password_hash = await hasher.hash("correct horse battery")
    assert not await hasher.verify(password_hash, "wrong horse battery")
    assert not await hasher.verify("not-a-hash", "correct horse battery")


async def test_unknown_accounts_still_pay_for_a_verification():
    hasher = light()
    assert not await hasher.verify_unknown("anything at all")
    assert hasher._dummy_hash is not None


async def test_weaker_old_hashes_are_flagged_for_rehash():
    old = await light().hash("correct horse battery")
    assert PasswordHasher(memory_kib=19_456, time_cost=2, parallelism=1).needs_rehash(old)
