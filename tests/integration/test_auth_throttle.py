"""Sign-in and sign-up throttles against the session's nats-server: the use cases run
in-process over a connection signed in as auth_service, so only these tests' limits apply
(auth_service processes elsewhere in the session share the queue group, not these calls).

Every test speaks from networks of its own (random IPv6 /64s) and fresh emails, since the
throttle buckets are shared by the whole session."""

from __future__ import annotations

import asyncio
import json
import re
import uuid

import pytest

from auth_service.bootstrap import answer, build_handlers
from auth_service.config import AuthSettings
from auth_service.domain import RateLimited
from auth_service.throttle import (
    LoginAttempt,
    LoginThrottle,
    SignupThrottle,
    TooManySignups,
)
from contracts.auth import (
    AuthErrorCode,
    AuthFailure,
    ClientContext,
    LoginWithGoogle,
    LoginWithPassword,
    Register,
    TokenPair,
)
from contracts.base import Message
from contracts.topology import AUTH, LOGIN_THROTTLE_KV, SIGNUP_THROTTLE_KV
from terra.nats.connection import jetstream
from tests.unit.test_auth_google import IOS_CLIENT, WEB_CLIENT

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
WRONG = "not the password at all"
PAIR_LIMIT = 5
ADDRESS_LIMIT = 30
SLOWDOWN_AFTER = 10
FIRST_DELAY_S = 0.05
MAX_DELAY_S = 0.4
SIGNUPS_PER_ADDRESS = 10


@pytest.fixture(scope="module")
def settings(nats_endpoint, google) -> AuthSettings:
    return AuthSettings(
        nats_url=nats_endpoint.url,
        argon2_memory_kib=1024,  # light for tests
        argon2_time_cost=1,
        google_client_ids=[WEB_CLIENT, IOS_CLIENT],
        google_certs_url=google.certs_url,
        login_max_failures_per_email=PAIR_LIMIT,
        login_max_failures_per_address=ADDRESS_LIMIT,
        login_slowdown_after_failures=SLOWDOWN_AFTER,
        login_slowdown_first_delay_s=FIRST_DELAY_S,
        login_slowdown_max_delay_s=MAX_DELAY_S,
        registration_max_per_address=SIGNUPS_PER_ADDRESS,
    )


@pytest.fixture
async def auth_js(nats_endpoint):
    """JetStream as auth_service itself: its credential must reach both throttle buckets."""
    connection = await nats_endpoint.connect(AUTH)
    yield jetstream(connection, AUTH)
    await connection.drain()


