"""auth_service over real NATS: the app runs in-process; requests go through nats-py."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import TypeAdapter

from auth_service.bootstrap import answer, build_handlers, build_token_issuer
from auth_service.config import AuthSettings
from auth_service.domain import AuthError, UserRecord
from auth_service.main import build_app
from auth_service.repository import UserRepository
from auth_service.tokens import TokenIssuer
from contracts.auth import (
    AccountDeleted,
    AuthErrorCode,
    AuthFailure,
    ClientContext,
    DeleteAccount,
    DeleteAccountV1,
    Done,
    DoneReply,
    GetSigningKeys,
    GetUser,
    LoginWithGoogle,
    LoginWithPassword,
    Logout,
    LogoutV1,
    Provider,
    RefreshTokens,
    Register,
    SigningKeys,
    TokenPair,
    TokenReply,
    UserRegistered,
    UserReply,
    UserResult,
)
from contracts.base import Message, utcnow
from contracts.topology import EVENTS, GATEWAY, AuthRpc
from tests.conftest import provision_all
from tests.infra import nats_server
from tests.unit.test_auth_google import IOS_CLIENT, WEB_CLIENT

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
MAX_FAILURES = 3


@pytest.fixture(scope="module")
def nats_endpoint(tmp_path_factory):
    """A server of this module's own: other suites run auth_service replicas (with other
    settings) in the same queue group on the session's server, and would answer here."""
    with nats_server(tmp_path_factory.mktemp("auth-nats")) as endpoint:
        asyncio.run(provision_all(endpoint))
        yield endpoint


@pytest.fixture(scope="module")
def settings(nats_endpoint, google) -> AuthSettings:
    return AuthSettings(
        nats_url=nats_endpoint.url,
        nats_credentials_dir=nats_endpoint.credentials.directory,
        argon2_memory_kib=1024,  # light for tests; production defaults are checked in unit tests
        argon2_time_cost=1,
        google_client_ids=[WEB_CLIENT, IOS_CLIENT],
        google_certs_url=google.certs_url,
        login_max_failures_per_email=MAX_FAILURES,
        login_max_failures_per_address=1000,
    )


@pytest.fixture
async def gw(nats_endpoint):
    """The gateway's connection: auth_service answers requests from the gateway's NATS
    account only (`nc`, the operator's, sets up and inspects state)."""
    connection = await nats_endpoint.connect(GATEWAY)
    yield connection
    await connection.drain()


@pytest.fixture(scope="module")
async def auth_app(settings):
    app = build_app(settings, configure_process=False)
    async with app:
        yield app


def fresh_email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


def client() -> ClientContext:
    return ClientContext(address=f"10.0.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}")


async def call(gw, subject: AuthRpc, request: Message | bytes, reply_type=TokenReply):
    """A request as the gateway sends it (`gw`: a connection in the gateway's account)."""
    payload = request if isinstance(request, bytes) else request.model_dump_json().encode()
    msg = await gw.request(subject, payload, timeout=10)
    return TypeAdapter(reply_type).validate_json(msg.data)


async def register(gw, email: str | None = None, password: str = PASSWORD) -> TokenPair:
    reply = await call(
        gw, AuthRpc.REGISTER, Register(email=email or fresh_email(), password=password)
    )
    assert isinstance(reply, TokenPair), reply
    return reply


async def login(gw, email: str, password: str = PASSWORD, ctx: ClientContext | None = None):
    return await call(
        gw,
        AuthRpc.LOGIN_PASSWORD,
        LoginWithPassword(email=email, password=password, client=ctx or client()),
    )


async def last_event(nc, subject: str) -> tuple[dict, dict]:
    msg = await nc.jetstream().get_last_msg(EVENTS.name, subject)
    return json.loads(msg.data), dict(msg.headers or {})


# --- registration and login --------------------------------------------------------------


