"""Accounts through the gateway: the client's view of sign-up, sign-in and sessions."""

from __future__ import annotations

import asyncio
import time

import httpx
import jwt
import pytest
import websockets
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auth_service.bootstrap import build_token_issuer
from auth_service.config import AuthSettings
from contracts.ids import new_id
from tests.e2e.client import PASSWORD, register, ws_url

pytestmark = pytest.mark.e2e



def fresh_email() -> str:
    return f"Person.{new_id()[:10]}@Example.com"


def assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["type"] and body["title"] and body["detail"]
    return body


async def test_register_then_read_my_account(http):
    email = fresh_email()
    response = await http.post(
        "/api/auth/register",
        json={"email": email, "password": PASSWORD, "display_name": "Ada"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 900
    assert body["access_token"] and body["refresh_token"]
    user = body["user"]
    assert user["email"] == email.lower() and user["display_name"] == "Ada"
    assert user["providers"] == ["password"]

    me = await http.get("/api/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200 and me.json() == user


async def test_email_is_unique_case_insensitively(http):
    email = fresh_email()
    await register(http, email)
    assert_problem(await http.post(
        "/api/auth/register", json={"email": email.upper(), "password": PASSWORD}
    ), 409)


async def test_concurrent_registrations_of_one_email_create_one_account(http):
    email = fresh_email()
    responses = await asyncio.gather(*(
        http.post("/api/auth/register", json={"email": email, "password": PASSWORD})
        for _ in range(8)
    ))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 7, [r.text for r in responses]
    login = await http.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    created = next(r for r in responses if r.status_code == 201).json()
    assert login.json()["user"]["id"] == created["user"]["id"]


@pytest.mark.parametrize("password", ["short", "password1234", "qwertyuiop"])
async def test_weak_passwords_are_refused(http, password):
    body = assert_problem(await http.post(
        "/api/auth/register", json={"email": fresh_email(), "password": password}
    ), 422)
    assert [error["field"] for error in body["errors"]] == ["password"]


async def test_wrong_password_and_unknown_email_look_the_same(http):
    account = await register(http)
    wrong = await http.post("/api/auth/login",
                            json={"email": account.email, "password": "not the password!"})
    unknown = await http.post("/api/auth/login",
                              json={"email": fresh_email(), "password": "not the password!"})
    first, second = assert_problem(wrong, 401), assert_problem(unknown, 401)
    assert first == second


async def test_login_returns_a_working_token_pair(http):
    account = await register(http)
    login = await http.post("/api/auth/login",
                            json={"email": account.email.upper(), "password": PASSWORD})
    assert login.status_code == 200
    me = await http.get("/api/me", headers={
        "Authorization": f"Bearer {login.json()['access_token']}"})
    assert me.json()["id"] == account.user_id


async def test_refresh_rotates_and_reuse_revokes_the_family(http):
    account = await register(http)
    first = await http.post("/api/auth/refresh", json={"refresh_token": account.refresh_token})
    assert first.status_code == 200
    rotated = first.json()["refresh_token"]
    assert rotated != account.refresh_token

    # The old token was already used: presenting it again is theft or a bug.
    reuse = await http.post("/api/auth/refresh", json={"refresh_token": account.refresh_token})
    assert_problem(reuse, 401)
    # ... and the whole family is revoked, so the thief's rotated token dies too.
    assert_problem(await http.post("/api/auth/refresh", json={"refresh_token": rotated}), 401)


async def test_logout_ends_the_session(http):
    account = await register(http)
    response = await http.post("/api/auth/logout", json={"refresh_token": account.refresh_token})
    assert response.status_code == 204
    assert_problem(await http.post(
        "/api/auth/refresh", json={"refresh_token": account.refresh_token}), 401)


async def test_signing_out_everywhere_takes_this_accounts_live_access_token(http):
    alice, bob = await register(http), await register(http)
    everywhere = {"refresh_token": alice.refresh_token, "everywhere": True}
    assert_problem(await http.post("/api/auth/logout", json=everywhere), 401)
    # Bob's token is valid, but not Alice's: auth_service checks whose it is itself.
    theirs = await http.post("/api/auth/logout", headers=bob.headers, json=everywhere)
    assert assert_problem(theirs, 401)["code"] == "invalid_access_token"
    assert theirs.headers["www-authenticate"] == "Bearer"
    # Nothing ended: Alice's token works, and her own token signs her out everywhere.
    assert (await http.get("/api/me", headers=alice.headers)).status_code == 200
    mine = await http.post("/api/auth/logout", headers=alice.headers, json=everywhere)
    assert mine.status_code == 204, mine.text
    assert_problem(await http.get("/api/me", headers=alice.headers), 401)
    assert (await http.get("/api/me", headers=bob.headers)).status_code == 200


async def test_login_needs_exactly_one_method(http):
    body = assert_problem(await http.post("/api/auth/login", json={
        "email": "a@example.com", "password": PASSWORD, "google_id_token": "x"}), 422)
    assert body["errors"]


async def test_google_sign_in_creates_then_finds_the_same_user(http, google_keys):
    sub, email = str(int(time.time() * 1e6)), f"g{new_id()[:10]}@gmail.com"
    token = google_keys.mint(sub=sub, email=email)
    first = await http.post("/api/auth/login", json={"google_id_token": token})
    assert first.status_code == 200, first.text
    assert first.json()["user"]["providers"] == ["google"]
    again = await http.post("/api/auth/login",
                            json={"google_id_token": google_keys.mint(sub=sub, email=email,
                                                                      aud="terra-ios.apps.example")})
    assert again.json()["user"]["id"] == first.json()["user"]["id"]


async def test_google_sign_in_links_a_verified_email_to_the_existing_account(http, google_keys):
    account = await register(http)
    token = google_keys.mint(sub=new_id()[:20], email=account.email)
    response = await http.post("/api/auth/login", json={"google_id_token": token})
    assert response.status_code == 200, response.text
    user = response.json()["user"]
    assert user["id"] == account.user_id
    assert sorted(user["providers"]) == ["google", "password"]


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "someone-elses-app"},
        {"email_verified": False},
        {"issuer": "https://evil.example"},
        {"expires_in": -600},
    ],
    ids=["wrong-aud", "unverified-email", "wrong-issuer", "expired"],
)
async def test_bad_google_tokens_are_refused(http, google_keys, claims):
    token = google_keys.mint(sub=new_id()[:20], email=f"{new_id()[:8]}@gmail.com", **claims)
    assert_problem(await http.post("/api/auth/login", json={"google_id_token": token}), 401)


