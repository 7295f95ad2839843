"""Settings refuse placeholders outside the local profile; logs are JSON with ids."""

from __future__ import annotations

import json
import logging

import pytest

from terra.backoff import retry_delay_s
from terra.errors import ConfigurationError
from terra.runtime.logs import JsonFormatter, correlation_id
from terra.settings import RuntimeSettings


def test_local_profile_accepts_the_placeholders():
    assert RuntimeSettings(profile="local").s3_access_key.get_secret_value()


def test_production_refuses_placeholder_credentials_and_says_what_to_set():
    with pytest.raises(ConfigurationError) as raised:
        RuntimeSettings(profile="production")
    assert "TERRA_S3_ACCESS_KEY" in str(raised.value)
    assert "TERRA_S3_SECRET_KEY" in str(raised.value)
    assert "TERRA_NATS_NKEY_FILE" in str(raised.value)  # no NATS credential, no start
    assert "TERRA_NATS_CA_FILE" in str(raised.value)  # nor a credential sent unverified


def test_a_service_without_storage_needs_no_s3_key_in_production(monkeypatch):
    from auth_service.config import AuthSettings
    from prompt_service.config import PromptSettings

    monkeypatch.setenv("TERRA_PROFILE", "production")
    monkeypatch.setenv("TERRA_NATS_NKEY_FILE", "/run/secrets/nats.nk")
    monkeypatch.setenv("TERRA_NATS_CA_FILE", "/run/secrets/nats_ca")
    monkeypatch.setenv("TERRA_SIGNING_KEY", _a_signing_key())
    assert PromptSettings().uses_storage is False
    assert AuthSettings().uses_storage is False
    with pytest.raises(ConfigurationError, match="TERRA_S3_ACCESS_KEY"):
        RuntimeSettings()  # one that stores objects must be given its key


def _a_signing_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()


def test_production_runs_with_real_credentials(monkeypatch):
    monkeypatch.setenv("TERRA_PROFILE", "production")
    monkeypatch.setenv("TERRA_S3_ACCESS_KEY", "AKIA-real")
    monkeypatch.setenv("TERRA_S3_SECRET_KEY", "a-real-secret")
    monkeypatch.setenv("TERRA_NATS_NKEY_FILE", "/run/secrets/nats.nk")
    monkeypatch.setenv("TERRA_NATS_CA_FILE", "/run/secrets/nats_ca")
    monkeypatch.setenv("TERRA_NATS_URL", "nats://a:4222, nats://b:4222")
    settings = RuntimeSettings()
    assert settings.nats_servers == ["nats://a:4222", "nats://b:4222"]


def test_json_logs_carry_the_correlation_id_and_extras():
    record = logging.makeLogRecord(
        {"name": "gateway", "levelno": logging.INFO, "levelname": "INFO", "msg": "hello %s",
         "args": ("world",), "job_id": "j1"}
    )
    token = correlation_id.set("req-7")
    try:
        entry = json.loads(JsonFormatter("gateway").format(record))
    finally:
        correlation_id.reset(token)
    assert entry["msg"] == "hello world" and entry["correlation_id"] == "req-7"
    assert entry["job_id"] == "j1" and entry["service"] == "gateway" and entry["level"] == "info"


def test_retry_delays_grow_and_are_capped():
    def ceiling() -> float:
        return 1.0

    def floor() -> float:
        return 0.0

    assert [retry_delay_s(n, draw=ceiling) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert [retry_delay_s(n, draw=floor) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert retry_delay_s(30, draw=ceiling) == 60.0
    assert retry_delay_s(5000, draw=ceiling) == 60.0  # no float overflow after long outages
    with pytest.raises(ValueError):
        retry_delay_s(0)


def test_retry_delays_are_jittered_within_the_upper_half_of_their_step():
    delays = {retry_delay_s(3) for _ in range(200)}
    assert all(2.0 <= delay <= 4.0 for delay in delays)
    assert len(delays) > 1  # spread, so callers that failed together retry apart
