"""auth_service settings from the environment."""

from __future__ import annotations

import pytest

from auth_service.config import AuthSettings
from terra.errors import ConfigurationError


def test_google_client_ids_read_as_a_comma_list_or_json(monkeypatch):
    monkeypatch.setenv("TERRA_GOOGLE_CLIENT_IDS", "web.apps, ios.apps ,android.apps")
    assert AuthSettings().google_client_ids == ["web.apps", "ios.apps", "android.apps"]
    monkeypatch.setenv("TERRA_GOOGLE_CLIENT_IDS", '["web.apps"]')
    assert AuthSettings().google_client_ids == ["web.apps"]


def _own_key_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()


def test_the_published_key_is_refused_when_the_profile_was_not_chosen(monkeypatch):
    """A deployment that forgets TERRA_PROFILE would default to the local profile and sign
    with a key anyone can read in this repository."""
    monkeypatch.delenv("TERRA_PROFILE", raising=False)
    with pytest.raises(ConfigurationError) as refused:
        AuthSettings()
    assert "TERRA_PROFILE=local" in str(refused.value)
    assert "TERRA_SIGNING_KEY" in str(refused.value)


def test_the_published_key_signs_when_the_local_profile_is_chosen(monkeypatch):
    monkeypatch.setenv("TERRA_PROFILE", "local")
    assert AuthSettings().uses_published_signing_key
    monkeypatch.delenv("TERRA_PROFILE")
    assert AuthSettings(profile="local").uses_published_signing_key  # given, not defaulted


def test_a_key_of_ones_own_needs_no_profile(monkeypatch):
    monkeypatch.delenv("TERRA_PROFILE", raising=False)
    pem = _own_key_pem()
    monkeypatch.setenv("TERRA_SIGNING_KEY", pem)
    settings = AuthSettings()
    assert settings.signing_key.get_secret_value() == pem
    assert not settings.uses_published_signing_key