async def test_a_google_token_signed_by_another_key_is_refused(http, google_keys):
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = google_keys.mint(sub="1", email="x@gmail.com", key=other)
    assert_problem(await http.post("/api/auth/login", json={"google_id_token": token}), 401)


def _forged_tokens(user_id: str) -> dict[str, str]:
    issuer = build_token_issuer(AuthSettings())
    now = int(time.time())
    claims = {"iss": issuer.issuer, "aud": issuer.audience, "sub": user_id, "iat": now,
              "exp": now + 600, "jti": new_id()}
    stranger = Ed25519PrivateKey.generate()
    return {
        "expired": issuer.issue(user_id=user_id, email="x@example.com", now=now - 3600).token,
        "wrong-key-same-kid": jwt.encode(claims, stranger, algorithm="EdDSA",
                                         headers={"kid": issuer.kid}),
        "unknown-kid": jwt.encode(claims, stranger, algorithm="EdDSA", headers={"kid": "nope"}),
        "alg-none": jwt.encode(claims, None, algorithm="none", headers={"kid": issuer.kid}),
        "tampered": issuer.issue(user_id=user_id, email="x@example.com").token[:-4] + "AAAA",
        "garbage": "not.a.token",
    }


async def test_forged_expired_or_wrong_key_tokens_are_refused_on_rest_and_ws(http, gateway_url):
    account = await register(http)
    for name, token in _forged_tokens(account.user_id).items():
        response = await http.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        assert_problem(response, 401)
        assert response.headers["www-authenticate"] == "Bearer", name
        async with websockets.connect(ws_url(gateway_url, "/ws", token=token)) as socket:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(socket.recv(), 5)
        assert closed.value.rcvd.code == 4401, name


async def test_no_token_is_a_401(http):
    assert_problem(await http.get("/api/me"), 401)


async def test_deleting_my_account(http, nc):
    account = await register(http)
    js = nc.jetstream()
    response = await http.delete("/api/me", headers=account.headers)
    assert response.status_code == 202
    # The account is gone: its email is free again and its refresh token dead.
    assert_problem(await http.post(
        "/api/auth/refresh", json={"refresh_token": account.refresh_token}), 401)
    assert_problem(await http.post(
        "/api/auth/login", json={"email": account.email, "password": PASSWORD}), 401)
    deleted = await js.get_msg("TERRA_EVENTS", subject=f"terra.evt.account.deleted.{account.user_id}")
    assert account.user_id in deleted.data.decode()


async def test_repeated_login_failures_are_throttled_with_retry_after(http):
    account = await register(http)
    statuses = []
    for _ in range(7):
        response = await http.post("/api/auth/login",
                                   json={"email": account.email, "password": "wrong password!!"})
        statuses.append(response.status_code)
    assert statuses[:5] == [401] * 5 and statuses[-1] == 429, statuses
    assert int(response.headers["retry-after"]) > 0
    # Even the right password waits out the window: guessing cannot be confirmed.
    right = await http.post("/api/auth/login", json={"email": account.email, "password": PASSWORD})
    assert right.status_code == 429