async def test_register_creates_an_account_and_signs_in(auth_app, nc, gw):
    email = fresh_email()
    pair = await register(gw, email.upper())
    assert pair.created is True
    assert pair.user.email == email
    assert pair.user.providers == [Provider.PASSWORD]
    assert pair.expires_in == 900

    keys = await call(gw, AuthRpc.SIGNING_KEYS, GetSigningKeys(), SigningKeys)
    jwks = jwt.PyJWKSet.from_dict({"keys": keys.keys})
    claims = jwt.decode(
        pair.access_token,
        jwks.keys[0].key,
        algorithms=["EdDSA"],
        audience=keys.audience,
        issuer=keys.issuer,
    )
    assert claims["sub"] == pair.user.id
    assert claims["email"] == email

    event, headers = await last_event(nc, f"terra.evt.account.registered.{pair.user.id}")
    registered = UserRegistered.model_validate(event)
    assert registered.provider is Provider.PASSWORD
    assert headers["Nats-Msg-Id"] == registered.message_id

    again = await login(gw, f"  {email.title()} ")
    assert isinstance(again, TokenPair)
    assert again.user.id == pair.user.id
    assert again.created is False


async def test_an_email_registers_once_whatever_its_case(auth_app, gw):
    email = fresh_email()
    await register(gw, email)
    reply = await call(gw, AuthRpc.REGISTER, Register(email=email.upper(), password=PASSWORD))
    assert isinstance(reply, AuthFailure)
    assert reply.code is AuthErrorCode.EMAIL_TAKEN


async def test_concurrent_registrations_of_one_email_give_exactly_one_account(auth_app, gw):
    email = fresh_email()
    replies = await asyncio.gather(
        *[
            call(gw, AuthRpc.REGISTER, Register(email=email, password=f"{PASSWORD} {i}"))
            for i in range(10)
        ]
    )
    winners = [r for r in replies if isinstance(r, TokenPair)]
    assert len(winners) == 1
    assert {r.code for r in replies if isinstance(r, AuthFailure)} == {AuthErrorCode.EMAIL_TAKEN}
    winner_password = f"{PASSWORD} {next(i for i, r in enumerate(replies) if r is winners[0])}"
    assert isinstance(await login(gw, email, winner_password), TokenPair)


async def test_weak_passwords_are_refused(auth_app, gw):
    for password in ("short", "password123"):
        reply = await call(gw, AuthRpc.REGISTER, Register(email=fresh_email(), password=password))
        assert isinstance(reply, AuthFailure)
        assert reply.code is AuthErrorCode.WEAK_PASSWORD


async def test_a_malformed_request_gets_a_failure_reply(auth_app, gw):
    for payload in (b"not json", b'{"email": "nobody"}'):
        reply = await call(gw, AuthRpc.REGISTER, payload)
        assert isinstance(reply, AuthFailure)
        assert reply.code is AuthErrorCode.INVALID_REQUEST


async def test_wrong_password_and_unknown_email_fail_identically(auth_app, gw):
    pair = await register(gw)
    wrong = await login(gw, pair.user.email, "not the password at all")
    unknown = await login(gw, fresh_email(), "not the password at all")
    assert isinstance(wrong, AuthFailure) and isinstance(unknown, AuthFailure)
    assert (wrong.code, wrong.detail) == (unknown.code, unknown.detail)
    assert wrong.code is AuthErrorCode.INVALID_CREDENTIALS


async def test_repeated_failures_are_rate_limited_even_with_the_right_password(auth_app, gw):
    pair = await register(gw)
    guesser = client()  # the failures come from one network, which is then refused
    for _ in range(MAX_FAILURES):
        reply = await login(gw, pair.user.email, "not the password at all", guesser)
        assert reply.code is AuthErrorCode.INVALID_CREDENTIALS
    limited = await login(gw, pair.user.email.upper(), ctx=guesser)
    assert isinstance(limited, AuthFailure)
    assert limited.code is AuthErrorCode.RATE_LIMITED
    assert 0 < limited.retry_after_s <= 15 * 60
    # The owner elsewhere is not locked out by someone who knows the email.
    assert isinstance(await login(gw, pair.user.email, ctx=client()), TokenPair)
    # Another account is not affected.
    other = await register(gw)
    assert isinstance(await login(gw, other.user.email), TokenPair)