class CountingHasher:
    """The real hasher, counting how often a password reaches argon2."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.checks = 0
        self.hashes = 0

    async def verify(self, password_hash: str, password: str) -> bool:
        self.checks += 1
        return await self._inner.verify(password_hash, password)

    async def verify_unknown(self, password: str) -> bool:
        self.checks += 1
        return await self._inner.verify_unknown(password)

    async def hash(self, password: str) -> str:
        self.hashes += 1
        return await self._inner.hash(password)

    def needs_rehash(self, password_hash: str) -> bool:
        return self._inner.needs_rehash(password_hash)


class RecordingThrottle:
    """The real login throttle, noting the slow-down each address's attempt was given (what
    the use case then waits), so a test reads the delay rather than timing it."""

    def __init__(self, inner: LoginThrottle) -> None:
        self._inner = inner
        self.delays: dict[str | None, float] = {}

    async def admit(self, email: str, address: str | None) -> LoginAttempt:
        attempt = await self._inner.admit(email, address)
        self.delays[address] = attempt.delay_s
        return attempt

    async def succeeded(self, attempt: LoginAttempt) -> None:
        await self._inner.succeeded(attempt)

    def keys(self, email: str, address: str | None) -> tuple[str | None, str | None, str]:
        return self._inner.keys(email, address)


@pytest.fixture
async def handlers(auth_js, settings):
    built = await build_handlers(auth_js, settings)
    built.hasher = CountingHasher(built.hasher)
    built.throttle = RecordingThrottle(built.throttle)
    return built


def fresh_email() -> str:
    return f"t-{uuid.uuid4().hex[:12]}@example.com"


def network() -> str:
    """A client network of its own: a random /64 of the documentation prefix."""
    return f"2001:db8:{uuid.uuid4().int % 0xFFFF:x}:{uuid.uuid4().int % 0xFFFF:x}"


def address(net: str | None = None, host: int = 1) -> str:
    return f"{net or network()}::{host:x}"


async def call(use_case, model: type[Message], request: Message) -> Message:
    """As the subscriber does: the success reply or an `AuthFailure`."""
    return await answer(model, request.model_dump_json().encode(), use_case)


async def login(handlers, email: str, password: str, where: str) -> Message:
    request = LoginWithPassword(email=email, password=password,
                                client=ClientContext(address=where))
    return await call(handlers.login_password, LoginWithPassword, request)


async def register(handlers, where: str, email: str | None = None) -> Message:
    request = Register(email=email or fresh_email(), password=PASSWORD,
                       client=ClientContext(address=where))
    return await call(handlers.register, Register, request)


async def account(handlers) -> str:
    reply = await register(handlers, address())
    assert isinstance(reply, TokenPair), reply
    return reply.user.email


def codes(replies) -> list:
    return [r.code if isinstance(r, AuthFailure) else type(r).__name__ for r in replies]


def assert_refused(reply, longest_s: int) -> None:
    assert isinstance(reply, AuthFailure), reply
    assert reply.code is AuthErrorCode.RATE_LIMITED
    assert 0 < reply.retry_after_s <= longest_s


# --- one email from one network --------------------------------------------------------------


async def test_concurrent_wrong_passwords_get_at_most_the_limit_checked(handlers):
    email, attacker = await account(handlers), address()
    replies = await asyncio.gather(
        *[login(handlers, email, WRONG, attacker) for _ in range(30)]
    )
    assert codes(replies).count(AuthErrorCode.INVALID_CREDENTIALS) == PAIR_LIMIT
    assert codes(replies).count(AuthErrorCode.RATE_LIMITED) == 30 - PAIR_LIMIT
    for reply in replies:
        if reply.code is AuthErrorCode.RATE_LIMITED:
            assert_refused(reply, 15 * 60)
    assert handlers.hasher.checks == PAIR_LIMIT  # refused attempts cost no hashing
    # The blocked pair stays blocked even with the right password: guesses stay unconfirmed.
    assert_refused(await login(handlers, email, PASSWORD, attacker), 15 * 60)
    assert handlers.hasher.checks == PAIR_LIMIT


async def test_a_success_forgives_the_pairs_failures(handlers):
    email, where = await account(handlers), address()
    for _ in range(2):
        for _ in range(PAIR_LIMIT - 1):
            reply = await login(handlers, email, WRONG, where)
            assert reply.code is AuthErrorCode.INVALID_CREDENTIALS
        assert isinstance(await login(handlers, email, PASSWORD, where), TokenPair)


async def test_successes_count_against_nothing(handlers):
    email, where = await account(handlers), address()
    for _ in range(ADDRESS_LIMIT + PAIR_LIMIT):
        assert isinstance(await login(handlers, email, PASSWORD, where), TokenPair)


# --- the owner cannot be locked out ----------------------------------------------------------


async def attack(handlers, email: str, networks: int, tries: int) -> list[Message]:
    """`tries` concurrent wrong passwords from each of `networks` networks."""
    places = [address() for _ in range(networks)]
    return await asyncio.gather(
        *[login(handlers, email, WRONG, where) for where in places for _ in range(tries)]
    )


async def test_the_owner_gets_in_from_another_network_while_the_attack_goes_on(handlers):
    email = await account(handlers)
    first = await attack(handlers, email, networks=4, tries=PAIR_LIMIT + 3)
    assert codes(first).count(AuthErrorCode.INVALID_CREDENTIALS) == 4 * PAIR_LIMIT
    assert all(not isinstance(r, TokenPair) for r in first)

    where = address()
    reply, more = await asyncio.gather(
        login(handlers, email, PASSWORD, where),
        attack(handlers, email, networks=3, tries=PAIR_LIMIT + 1),
    )
    assert isinstance(reply, TokenPair), reply
    # Slowed down by the cap (the email has far more than SLOWDOWN_AFTER failures), never
    # refused.
    assert handlers.throttle.delays[where] == MAX_DELAY_S
    assert all(not isinstance(r, TokenPair) for r in more)
    assert AuthErrorCode.RATE_LIMITED in codes(more)


async def test_an_email_below_the_slowdown_threshold_is_not_delayed(handlers):
    email = await account(handlers)
    await attack(handlers, email, networks=1, tries=SLOWDOWN_AFTER - PAIR_LIMIT - 1)
    where = address()
    assert isinstance(await login(handlers, email, PASSWORD, where), TokenPair)
    assert handlers.throttle.delays[where] == 0


# --- one network across emails (spraying) -----------------------------------------------------


async def test_spraying_many_emails_from_one_network_is_blocked(handlers):
    net = network()
    sprayer = address(net, 1)
    replies = await asyncio.gather(
        *[login(handlers, fresh_email(), WRONG, sprayer) for _ in range(ADDRESS_LIMIT + 10)]
    )
    assert codes(replies).count(AuthErrorCode.INVALID_CREDENTIALS) == ADDRESS_LIMIT
    assert codes(replies).count(AuthErrorCode.RATE_LIMITED) == 10
    assert handlers.hasher.checks == ADDRESS_LIMIT
    # The network, not the single address: another host of the same /64 is refused too.
    assert_refused(await login(handlers, fresh_email(), WRONG, address(net, 2)), 15 * 60)
    reply = await login(handlers, fresh_email(), WRONG, address())
    assert reply.code is AuthErrorCode.INVALID_CREDENTIALS


async def test_a_refusal_by_the_network_does_not_count_against_the_pair(handlers, auth_js):
    email, sprayer = await account(handlers), address()
    await asyncio.gather(
        *[login(handlers, fresh_email(), WRONG, sprayer) for _ in range(ADDRESS_LIMIT)]
    )
    for _ in range(PAIR_LIMIT + 2):
        assert_refused(await login(handlers, email, WRONG, sprayer), 15 * 60)
    # Once the network's failures leave the window, the pair still has its whole allowance.
    pair_key, _, _ = handlers.throttle.keys(email, sprayer)
    kv = await auth_js.key_value(LOGIN_THROTTLE_KV.bucket)
    assert json.loads((await kv.get(pair_key)).value) == []


# --- sign-ups ------------------------------------------------------------------------------


async def test_registrations_from_one_network_are_limited(handlers):
    where = address()
    replies = await asyncio.gather(*[register(handlers, where) for _ in range(100)])
    assert codes(replies).count("TokenPair") == SIGNUPS_PER_ADDRESS
    assert codes(replies).count(AuthErrorCode.RATE_LIMITED) == 100 - SIGNUPS_PER_ADDRESS
    for reply in replies:
        if isinstance(reply, AuthFailure):
            assert_refused(reply, 3600)
    assert handlers.hasher.hashes == SIGNUPS_PER_ADDRESS  # refused sign-ups cost no hashing
    assert isinstance(await register(handlers, address()), TokenPair)


async def test_a_taken_email_counts_as_a_sign_up_attempt(handlers):
    where, email = address(), await account(handlers)
    for _ in range(SIGNUPS_PER_ADDRESS):
        reply = await register(handlers, where, email)
        assert reply.code is AuthErrorCode.EMAIL_TAKEN
    assert_refused(await register(handlers, where, email), 3600)


async def test_google_sign_ups_count_but_google_sign_ins_do_not(handlers, google):
    where = address()
    existing = google.mint()
    first = await call(handlers.login_google, LoginWithGoogle,
                       LoginWithGoogle(id_token=existing, client=ClientContext(address=where)))
    assert isinstance(first, TokenPair) and first.created
    for _ in range(SIGNUPS_PER_ADDRESS - 1):
        assert isinstance(await register(handlers, where), TokenPair)
    new = await call(handlers.login_google, LoginWithGoogle,
                     LoginWithGoogle(id_token=google.mint(), client=ClientContext(address=where)))
    assert_refused(new, 3600)
    again = await call(handlers.login_google, LoginWithGoogle,
                       LoginWithGoogle(id_token=existing, client=ClientContext(address=where)))
    assert isinstance(again, TokenPair) and not again.created


# --- the counters themselves ------------------------------------------------------------------


async def stored_keys(js, spec) -> list[str]:
    """Every key of a bucket, from the stream's subjects (one call, nothing to race)."""
    prefix = f"$KV.{spec.bucket}."
    info = await js.stream_info(f"KV_{spec.bucket}", subjects_filter=f"{prefix}>")
    return [subject.removeprefix(prefix) for subject in info.state.subjects or {}]


