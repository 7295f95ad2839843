"""Structured JSON logs carrying the correlation id (and trace id when tracing)."""

from __future__ import annotations

import json
import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from terra.settings import LogFormat, RuntimeSettings

correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)

# Attributes every LogRecord has; anything else was passed with `extra=` and is logged.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        from terra.runtime.telemetry import current_trace_id

        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if cid := correlation_id.get():
            entry["correlation_id"] = cid
        if trace_id := current_trace_id():
            entry["trace_id"] = trace_id
        entry.update(extra_fields(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """What a call passed in `extra=`: the record's attributes beyond logging's own."""
    return {key: value for key, value in vars(record).items()
            if key not in _STANDARD and not key.startswith("_")}


class TextFormatter(logging.Formatter):
    """For people (`terra up`): the message, then the `extra` fields as key=value."""

    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        fields = "".join(f" {key}={value}" for key, value in extra_fields(record).items())
        return super().formatMessage(record) + fields


REDACTED = "[redacted]"
# Query parameters that carry credentials (ours: `token`, `ticket`; S3 presigning's
# signature and session token) and header-shaped credentials.
_QUERY_SECRET = re.compile(
    r"(?i)((?:^|[?&;\s])(?:token|ticket|access_token|refresh_token|terra_refresh|x-amz-signature|"
    r"x-amz-security-token|signature)=)[^&\s\"']*")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9\-._~+/]+=*")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# Credential fields of our messages however they are printed, JSON (`"access_token": "…"`)
# or a repr (`refresh_token='…'`): opaque tokens and passwords have no shape to find.
_FIELD_SECRET = re.compile(
    r"""((?:["']|\b)(?:access_token|refresh_token|id_token|google_id_token|(?:current_|new_)?password|"""
    r"""token|ticket)["']?\s*[:=]\s*)(["'])(?:(?!\2)[^\\]|\\.)*\2""")
_FIELD_NAMES = ("token", "password", "ticket")


def redact(text: str) -> str:
    if any(name in text for name in _FIELD_NAMES):
        text = _FIELD_SECRET.sub(rf"\1\2{REDACTED}\2", text)
    if "=" in text:
        text = _QUERY_SECRET.sub(rf"\1{REDACTED}", text)
    if "earer" in text:
        text = _BEARER.sub(rf"\1{REDACTED}", text)
    if "eyJ" in text:
        text = _JWT.sub(REDACTED, text)
    return text


def _redacted(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class SecretRedactor(logging.Filter):
    """Rewrites a record's message, arguments and extra fields before any handler
    formats it (uvicorn's access log passes the path with its query as an argument)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redacted(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _redacted(arg) for key, arg in record.args.items()}
        for key, value in vars(record).items():
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, redact(value))
        return True


def setup_logging(settings: RuntimeSettings, service: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format is LogFormat.JSON:
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(TextFormatter(service))
    # Tokens, passwords, signatures: never in a log line, whoever logs (uvicorn included).
    handler.addFilter(SecretRedactor())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
