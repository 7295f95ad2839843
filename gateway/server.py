"""What the gateway's HTTP server does below the ASGI app (uvicorn's protocol classes and
its logs): bounded request heads, sockets that stopped reading dropped, and secrets kept
out of every log line and span attribute.

- Heads: uvicorn's httptools parser has no limit on header size or count (it gathers a
  header's value in memory until the line ends), and its h11 one answers 400 after its
  buffer limit. `header_limited` counts a request's head as it arrives: over
  `max_bytes` or `max_count` headers, the answer is 431 and the connection closes,
  having held about `max_bytes` plus one read, however large the header.
- WebSockets: a socket closed because its client stopped reading would otherwise keep
  its unsent frames in the server's buffer until TCP gives up; it is aborted instead.
- Secrets: `redact_span` applies `terra.runtime.logs.redact` (which every service's log records
  go through) to the request span's URL attributes.
- Where it listens: `refuse_public_listener` keeps the local profile (published signing
  key, placeholder S3 key) on loopback.
- Probes: `quiet_probes` drops the access-log line of every successful `/health` and
  `/ready` (polled every few seconds by `terra up`, load balancers and orchestrators); a
  failing probe is still logged.
"""

from __future__ import annotations

import json
import logging
import socket
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from gateway.config import GatewaySettings
from gateway.problems import PROBLEM_JSON, TYPE_BASE
from terra.errors import ConfigurationError, TerraError
from terra.runtime.logs import redact
from terra.settings import Profile, is_loopback

# The request span's attributes that hold the target or URL (old and new conventions).
_URL_ATTRIBUTES = ("http.target", "http.url", "url.full", "url.query")


def redact_span(span: Any, scope: dict[str, Any]) -> None:
    """An OpenTelemetry `server_request_hook`: the span was started with the URL, query
    string included; rewrite those attributes."""
    if span is None or not span.is_recording():
        return
    attributes = getattr(span, "attributes", None) or {}
    for name in _URL_ATTRIBUTES:
        value = attributes.get(name)
        if isinstance(value, str) and (clean := redact(value)) != value:
            span.set_attribute(name, clean)


# --- where it listens -------------------------------------------------------------------


def refuse_public_listener(settings: GatewaySettings, listen_fd: int | None = None) -> None:
    """`ConfigurationError` when the local profile would listen beyond loopback: its keys
    are published (anyone could sign tokens with the local signing key, or use the
    placeholder S3 key), so they never face a network. `listen_fd` is a socket handed down
    already bound (`terra up`'s TERRA_LISTEN_FD): its address is what counts."""
    if settings.profile is not Profile.LOCAL:
        return
    if listen_fd is None:
        where, loopback = f"TERRA_HOST={settings.host}", is_loopback(settings.host)
    else:
        bound = _bound_address(listen_fd)
        where = f"the socket handed down (TERRA_LISTEN_FD) bound to {bound or 'a local path'}"
        loopback = bound is None or is_loopback(bound)
    if not loopback:
        raise ConfigurationError(
            f"the local profile (TERRA_PROFILE=local, also the default) listens on loopback "
            f"only, and {where} is not: its published development keys would face the "
            f"network. Listen on 127.0.0.1 or ::1, or run with TERRA_PROFILE=production and "
            f"real secrets.")


def _bound_address(fd: int) -> str | None:
    """The host a listening socket is bound to; None for a Unix socket (local by nature)."""
    sock = socket.socket(fileno=fd)
    try:
        return None if sock.family == socket.AF_UNIX else sock.getsockname()[0]
    finally:
        sock.detach()  # the descriptor stays open, for uvicorn to serve on


# --- request heads ---------------------------------------------------------------------

LINGER_S = 1.0  # after a 431, what the client still sends is read and dropped this long


class _HeadTooLarge(TerraError):
    pass


class HeaderLimitedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded request head; see `header_limited`."""

    max_bytes = 16 * 1024
    max_count = 100

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._in_head = True  # reading a request line and headers
        self._raw_head_bytes = 0  # bytes received while in the head (an upper bound)
        self._head_bytes = 0  # what the parser reported: the URL, names and values
        self._header_count = 0
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after a 431: read and dropped
        if self._in_head:
            self._raw_head_bytes += len(data)
        super().data_received(data)
        # Still in the head after all of that: the head alone is at least this large (a
        # header's value is gathered in memory until its line ends, so stop it here).
        if self._in_head and not self._refused and self._raw_head_bytes > self.max_bytes:
            self._refuse()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._raw_head_bytes = self._head_bytes = self._header_count = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # what follows is the next request's head

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.max_bytes or self._header_count > self.max_count:
            raise _HeadTooLarge  # httptools turns it into a parser error, answered below

    def send_400_response(self, msg: str) -> None:
        if self._head_bytes > self.max_bytes or self._header_count > self.max_count:
            self._refuse()  # the parser error was our `_HeadTooLarge`
        else:
            super().send_400_response(msg)

    def _refuse(self) -> None:
        """431, then read and drop what the client is still sending for a moment (so it
        gets to read the answer rather than a reset), then close."""
        self._refused = True
        self._in_head = False
        client = f"{self.client[0]}:{self.client[1]}" if self.client else None
        self.logger.warning("Request head over the limits; answered 431.",
                            extra={"client": client})
        body = json.dumps({
            "type": TYPE_BASE + "request-header-fields-too-large",
            "title": "Request Header Fields Too Large",
            "status": 431,
            "detail": f"The request's headers exceed {self.max_bytes} bytes or "
                      f"{self.max_count} fields.",
        }).encode()
        head = [b"HTTP/1.1 431 Request Header Fields Too Large\r\n"]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head += [b"content-type: " + PROBLEM_JSON.encode() + b"\r\n",
                 b"content-length: " + str(len(body)).encode() + b"\r\n",
                 b"connection: close\r\n\r\n"]
        self.transport.write(b"".join(head) + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


def header_limited(max_bytes: int, max_count: int) -> type[HttpToolsProtocol]:
    """The HTTP protocol class for `uvicorn.run(http=...)`: request heads over `max_bytes`
    (request line and headers) or with more than `max_count` headers get 431."""
    return type("HeaderLimitedProtocol", (HeaderLimitedProtocol,),
                {"max_bytes": max_bytes, "max_count": max_count})


class AbortStalledWebSocket(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, except that a connection whose peer stopped reading
    is aborted when the app is done with it (or its keep-alive pings go unanswered)
    rather than closed gracefully: a graceful close waits for the unsent frames to drain,
    which they never do, and keeps them in memory meanwhile."""

    async def run_asgi(self) -> None:
        await super().run_asgi()
        if not self.writable.is_set() and not self.disconnected:
            self.transport.abort()

    def keepalive_timeout(self) -> None:
        super().keepalive_timeout()
        if not self.writable.is_set():
            self.transport.abort()


PROBE_PATHS = frozenset({"/health", "/ready"})


class SuccessfulProbes(logging.Filter):
    """Drops uvicorn's access line for a probe answered 2xx. uvicorn's access record carries
    (client, method, path with query, HTTP version, status) as its args."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not isinstance(args, tuple) or len(args) != 5:
            return True
        path, status = str(args[2]).partition("?")[0], args[4]
        return not (path in PROBE_PATHS and isinstance(status, int) and 200 <= status < 300)


def quiet_probes() -> None:
    logging.getLogger("uvicorn.access").addFilter(SuccessfulProbes())