async def test_counter_keys_name_no_email_or_address(handlers, nc):
    email, where = await account(handlers), address()
    await login(handlers, email, WRONG, where)
    await register(handlers, where)
    js = nc.jetstream()
    seen = []
    for spec, pattern in ((LOGIN_THROTTLE_KV, r"login\.(pair|addr|email)\.[0-9a-f]{32}"),
                          (SIGNUP_THROTTLE_KV, r"signup\.addr\.[0-9a-f]{32}")):
        kv = await js.key_value(spec.bucket)
        for key in await stored_keys(js, spec):
            assert re.fullmatch(pattern, key), key
            entry = await kv.get(key)
            assert all(isinstance(t, float) for t in json.loads(entry.value or b"[]"))
            seen.append(key)
    local, _, domain = email.partition("@")
    for key in seen:
        assert local not in key and domain not in key  # (the pattern allows no `:` or `.`)
    pair, addr, mail = handlers.throttle.keys(email, where)
    assert {pair, addr, mail} <= set(seen)


async def test_concurrent_attempts_on_one_key_are_each_counted(auth_js):
    kv = await auth_js.key_value(LOGIN_THROTTLE_KV.bucket)
    throttle = LoginThrottle(
        kv, key_secret=b"test", window_s=600, max_per_pair=17, max_per_address=1000,
        slowdown_after=1000, slowdown_first_delay_s=0.1, slowdown_max_delay_s=1.0,
    )
    email, where = fresh_email(), address()

    async def attempt():
        try:
            await throttle.admit(email, where)
            return True
        except RateLimited:
            return False

    admitted = await asyncio.gather(*[attempt() for _ in range(40)])
    assert sum(admitted) == 17


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_blocked_pair_opens_again_as_the_window_moves_on(auth_js):
    clock = Clock()
    kv = await auth_js.key_value(LOGIN_THROTTLE_KV.bucket)
    throttle = LoginThrottle(
        kv, key_secret=b"test", window_s=600, max_per_pair=3, max_per_address=1000,
        slowdown_after=1000, slowdown_first_delay_s=0.1, slowdown_max_delay_s=1.0, clock=clock,
    )
    email, where = fresh_email(), address()
    for _ in range(3):
        await throttle.admit(email, where)
        clock.now += 10
    with pytest.raises(RateLimited) as caught:
        await throttle.admit(email, where)
    assert caught.value.retry_after_s == 600 - 30
    clock.now += 600 - 30
    await throttle.admit(email, where)


