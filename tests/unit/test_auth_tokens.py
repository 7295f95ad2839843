"""Access tokens: EdDSA signatures, claims, expiry, forgery, key rotation, JWKS."""

from __future__ import annotations

import base64
import hashlib
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auth_service.bootstrap import build_token_issuer
from auth_service.config import AuthSettings, local_signing_key_pem
from auth_service.tokens import InvalidAccessToken, TokenIssuer, load_private_key, public_jwk


def issuer_for(key: Ed25519PrivateKey, *previous: Ed25519PrivateKey, ttl_s: int = 900):
    return TokenIssuer(
        key,
        issuer="terra-auth",
        audience="terra-api",
        ttl_s=ttl_s,
        previous_keys=tuple(k.public_key() for k in previous),
    )


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_a_token_carries_the_claims_the_gateway_needs(key):
    issuer = issuer_for(key)
    issued = issuer.issue(user_id="u1", email="ana@example.com")
    claims = issuer.verify(issued.token)
    assert claims["sub"] == "u1"
    assert claims["email"] == "ana@example.com"
    assert claims["iss"] == "terra-auth"
    assert claims["aud"] == "terra-api"
    assert claims["exp"] - claims["iat"] == 900 == issued.expires_in
    assert claims["jti"] == issued.jti
    header = jwt.get_unverified_header(issued.token)
    assert header["alg"] == "EdDSA"
    assert header["kid"] == issuer.kid


def test_a_token_verifies_with_the_published_jwks_alone(key):
    issuer = issuer_for(key)
    token = issuer.issue(user_id="u1", email="a@b.co").token
    jwks = jwt.PyJWKSet.from_dict({"keys": issuer.jwks()})
    public = next(k for k in jwks.keys if k.key_id == jwt.get_unverified_header(token)["kid"])
    claims = jwt.decode(token, public.key, algorithms=["EdDSA"], audience="terra-api")
    assert claims["sub"] == "u1"


def test_an_expired_token_is_refused(key):
    issuer = issuer_for(key, ttl_s=60)
    token = issuer.issue(user_id="u1", email="a@b.co", now=time.time() - 120).token
    with pytest.raises(InvalidAccessToken, match="expired"):
        issuer.verify(token)


def test_a_token_signed_by_another_key_with_our_kid_is_refused(key):
    issuer = issuer_for(key)
    forger = issuer_for(Ed25519PrivateKey.generate())
    claims = {
        "iss": "terra-auth",
        "aud": "terra-api",
        "sub": "admin",
        "iat": 0,
        "exp": int(time.time()) + 60,
        "jti": "x",
    }
    forged = jwt.encode(claims, forger._signing_key, algorithm="EdDSA", headers={"kid": issuer.kid})
    with pytest.raises(InvalidAccessToken):
        issuer.verify(forged)


def test_a_tampered_payload_is_refused(key):
    issuer = issuer_for(key)
    head, payload, sig = issuer.issue(user_id="u1", email="a@b.co").token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "someone-else"
    evil = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidAccessToken):
        issuer.verify(f"{head}.{evil}.{sig}")


def test_an_unsigned_token_is_refused(key):
    issuer = issuer_for(key)
    claims = {
        "iss": "terra-auth",
        "aud": "terra-api",
        "sub": "u1",
        "iat": 0,
        "exp": int(time.time()) + 60,
        "jti": "x",
    }
    none_token = jwt.encode(claims, None, algorithm="none", headers={"kid": issuer.kid})
    with pytest.raises(InvalidAccessToken):
        issuer.verify(none_token)


def test_a_token_for_another_audience_is_refused(key):
    issuer = issuer_for(key)
    other = TokenIssuer(key, issuer="terra-auth", audience="other-api", ttl_s=60)
    with pytest.raises(InvalidAccessToken):
        issuer.verify(other.issue(user_id="u1", email="a@b.co").token)


def test_a_token_from_an_unknown_key_is_refused(key):
    issuer = issuer_for(key)
    stranger = issuer_for(Ed25519PrivateKey.generate())
    with pytest.raises(InvalidAccessToken, match="unknown signing key"):
        issuer.verify(stranger.issue(user_id="u1", email="a@b.co").token)


def test_after_rotation_old_tokens_verify_and_new_ones_use_the_new_kid(key):
    old_issuer = issuer_for(key)
    old_token = old_issuer.issue(user_id="u1", email="a@b.co").token
    new_key = Ed25519PrivateKey.generate()
    rotated = issuer_for(new_key, key)
    assert rotated.verify(old_token)["sub"] == "u1"
    new_token = rotated.issue(user_id="u1", email="a@b.co").token
    assert jwt.get_unverified_header(new_token)["kid"] == rotated.kid != old_issuer.kid
    assert [k["kid"] for k in rotated.jwks()] == [rotated.kid, old_issuer.kid]
    # The retired key cannot verify what the new one signed.
    with pytest.raises(InvalidAccessToken):
        old_issuer.verify(new_token)


def test_kid_is_the_rfc7638_thumbprint():
    # RFC 8037 appendix A.3: the thumbprint of its Ed25519 example key.
    x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    raw = base64.urlsafe_b64decode(x + "=")
    public = serialization.load_der_public_key(bytes.fromhex("302a300506032b6570032100") + raw)
    jwk = public_jwk(public)
    assert jwk["x"] == x
    assert jwk["kid"] == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    expected = hashlib.sha256(
        json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":")).encode()
    ).digest()
    assert base64.urlsafe_b64decode(jwk["kid"] + "=") == expected


def test_the_local_key_is_the_same_in_every_process_and_refused_in_production(monkeypatch):
    assert load_private_key(local_signing_key_pem()) is not None
    assert AuthSettings().signing_key.get_secret_value() == local_signing_key_pem()
    assert build_token_issuer(AuthSettings()).kid == build_token_issuer(AuthSettings()).kid
    monkeypatch.setenv("TERRA_PROFILE", "production")
    monkeypatch.setenv("TERRA_S3_ACCESS_KEY", "real-access")
    monkeypatch.setenv("TERRA_S3_SECRET_KEY", "real-secret")
    monkeypatch.setenv("TERRA_NATS_NKEY_FILE", "/run/secrets/nats.nk")
    monkeypatch.setenv("TERRA_NATS_CA_FILE", "/run/secrets/nats_ca")
    with pytest.raises(Exception, match="TERRA_SIGNING_KEY"):
        AuthSettings()
    pem = (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    monkeypatch.setenv("TERRA_SIGNING_KEY", pem)
    assert AuthSettings().signing_key.get_secret_value() == pem


def test_previous_public_keys_come_from_the_environment(monkeypatch, key):
    old = Ed25519PrivateKey.generate()
    old_pem = (
        old.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    monkeypatch.setenv("TERRA_PREVIOUS_PUBLIC_KEYS", json.dumps([old_pem]))
    issuer = build_token_issuer(AuthSettings())
    assert [k["kid"] for k in issuer.jwks()][1] == public_jwk(old.public_key())["kid"]
    assert issuer.verify(issuer_for(old).issue(user_id="u1", email="a@b.co").token)["sub"] == "u1"
