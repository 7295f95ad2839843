"""The REST routes, one module per resource: each parses a request, calls one use case or
part, and translates the answer; `deleted_or_deleting` is the answer they share."""

from __future__ import annotations

from fastapi import Response
from fastapi.responses import JSONResponse


def deleted_or_deleting(event: dict | None, about: str, value: str) -> Response:
    """A deletion asked of the service that owns the record: 204 once its `..._deleted`
    event came within the wait, else 202 (it is on its way; the event will reach the
    user's sockets)."""
    if event is None:
        return JSONResponse({about: value, "status": "deleting"}, status_code=202)
    return Response(status_code=204)