async def test_a_successful_login_forgives_earlier_failures(auth_app, gw):
    pair = await register(gw)
    for _ in range(MAX_FAILURES - 1):
        await login(gw, pair.user.email, "not the password at all")
    assert isinstance(await login(gw, pair.user.email), TokenPair)
    for _ in range(MAX_FAILURES - 1):
        await login(gw, pair.user.email, "not the password at all")
    assert isinstance(await login(gw, pair.user.email), TokenPair)


# --- refresh tokens --------------------------------------------------------------------------


async def test_refresh_rotates_and_reuse_revokes_the_family(auth_app, gw):
    first = await register(gw)
    second = await call(gw, AuthRpc.REFRESH, RefreshTokens(refresh_token=first.refresh_token))
    assert isinstance(second, TokenPair)
    assert second.refresh_token != first.refresh_token
    assert second.user.id == first.user.id

    reused = await call(gw, AuthRpc.REFRESH, RefreshTokens(refresh_token=first.refresh_token))
    assert reused.code is AuthErrorCode.REFRESH_TOKEN_REUSED
    # The thief's reuse ends the legitimate holder's chain too.
    after = await call(gw, AuthRpc.REFRESH, RefreshTokens(refresh_token=second.refresh_token))
    assert after.code is AuthErrorCode.INVALID_REFRESH_TOKEN
    # Other sessions of the same user live on.
    other = await login(gw, first.user.email)
    refreshed = await call(gw, AuthRpc.REFRESH, RefreshTokens(refresh_token=other.refresh_token))
    assert isinstance(refreshed, TokenPair)


async def test_concurrent_uses_of_one_refresh_token_give_at_most_one_pair(auth_app, gw):
    pair = await register(gw)
    replies = await asyncio.gather(
        *[
            call(gw, AuthRpc.REFRESH, RefreshTokens(refresh_token=pair.refresh_token))
            for _ in range(5)
        ]
    )
    assert sum(isinstance(r, TokenPair) for r in replies) <= 1
    assert any(
        isinstance(r, AuthFailure) and r.code is AuthErrorCode.REFRESH_TOKEN_REUSED for r in replies
    )


async def test_an_unknown_refresh_token_is_invalid(auth_app, gw):
    reply = await call(gw, AuthRpc.REFRESH, RefreshTokens(refresh_token="made-up-token"))
    assert reply.code is AuthErrorCode.INVALID_REFRESH_TOKEN


async def test_logout_ends_the_session(auth_app, gw):
    pair = await register(gw)
    done = await call(gw, AuthRpc.LOGOUT, Logout(refresh_token=pair.refresh_token), DoneReply)
    assert isinstance(done, Done)
    reply = await call(gw, AuthRpc.REFRESH, RefreshTokens(refresh_token=pair.refresh_token))
    assert reply.code is AuthErrorCode.INVALID_REFRESH_TOKEN


async def test_signing_out_everywhere_outlives_the_revocation_list(auth_app, nc, gw):
    """A refresh token lives for weeks; the revocation list forgets after a day. A phone's
    token left unused past that day must still be refused after "sign out everywhere"."""
    from contracts.topology import REVOCATIONS_KV, revocation_key

    email = fresh_email()
    laptop = await register(gw, email)
    phone = await login(gw, email)
    assert isinstance(phone, TokenPair)
    done = await call(gw, AuthRpc.LOGOUT,
                      Logout(refresh_token=laptop.refresh_token, everywhere=True,
                             access_token=laptop.access_token), DoneReply)
    assert isinstance(done, Done)
    revocations = await nc.jetstream().key_value(REVOCATIONS_KV.bucket)
    await revocations.purge(revocation_key(laptop.user.id))  # the list's TTL went by

    stale = await call(gw, AuthRpc.REFRESH, RefreshTokens(refresh_token=phone.refresh_token))
    assert stale.code is AuthErrorCode.INVALID_REFRESH_TOKEN
    later = await login(gw, email)  # a sign-in after it works, and refreshes
    assert isinstance(later, TokenPair)
    renewed = await call(gw, AuthRpc.REFRESH, RefreshTokens(refresh_token=later.refresh_token))
    assert isinstance(renewed, TokenPair), renewed


