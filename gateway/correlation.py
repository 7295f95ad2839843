"""Every request gets a correlation id (the client's `X-Request-ID`, or a new one): it is
in the gateway's logs, on every message the request causes, and echoed in the response."""

from __future__ import annotations

import re

from contracts.ids import new_id
from terra.runtime.logs import correlation_id

HEADER = b"x-request-id"
_ACCEPTABLE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class CorrelationId:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers") or []).get(HEADER, b"").decode("latin-1")
        value = given if _ACCEPTABLE.match(given) else new_id()
        token = correlation_id.set(value)

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (HEADER, value.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            correlation_id.reset(token)
