"""Google ID token checks, against RSA keys made here and a JWKS served on loopback.

`FakeGoogle` is also used by the integration tests.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import RSAAlgorithm

from auth_service.domain import AuthError
from auth_service.google import (
    CachingRequest,
    GoogleVerifier,
    InvalidGoogleToken,
    identity_from_claims,
    max_age_s,
)
from contracts.auth import AuthErrorCode

WEB_CLIENT = "web-client.apps.googleusercontent.com"
IOS_CLIENT = "ios-client.apps.googleusercontent.com"


def self_signed_pem(key: rsa.RSAPrivateKey) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "accounts.google.test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class FakeGoogle:
    """Signs ID tokens like Google and serves its JWKS with Cache-Control, on loopback."""

    def __init__(self, max_age: int = 3600, *, x509_certs: bool = False) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex
        self.max_age = max_age
        # Google serves both: a JWKS (v3 URL) and {kid: X.509 PEM} (v1 URL, the default).
        self.x509_certs = x509_certs
        self.hits = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.hits += 1
                jwk = json.loads(RSAAlgorithm.to_jwk(fake.key.public_key()))
                body = json.dumps(
                    {"keys": [{**jwk, "kid": fake.kid, "alg": "RS256", "use": "sig"}]}
                )
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", f"public, max-age={fake.max_age}")
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.certs_url = f"http://127.0.0.1:{self._server.server_address[1]}/oauth2/v3/certs"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def certs(self) -> dict:
        if self.x509_certs:
            return {self.kid: self_signed_pem(self.key)}
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**jwk, "kid": self.kid, "alg": "RS256", "use": "sig"}]}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def mint(self, *, key=None, kid: str | None = None, **overrides) -> str:
        now = int(time.time())
        claims = {
            "iss": "https://accounts.google.com",
            "aud": WEB_CLIENT,
            "sub": str(uuid.uuid4().int)[:21],
            "email": f"g-{uuid.uuid4().hex[:10]}@gmail.com",
            "email_verified": True,
            "name": "Gia Google",
            "iat": now,
            "exp": now + 3600,
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(
            claims, key or self.key, algorithm="RS256", headers={"kid": kid or self.kid}
        )


@pytest.fixture
def verifier(google) -> GoogleVerifier:
    return GoogleVerifier([WEB_CLIENT, IOS_CLIENT], certs_url=google.certs_url)


async def test_a_valid_token_gives_the_identity(google, verifier):
    token = google.mint(sub="1234567890", email="Ana@Gmail.com")
    identity = await verifier.verify(token)
    assert identity.sub == "1234567890"
    assert identity.email == "Ana@Gmail.com"


@pytest.mark.parametrize("overrides", [{}, {"aud": "someone-else"}, {"email_verified": False}])
async def test_the_x509_certificate_format_is_checked_the_same_way(overrides):
    fake = FakeGoogle(x509_certs=True)
    try:
        verifier = GoogleVerifier([WEB_CLIENT], certs_url=fake.certs_url)
        token = fake.mint(sub="77", **overrides)
        if overrides:
            with pytest.raises(InvalidGoogleToken):
                await verifier.verify(token)
        else:
            assert (await verifier.verify(token)).sub == "77"
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        with pytest.raises(InvalidGoogleToken):
            await verifier.verify(fake.mint(key=other))
    finally:
        fake.close()


async def test_any_configured_client_id_is_accepted(google, verifier):
    assert (await verifier.verify(google.mint(aud=IOS_CLIENT))).sub


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"aud": "someone-else.apps.googleusercontent.com"}, "aud"),
        ({"iss": "https://evil.example.com"}, "iss"),
        ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "exp"),
        ({"email_verified": False}, "unverified"),
        ({"email_verified": None}, "no email_verified"),
        ({"email": None}, "no email"),
    ],
)
async def test_bad_claims_are_refused(google, verifier, overrides, why):
    with pytest.raises(InvalidGoogleToken):
        await verifier.verify(google.mint(**overrides))


async def test_a_token_signed_by_another_key_is_refused(google, verifier):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(InvalidGoogleToken):
        await verifier.verify(google.mint(key=other))


async def test_an_unknown_kid_is_refused(google, verifier):
    with pytest.raises(InvalidGoogleToken):
        await verifier.verify(google.mint(kid="not-a-google-key"))


async def test_garbage_is_refused(verifier):
    with pytest.raises(InvalidGoogleToken):
        await verifier.verify("not.a.jwt")


async def test_sign_in_is_refused_when_no_client_id_is_configured(google):
    with pytest.raises(InvalidGoogleToken):
        await GoogleVerifier([], certs_url=google.certs_url).verify(google.mint())


async def test_unreachable_keys_are_unavailable_not_invalid(google):
    verifier = GoogleVerifier([WEB_CLIENT], certs_url="http://127.0.0.1:9/certs")
    with pytest.raises(AuthError) as caught:
        await verifier.verify(google.mint())
    assert caught.value.code is AuthErrorCode.UNAVAILABLE


async def test_keys_are_cached_for_their_max_age():
    fake = FakeGoogle(max_age=3600)
    try:
        verifier = GoogleVerifier([WEB_CLIENT], certs_url=fake.certs_url)
        for _ in range(3):
            await verifier.verify(fake.mint())
        assert fake.hits == 1
    finally:
        fake.close()


async def test_keys_without_max_age_are_fetched_again():
    fake = FakeGoogle(max_age=0)
    try:
        request = CachingRequest()
        verifier = GoogleVerifier([WEB_CLIENT], certs_url=fake.certs_url, request=request)
        await verifier.verify(fake.mint())
        await verifier.verify(fake.mint())
        assert fake.hits == 2
    finally:
        fake.close()


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("public, max-age=19845, must-revalidate, no-transform", 19845),
        ("no-store", 0),
        ("no-cache, max-age=60", 0),
        (None, 0),
        ("public", 0),
    ],
)
def test_max_age_reads_cache_control(header, seconds):
    assert max_age_s(header) == seconds


def test_email_verified_may_be_the_string_true():
    claims = {
        "iss": "accounts.google.com",
        "aud": WEB_CLIENT,
        "exp": time.time() + 60,
        "sub": "42",
        "email": "a@b.co",
        "email_verified": "true",
    }
    assert identity_from_claims(claims, [WEB_CLIENT]).sub == "42"


def test_a_subject_that_cannot_be_a_key_is_refused():
    claims = {
        "iss": "accounts.google.com",
        "aud": WEB_CLIENT,
        "exp": time.time() + 60,
        "sub": "a.b>c",
        "email": "a@b.co",
        "email_verified": True,
    }
    with pytest.raises(InvalidGoogleToken):
        identity_from_claims(claims, [WEB_CLIENT])