async def tokens_of(nc, user_id: str) -> list[str]:
    """The refresh-token bucket's keys (tokens and families) naming the user."""
    from contracts.topology import REFRESH_TOKENS_KV
    from terra.nats.listings import live_entries

    kv = await nc.jetstream().key_value(REFRESH_TOKENS_KV.bucket)
    return [key for key, entry in (await live_entries(kv)).items()
            if entry.value and json.loads(entry.value).get("user_id") == user_id]


@pytest.mark.parametrize(("path", "step"), [
    ("login", "add_token"), ("refresh", "add_token"), ("refresh", "mark_used")])
async def test_a_session_racing_the_deletion_leaves_no_token(
        auth_app, settings, nc, path, step, gw):
    """The account is deleted (tokens scanned and purged) after the sign-in or refresh
    read it and before its next write (the new token; spending the old one): the answer
    is a plain refusal, not a theft alarm, and nothing of the account stays."""
    from auth_service.domain import AuthError

    email = fresh_email()
    pair = await register(gw, email)
    handlers = await build_handlers(nc.jetstream(), settings)
    write = getattr(handlers.refresh_tokens, step)

    async def deleted_first(*args):
        await handlers.delete_account(DeleteAccount(user_id=pair.user.id,
                                                    access_token=pair.access_token))
        return await write(*args)

    setattr(handlers.refresh_tokens, step, deleted_first)
    with pytest.raises(AuthError) as refused:
        if path == "login":
            await handlers.login_password(LoginWithPassword(email=email, password=PASSWORD,
                                                            client=client()))
        else:
            await handlers.refresh(RefreshTokens(refresh_token=pair.refresh_token))
    assert refused.value.code is {"login": AuthErrorCode.INVALID_CREDENTIALS,
                                  "refresh": AuthErrorCode.INVALID_REFRESH_TOKEN}[path]
    assert await tokens_of(nc, pair.user.id) == []


# --- users ----------------------------------------------------------------------------------


async def test_get_user_returns_the_public_view(auth_app, gw):
    pair = await call(
        gw,
        AuthRpc.REGISTER,
        Register(email=fresh_email(), password=PASSWORD, display_name="Ana"),
    )
    reply = await call(gw, AuthRpc.GET_USER, GetUser(user_id=pair.user.id), UserResult)
    assert isinstance(reply, UserReply)
    assert reply.user == pair.user
    assert reply.user.display_name == "Ana"
    missing = await call(gw, AuthRpc.GET_USER, GetUser(user_id=uuid.uuid4().hex), UserResult)
    assert missing.code is AuthErrorCode.NOT_FOUND


async def test_delete_account_erases_it_and_announces_it(auth_app, nc, gw):
    email = fresh_email()
    pair = await register(gw, email)
    request = DeleteAccount(user_id=pair.user.id, access_token=pair.access_token)
    done = await call(gw, AuthRpc.DELETE_ACCOUNT, request, DoneReply)
    assert isinstance(done, Done)

    event, headers = await last_event(nc, f"terra.evt.account.deleted.{pair.user.id}")
    deleted = AccountDeleted.model_validate(event)
    assert deleted.user_id == pair.user.id
    assert deleted.correlation_id == request.correlation_id
    assert headers["Nats-Msg-Id"] == deleted.message_id

    gone = await call(gw, AuthRpc.GET_USER, GetUser(user_id=pair.user.id), UserResult)
    assert gone.code is AuthErrorCode.NOT_FOUND
    assert (await login(gw, email)).code is AuthErrorCode.INVALID_CREDENTIALS
    refresh = await call(gw, AuthRpc.REFRESH, RefreshTokens(refresh_token=pair.refresh_token))
    assert refresh.code is AuthErrorCode.INVALID_REFRESH_TOKEN
    again = await call(gw, AuthRpc.DELETE_ACCOUNT, request, DoneReply)
    assert again.code is AuthErrorCode.NOT_FOUND
    # The email is free for a new account.
    fresh = await register(gw, email)
    assert fresh.user.id != pair.user.id