async def test_without_an_address_only_the_slowdown_applies(auth_js):
    kv = await auth_js.key_value(LOGIN_THROTTLE_KV.bucket)
    throttle = LoginThrottle(
        kv, key_secret=b"test", window_s=600, max_per_pair=1, max_per_address=1,
        slowdown_after=2, slowdown_first_delay_s=0.1, slowdown_max_delay_s=0.2,
    )
    email = fresh_email()
    delays = [(await throttle.admit(email, None)).delay_s for _ in range(5)]
    assert delays == [0.0, 0.0, 0.1, 0.2, 0.2]


async def test_a_full_signup_window_says_when_it_frees(auth_js):
    clock = Clock()
    kv = await auth_js.key_value(SIGNUP_THROTTLE_KV.bucket)
    signups = SignupThrottle(kv, key_secret=b"test", window_s=3600, max_per_address=2,
                             clock=clock)
    where = address()
    await signups.admit(where)
    clock.now += 100
    await signups.admit(where)
    with pytest.raises(TooManySignups) as caught:
        await signups.admit(where)
    assert caught.value.retry_after_s == 3600 - 100  # when the first sign-up leaves
    assert caught.value.code is AuthErrorCode.RATE_LIMITED
    await signups.admit(None)  # an internal caller names no address: not limited
