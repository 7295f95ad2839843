"""What the gateway's log filter and span hook remove: credentials in query strings
(`?token=`, `?ticket=`, a presigned URL's signature), `Bearer` values, and JWTs."""

from __future__ import annotations

import logging

import pytest

from gateway.server import redact_span
from terra.runtime.logs import REDACTED, SecretRedactor, redact

JWT = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz"


@pytest.mark.parametrize(("text", "kept"), [
    (f"/ws?token={JWT}&since=4", "since=4"),
    (f"/ws/prompt?since=4&token={JWT}", "/ws/prompt?since=4&token="),
    ("/ws?ticket=abc123", "/ws?ticket="),
    (("https://s3/terra/images/u/j/0.png?X-Amz-Algorithm=AWS4-HMAC-SHA256"
      "&X-Amz-Signature=0123456789abcdef"), "X-Amz-Algorithm=AWS4-HMAC-SHA256"),
    ("Authorization: Bearer opaque-token_value.42", "Authorization: Bearer "),
    (f"an error mentioning {JWT} somewhere", "an error mentioning"),
])
def test_secrets_are_redacted_and_the_rest_kept(text, kept):
    clean = redact(text)
    assert kept in clean and REDACTED in clean
    for secret in (JWT, "abc123", "0123456789abcdef", "opaque-token_value.42"):
        assert secret not in clean


def test_text_without_secrets_is_unchanged():
    for text in ("/api/me", "/ws?since=12", "GET /api/models?limit=5 HTTP/1.1"):
        assert redact(text) == text


def record(msg: str, *args, **extra) -> logging.LogRecord:
    made = logging.makeLogRecord({"name": "uvicorn.access", "msg": msg, "args": args,
                                  "levelno": logging.INFO, "levelname": "INFO"})
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_the_access_log_and_the_websocket_log_lose_the_token():
    access = record('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET",
                    f"/api/me?token={JWT}", "1.1", 200)
    accepted = record('%s - "WebSocket %s" [accepted]', "127.0.0.1:5001", f"/ws?token={JWT}")
    failed = record("could not serve", path=f"/ws?token={JWT}")
    redactor = SecretRedactor()
    for each in (access, accepted, failed):
        assert redactor.filter(each)
    assert access.getMessage() == (f'127.0.0.1:5000 - "GET /api/me?token={REDACTED} '
                                   'HTTP/1.1" 200')
    assert JWT not in accepted.getMessage() and JWT not in failed.path


class Span:
    def __init__(self, **attributes) -> None:
        self.attributes = attributes

    def is_recording(self) -> bool:
        return True

    def set_attribute(self, name, value) -> None:
        self.attributes[name] = value


def test_the_request_span_loses_the_token():
    span = Span(**{"http.target": f"/ws?token={JWT}", "url.query": f"token={JWT}",
                   "http.url": f"http://gw/ws?token={JWT}", "http.method": "GET"})
    redact_span(span, {"type": "websocket"})
    assert all(JWT not in str(value) for value in span.attributes.values())
    assert span.attributes["http.target"] == f"/ws?token={REDACTED}"


@pytest.mark.parametrize(("text", "secret", "kept"), [
    ('{"access_token": "opaque-access", "user_id": "u1"}', "opaque-access", '"user_id": "u1"'),
    ('{"refresh_token":"opaque-refresh","everywhere":true}', "opaque-refresh", "everywhere"),
    ("Logout(refresh_token='opaque-refresh', access_token='opaque-access')", "opaque-",
     "Logout(refresh_token="),
    ('{"password": "hunter \\" two", "email": "a@b.co"}', "hunter", '"email": "a@b.co"'),
    ("{'id_token': 'google-id', 'token_type': 'bearer'}", "google-id", "'token_type': 'bearer'"),
])
def test_credential_fields_are_redacted_in_json_and_reprs(text, secret, kept):
    """Opaque tokens and passwords have no shape to find: their field names give them away
    (a request model dumped or printed by whoever logs it)."""
    clean = redact(text)
    assert secret not in clean and REDACTED in clean and kept in clean


def test_a_delete_account_request_logged_whole_loses_its_token():
    from contracts.auth import DeleteAccount

    request = DeleteAccount(user_id="u1", access_token="opaque-access")
    for text in (request.model_dump_json(), repr(request), str(request.model_dump())):
        assert "opaque-access" not in redact(text)


def test_successful_probes_leave_no_access_line_and_failing_ones_do():
    import logging

    from gateway.server import SuccessfulProbes

    def access(path: str, status: int) -> logging.LogRecord:
        return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                                 '%s - "%s %s HTTP/%s" %d',
                                 ("127.0.0.1:5000", "GET", path, "1.1", status), None)

    quiet = SuccessfulProbes()
    assert not quiet.filter(access("/ready", 200))
    assert not quiet.filter(access("/health", 200))
    assert quiet.filter(access("/ready", 503))  # a failing probe is news
    assert quiet.filter(access("/ready?verbose=1", 503))
    assert quiet.filter(access("/api/jobs/x", 200))
    assert quiet.filter(access("/readyz", 200))