# --- acting on an account takes a live access token of it -----------------------------------
# Whoever can put a request on auth's subjects (the gateway's NATS account, or a key of it
# that leaked) deletes or signs out only the account whose live access token it holds.


def not_the_owners_tokens(settings, user_id: str, email: str) -> dict[str, str]:
    issuer = build_token_issuer(settings)
    stranger = TokenIssuer(Ed25519PrivateKey.generate(), issuer=issuer.issuer,
                           audience=issuer.audience, ttl_s=900)
    stranger.kid = issuer.kid  # names auth's key, signed by another
    elsewhere = TokenIssuer(Ed25519PrivateKey.generate(), issuer=issuer.issuer,
                            audience="another-api", ttl_s=900)
    return {
        "none": "",
        "another account's": issuer.issue(user_id=uuid.uuid4().hex, email=email).token,
        "expired": issuer.issue(user_id=user_id, email=email, now=time.time() - 3600).token,
        "another key": stranger.issue(user_id=user_id, email=email).token,
        "unknown key": elsewhere.issue(user_id=user_id, email=email).token,
        "garbage": "not.a.token",
    }


async def still_there(gw, pair: TokenPair) -> TokenPair:
    """The account, its email and its session are untouched (no deletion mark, no sign-out:
    a refresh checks both); returns the session's renewed pair."""
    user = await call(gw, AuthRpc.GET_USER, GetUser(user_id=pair.user.id), UserResult)
    assert isinstance(user, UserReply), user
    renewed = await call(gw, AuthRpc.REFRESH, RefreshTokens(refresh_token=pair.refresh_token))
    assert isinstance(renewed, TokenPair), renewed
    return renewed


@pytest.mark.parametrize("token", ["none", "another account's", "expired", "another key",
                                   "unknown key", "garbage"])
async def test_deleting_an_account_takes_a_live_access_token_of_it(
        auth_app, settings, token, gw):
    pair = await register(gw)
    forged = not_the_owners_tokens(settings, pair.user.id, pair.user.email)[token]
    reply = await call(gw, AuthRpc.DELETE_ACCOUNT,
                       DeleteAccount(user_id=pair.user.id, access_token=forged), DoneReply)
    assert isinstance(reply, AuthFailure) and reply.code is AuthErrorCode.INVALID_ACCESS_TOKEN
    await still_there(gw, pair)


async def test_an_access_token_revoked_by_a_sign_out_everywhere_deletes_nothing(auth_app, gw):
    email = fresh_email()
    laptop = await register(gw, email)
    phone = await login(gw, email)
    signed_out = await call(gw, AuthRpc.LOGOUT, Logout(
        refresh_token=phone.refresh_token, everywhere=True, access_token=phone.access_token),
        DoneReply)
    assert isinstance(signed_out, Done)

    stale = await call(gw, AuthRpc.DELETE_ACCOUNT, DeleteAccount(
        user_id=laptop.user.id, access_token=laptop.access_token), DoneReply)
    assert stale.code is AuthErrorCode.INVALID_ACCESS_TOKEN and "revoked" in stale.detail
    later = await login(gw, email)  # a sign-in afterwards holds a token that may
    assert isinstance(later, TokenPair)
    done = await call(gw, AuthRpc.DELETE_ACCOUNT, DeleteAccount(
        user_id=later.user.id, access_token=later.access_token), DoneReply)
    assert isinstance(done, Done)


async def test_the_retired_delete_request_deletes_nothing(auth_app, settings, nc, gw):
    pair = await register(gw)
    reply = await call(gw, AuthRpc.DELETE_ACCOUNT, DeleteAccountV1(user_id=pair.user.id),
                       DoneReply)
    assert isinstance(reply, AuthFailure) and reply.code is AuthErrorCode.INVALID_REQUEST
    pair = await still_there(gw, pair)
    # The use case names what to send instead.
    handlers = await build_handlers(nc.jetstream(), settings)
    with pytest.raises(AuthError) as refused:
        await handlers.delete_account(DeleteAccountV1(user_id=pair.user.id))
    assert refused.value.code is AuthErrorCode.INVALID_REQUEST
    assert "auth.delete_account.v2" in refused.value.detail
    await still_there(gw, pair)


@pytest.mark.parametrize("token", ["none", "another account's", "expired", "another key"])
async def test_signing_out_everywhere_takes_a_live_access_token_of_the_same_user(
        auth_app, settings, token, gw):
    email = fresh_email()
    laptop = await register(gw, email)
    phone = await login(gw, email)
    forged = not_the_owners_tokens(settings, laptop.user.id, email)[token]
    reply = await call(gw, AuthRpc.LOGOUT, Logout(
        refresh_token=laptop.refresh_token, everywhere=True, access_token=forged or None),
        DoneReply)
    assert isinstance(reply, AuthFailure) and reply.code is AuthErrorCode.INVALID_ACCESS_TOKEN
    for session in (laptop, phone):  # nothing ended, not even the session that asked
        await still_there(gw, session)


async def test_the_retired_logout_ends_one_session_but_never_all(auth_app, settings, nc, gw):
    email = fresh_email()
    laptop = await register(gw, email)
    phone = await login(gw, email)
    handlers = await build_handlers(nc.jetstream(), settings)
    with pytest.raises(AuthError) as refused:
        await handlers.logout(LogoutV1(refresh_token=laptop.refresh_token, everywhere=True))
    assert refused.value.code is AuthErrorCode.INVALID_REQUEST
    assert "auth.logout.v2" in refused.value.detail
    phone = await still_there(gw, phone)

    assert isinstance(await handlers.logout(LogoutV1(refresh_token=laptop.refresh_token)), Done)
    ended = await call(gw, AuthRpc.REFRESH, RefreshTokens(refresh_token=laptop.refresh_token))
    assert ended.code is AuthErrorCode.INVALID_REFRESH_TOKEN
    await still_there(gw, phone)


# --- Google sign-in ---------------------------------------------------------------------------


async def test_google_sign_in_creates_then_finds_the_account(auth_app, nc, google, gw):
    sub = str(uuid.uuid4().int)[:21]
    email = fresh_email()
    first = await call(
        gw, AuthRpc.LOGIN_GOOGLE, LoginWithGoogle(id_token=google.mint(sub=sub, email=email))
    )
    assert isinstance(first, TokenPair)
    assert first.created is True
    assert first.user.providers == [Provider.GOOGLE]
    assert first.user.display_name == "Gia Google"
    event, _ = await last_event(nc, f"terra.evt.account.registered.{first.user.id}")
    assert event["provider"] == "google"

    second = await call(
        gw,
        AuthRpc.LOGIN_GOOGLE,
        LoginWithGoogle(id_token=google.mint(sub=sub, email=email, aud=IOS_CLIENT)),
    )
    assert isinstance(second, TokenPair)
    assert (second.user.id, second.created) == (first.user.id, False)
    # The email is taken by the Google account, and it has no password.
    taken = await call(gw, AuthRpc.REGISTER, Register(email=email, password=PASSWORD))
    assert taken.code is AuthErrorCode.EMAIL_TAKEN
    assert (await login(gw, email)).code is AuthErrorCode.INVALID_CREDENTIALS


async def test_google_sign_in_links_to_an_account_with_the_same_email(auth_app, google, gw):
    pair = await register(gw)
    token = google.mint(email=pair.user.email.upper())
    linked = await call(gw, AuthRpc.LOGIN_GOOGLE, LoginWithGoogle(id_token=token))
    assert isinstance(linked, TokenPair)
    assert (linked.user.id, linked.created) == (pair.user.id, False)
    assert set(linked.user.providers) == {Provider.PASSWORD, Provider.GOOGLE}
    assert isinstance(await login(gw, pair.user.email), TokenPair)


@pytest.mark.parametrize(
    "overrides",
    [{"email_verified": False}, {"aud": "someone-else.apps.googleusercontent.com"}],
    ids=["unverified-email", "wrong-audience"],
)
async def test_google_tokens_failing_checks_are_refused(auth_app, google, overrides, gw):
    email = fresh_email()
    reply = await call(
        gw, AuthRpc.LOGIN_GOOGLE, LoginWithGoogle(id_token=google.mint(email=email, **overrides))
    )
    assert isinstance(reply, AuthFailure)
    assert reply.code is AuthErrorCode.INVALID_GOOGLE_TOKEN
    # Nothing was created: the email is still free.
    await register(gw, email)


# --- a process killed mid-registration -------------------------------------------------------


async def test_a_record_written_without_its_index_is_invisible_and_the_email_stays_free(
        auth_app, settings, nc, gw):
    """Simulates a kill between the two steps of registration: record written, no index."""
    email = fresh_email()
    repository = await UserRepository.open(nc.jetstream())
    orphan = UserRecord(
        id=uuid.uuid4().hex,
        email=email,
        created_at=utcnow(),
        providers=[Provider.PASSWORD],
        password_hash="$argon2id$v=19$m=1024,t=1,p=1$x$y",
    )
    await repository.save(orphan)  # ... and the process dies here

    assert (await login(gw, email)).code is AuthErrorCode.INVALID_CREDENTIALS
    hidden = await call(gw, AuthRpc.GET_USER, GetUser(user_id=orphan.id), UserResult)
    assert hidden.code is AuthErrorCode.NOT_FOUND

    pair = await register(gw, email)
    assert pair.user.id != orphan.id
    assert isinstance(await login(gw, email), TokenPair)
    # Deleting the orphan later (a retried DeleteAccount) cannot touch the new owner's index.
    orphans_token = build_token_issuer(settings).issue(user_id=orphan.id, email=email).token
    await call(gw, AuthRpc.DELETE_ACCOUNT,
               DeleteAccount(user_id=orphan.id, access_token=orphans_token), DoneReply)
    assert (await login(gw, email)).user.id == pair.user.id


async def test_a_second_replica_shares_the_queue_group(auth_app, settings, gw):
    replica = build_app(settings, configure_process=False)
    async with replica:
        replies = await asyncio.gather(
            *[call(gw, AuthRpc.SIGNING_KEYS, GetSigningKeys(), SigningKeys) for _ in range(20)]
        )
    # Exactly one reply each (a queue group, not a fan-out), all with the same keys.
    assert len({json.dumps(r.keys) for r in replies}) == 1


async def test_a_failure_at_the_commit_point_replies_unavailable_and_leaves_the_email_free(
        auth_app, settings, nc, caplog, gw):
    """Injects a failure where the email index is created: nothing half-made is visible."""
    handlers = await build_handlers(nc.jetstream(), settings)

    async def broken_claim(email: str, user_id: str) -> bool:
        raise ConnectionError("NATS went away")

    email = fresh_email()
    handlers.users.claim_email = broken_claim
    request = Register(email=email, password=PASSWORD)
    reply = await answer(Register, request.model_dump_json().encode(), handlers.register)
    assert isinstance(reply, AuthFailure)
    assert reply.code is AuthErrorCode.UNAVAILABLE
    assert reply.correlation_id == request.correlation_id
    assert "request failed" in caplog.text

    assert (await login(gw, email)).code is AuthErrorCode.INVALID_CREDENTIALS
    await register(gw, email)
    assert isinstance(await login(gw, email), TokenPair)


# --- password change -------------------------------------------------------------------------


def change(pair: TokenPair, current: str, new: str, ctx: ClientContext | None = None,
           access_token: str | None = None):
    from contracts.auth import ChangePassword

    if access_token is None:
        access_token = pair.access_token
    return ChangePassword(user_id=pair.user.id, access_token=access_token,
                          current_password=current, new_password=new, client=ctx or client())


async def test_a_password_change_ends_every_session_and_starts_one(auth_app, nc, gw):
    from contracts.topology import REVOCATIONS_KV, revocation_key

    email = fresh_email()
    laptop = await register(gw, email)
    phone = await login(gw, email)
    new_password = "another long passphrase 7"
    fresh = await call(gw, AuthRpc.CHANGE_PASSWORD, change(laptop, PASSWORD, new_password))
    assert isinstance(fresh, TokenPair), fresh
    assert fresh.user.id == laptop.user.id and fresh.refresh_token != laptop.refresh_token

    # Every earlier session's refresh token is refused, the caller's own included...
    for old in (laptop, phone):
        stale = await call(gw, AuthRpc.REFRESH, RefreshTokens(refresh_token=old.refresh_token))
        assert isinstance(stale, AuthFailure) and stale.code is AuthErrorCode.INVALID_REFRESH_TOKEN
    # ...and their access tokens are on the revocation list every gateway follows.
    kv = await nc.jetstream().key_value(REVOCATIONS_KV.bucket)
    revoked_at = datetime.fromisoformat(
        (await kv.get(revocation_key(laptop.user.id))).value.decode()).timestamp()

    def issued_at(pair: TokenPair) -> float:
        return jwt.decode(pair.access_token, options={"verify_signature": False})["iat"]

    assert issued_at(phone) <= revoked_at < issued_at(fresh)
    # The new session works; the old password does not, the new one does.
    assert isinstance(await call(gw, AuthRpc.REFRESH,
                                 RefreshTokens(refresh_token=fresh.refresh_token)), TokenPair)
    old = await login(gw, email, PASSWORD)
    assert isinstance(old, AuthFailure) and old.code is AuthErrorCode.INVALID_CREDENTIALS
    assert isinstance(await login(gw, email, new_password), TokenPair)


async def test_a_wrong_current_password_changes_nothing_and_is_throttled(auth_app, gw):
    email = fresh_email()
    pair = await register(gw, email)
    ctx = client()
    for _ in range(MAX_FAILURES):
        reply = await call(gw, AuthRpc.CHANGE_PASSWORD,
                           change(pair, "not the password 1", "another long passphrase 7", ctx))
        assert isinstance(reply, AuthFailure) and reply.code is AuthErrorCode.WRONG_PASSWORD
    # As sign-ins of this email from this network: refused even with the right password.
    limited = await call(gw, AuthRpc.CHANGE_PASSWORD,
                         change(pair, PASSWORD, "another long passphrase 7", ctx))
    assert limited.code is AuthErrorCode.RATE_LIMITED and limited.retry_after_s > 0
    # The same counters as sign-in: a sign-in from there is refused too.
    assert (await login(gw, email, PASSWORD, ctx)).code is AuthErrorCode.RATE_LIMITED
    await still_there(gw, pair)  # nothing ended
    assert isinstance(await login(gw, email, PASSWORD), TokenPair)  # from elsewhere: as before


@pytest.mark.parametrize(("new", "why"), [
    ("short", "at least"), ("password123", "common"), (PASSWORD, "different")])
async def test_a_new_password_follows_the_rules(auth_app, gw, new, why):
    pair = await register(gw)
    reply = await call(gw, AuthRpc.CHANGE_PASSWORD, change(pair, PASSWORD, new))
    assert isinstance(reply, AuthFailure) and reply.code is AuthErrorCode.WEAK_PASSWORD
    assert why in reply.detail
    await still_there(gw, pair)


@pytest.mark.parametrize("token", ["none", "another account's", "expired", "another key",
                                   "unknown key", "garbage"])
async def test_a_password_change_takes_a_live_access_token_of_the_account(
        auth_app, settings, token, gw):
    pair = await register(gw)
    forged = not_the_owners_tokens(settings, pair.user.id, pair.user.email)[token]
    reply = await call(gw, AuthRpc.CHANGE_PASSWORD,
                       change(pair, PASSWORD, "another long passphrase 7", access_token=forged))
    assert isinstance(reply, AuthFailure) and reply.code is AuthErrorCode.INVALID_ACCESS_TOKEN
    await still_there(gw, pair)


async def test_a_google_only_account_has_no_password_to_change(auth_app, google, gw):
    identity = google.mint(sub=str(uuid.uuid4().int)[:21], email=fresh_email())
    pair = await call(gw, AuthRpc.LOGIN_GOOGLE, LoginWithGoogle(id_token=identity))
    assert isinstance(pair, TokenPair), pair
    reply = await call(gw, AuthRpc.CHANGE_PASSWORD,
                       change(pair, "anything at all 1", "another long passphrase 7"))
    assert isinstance(reply, AuthFailure) and reply.code is AuthErrorCode.NO_PASSWORD
