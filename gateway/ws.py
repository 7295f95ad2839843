"""WebSockets: `/ws` (every domain) and `/ws/prompt`, `/ws/training`, `/ws/generate`.

Protocol: authenticate with `?ticket=` (a single-use ticket from `POST /api/ws/ticket`,
`gateway.tickets`: no token in the URL), or `Authorization: Bearer`, or (legacy, for
existing clients) `?token=`; optional `?since=<seq>`
replays the caller's events after that stream sequence, then the socket continues live
with no gap and no duplicate. Server frames are events `{seq, type, job_id, domain,
payload}` or control frames without `seq`: `ready`, `pong`, and close codes:

- 4401: refused: a missing, bad or expired token or ticket (unknown, used, expired) at
  connect, or the user's sessions were revoked (reason "revoked": the account was
  deleted, signed out everywhere, or its password changed);
- 1013: the ticket store (NATS) did not answer at connect: try again with a new ticket;
- 4440: the token expired while the socket was open (it lives no longer than its token):
  refresh, and reconnect with the new token and since=<the last seq received>, which the
  reason repeats ("token expired; refresh and reconnect with since=<seq>");
- 4400: bad query;
- 4408: too slow (a send waited longer than `ws_send_timeout_s`, or more than
  `ws_queue_size` events were waiting): reconnect with since=<the last seq>, in the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from fastapi import APIRouter, WebSocket, WebSocketDisconnect, status
from nats.js.errors import APIError
from pydantic import BaseModel, Field

from contracts.jobs import JobKind
from gateway.deps import CurrentUser, Hub, Settings, Tickets, Verifier
from gateway.events import Delivered, EventHub, Subscription, continue_trace
from gateway.problems import DEPENDENCY_FAULTS
from gateway.security import Caller, InvalidToken, TokenVerifier
from gateway.tickets import InvalidTicket, WsTickets
from terra.errors import TerraError

log = logging.getLogger(__name__)
router = APIRouter()

CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_SLOW = 4408
CLOSE_TOKEN_EXPIRED = 4440
CLOSE_TRY_AGAIN_LATER = 1013  # the ticket store did not answer: nothing was refused
REPLAY_PAGE = 500

# A domain's socket is named as its REST prefix (`/api/generate`: `/ws/generate`).
_PATH_NAMES = {JobKind.GENERATION: "generate"}
DOMAINS: dict[str, str | None] = {
    "/ws": None,
    **{f"/ws/{_PATH_NAMES.get(kind, kind.value)}": kind.value for kind in JobKind},
}


class WsTicket(BaseModel):
    ticket: str = Field(description="Connect with `/ws?ticket=<ticket>` (any `/ws/...` "
                        "path, any gateway replica). Opens one socket, once.",
                        examples=["Zq1v6l2x…"])
    expires_in: int = Field(description="Seconds the ticket waits for its use.",
                            examples=[30])


@router.post("/api/ws/ticket", status_code=status.HTTP_201_CREATED, response_model=WsTicket,
             tags=["websockets"])
async def ws_ticket(caller: CurrentUser, tickets: Tickets) -> WsTicket:
    """A single-use ticket that authenticates one WebSocket in place of the access token,
    so no token goes in a URL. The socket belongs to this token's session: it closes with
    4440 when the token expires and 4401 when the session is revoked."""
    ticket = await tickets.issue(caller)
    return WsTicket(ticket=ticket, expires_in=int(tickets.ttl_s))


def _token(websocket: WebSocket) -> str | None:
    if token := websocket.query_params.get("token"):
        return token
    scheme, _, credentials = websocket.headers.get("authorization", "").partition(" ")
    return credentials if scheme.lower() == "bearer" and credentials else None


def _since(websocket: WebSocket) -> int | None:
    raw = websocket.query_params.get("since")
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise ValueError("since must be a non-negative integer stream sequence")
    return int(raw)


class TooSlow(TerraError):
    """The client did not read a frame within the send timeout."""


class EventStreamSession:
    """One socket: replay what was missed, then forward live events, answer pings."""

    def __init__(self, websocket: WebSocket, hub: EventHub, sub: Subscription, *,
                 send_timeout_s: float) -> None:
        self.websocket = websocket
        self.hub = hub
        self.sub = sub
        self.last_sent = 0
        self.send_timeout_s = send_timeout_s

    async def send_text(self, text: str) -> None:
        """One frame, or `TooSlow`: a client that stops reading fills the server's buffer,
        and then a send waits for it forever."""
        try:
            await asyncio.wait_for(self.websocket.send_text(text), self.send_timeout_s)
        except TimeoutError:
            raise TooSlow from None

    async def send(self, event: Delivered) -> None:
        if event.seq <= self.last_sent:
            return  # already sent by the replay
        with continue_trace(event):
            await self.send_text(event.frame())
        self.last_sent = event.seq

    async def replay(self, since: int) -> int:
        hub = self.hub
        up_to = await hub.last_sequence()
        self.last_sent = since
        replayed = 0
        while True:
            page = await hub.replay(self.sub.user_id, self.sub.domain, self.last_sent, up_to,
                                    REPLAY_PAGE)
            for event in page:
                await self.send(event)
            replayed += len(page)
            if len(page) < REPLAY_PAGE:
                return replayed

    async def forward_live(self) -> None:
        while True:
            event = await self.sub.queue.get()
            if self.sub.overflowed:
                raise TooSlow
            await self.send(event)

    async def answer_client(self) -> None:
        while True:
            text = await self.websocket.receive_text()
            with contextlib.suppress(ValueError, AttributeError):
                if json.loads(text).get("type") == "ping":
                    await self.send_text('{"type":"pong"}')

    async def until_revoked(self) -> None:
        await self.sub.ended.wait()

    async def until_expired(self, expires_at: float) -> None:
        """Until the token that opened the socket expires (the gateway's clock, as every
        REST request's check)."""
        await asyncio.sleep(max(0.0, expires_at - time.time()))

    async def close(self, code: int, reason: str) -> None:
        """Bounded like a send: a client that does not read does not get it either (the
        server then drops the connection, see `gateway.server`)."""
        with contextlib.suppress(TimeoutError, RuntimeError, WebSocketDisconnect):
            await asyncio.wait_for(self.websocket.close(code, reason), self.send_timeout_s)


async def _caller(websocket: WebSocket, verifier: TokenVerifier,
                  tickets: WsTickets | None) -> Caller:
    """Who opens the socket: a ticket's session (checked against revocations as a token
    is), or the token's caller."""
    if "ticket" in websocket.query_params:
        if tickets is None:
            raise InvalidTicket("tickets are not available on this gateway")
        caller = await tickets.redeem(websocket.query_params["ticket"])
        await verifier.check_session(caller)
        return caller
    return await verifier.verify(_token(websocket))


async def serve(websocket: WebSocket, domain: str | None, *, verifier: TokenVerifier,
                hub: EventHub, send_timeout_s: float, tickets: WsTickets | None = None) -> None:
    await websocket.accept()
    try:
        caller = await _caller(websocket, verifier, tickets)
    except (InvalidToken, InvalidTicket) as exc:
        await websocket.close(CLOSE_UNAUTHORIZED, str(exc))
        return
    except (*DEPENDENCY_FAULTS, APIError):
        log.warning("could not authenticate a WebSocket", exc_info=True)
        await websocket.close(CLOSE_TRY_AGAIN_LATER, "try again shortly")
        return
    if caller.expires_at <= time.time():  # accepted within the signature check's leeway
        await websocket.close(CLOSE_UNAUTHORIZED, "the access token has expired")
        return
    try:
        since = _since(websocket)
    except ValueError as exc:
        await websocket.close(CLOSE_BAD_REQUEST, str(exc))
        return

    # Subscribe before reading the stream's last sequence: every later event reaches the
    # queue, every earlier one the replay; the session drops what both delivered.
    sub = hub.subscribe(caller.user_id, domain, issued_at=caller.issued_at)
    session = EventStreamSession(websocket, hub, sub, send_timeout_s=send_timeout_s)
    if not verifier.still_valid(caller):  # revoked while we were verifying
        hub.unsubscribe(sub)
        await session.close(CLOSE_UNAUTHORIZED, "revoked")
        return
    try:
        replayed = await session.replay(since) if since is not None else 0
        await session.send_text(
            json.dumps({"type": "ready", "last_seq": session.last_sent, "replayed": replayed})
        )
        expiry = asyncio.create_task(session.until_expired(caller.expires_at))
        tasks = [asyncio.create_task(session.forward_live()),
                 asyncio.create_task(session.answer_client()),
                 asyncio.create_task(session.until_revoked()),
                 expiry]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
        for task in done:
            if (exc := task.exception()) is not None:
                raise exc
        if sub.ended.is_set():
            await session.close(CLOSE_UNAUTHORIZED, "revoked")
        elif expiry in done:
            # Not 4401: nothing was refused. What was queued and not sent is replayed to
            # the reconnect from `since`.
            await session.close(CLOSE_TOKEN_EXPIRED, "token expired; refresh and reconnect "
                                                     f"with since={session.last_sent}")
    except WebSocketDisconnect:
        pass
    except TooSlow:
        # Nothing more is queued for it and its buffered events go now, before the close
        # (which may itself wait the send timeout on a client that reads nothing).
        hub.unsubscribe(sub)
        sub.discard()
        log.info("socket too slow; closed", extra={"user_id": caller.user_id,
                                                    "last_seq": session.last_sent})
        await session.close(CLOSE_TOO_SLOW, f"too slow; reconnect with since={session.last_sent}")
    finally:
        hub.unsubscribe(sub)


def _endpoint(domain: str | None):
    async def endpoint(websocket: WebSocket, verifier: Verifier, hub: Hub,
                       settings: Settings, tickets: Tickets) -> None:
        await serve(websocket, domain, verifier=verifier, hub=hub,
                    send_timeout_s=settings.ws_send_timeout_s, tickets=tickets)

    return endpoint


for _path, _domain in DOMAINS.items():
    router.add_api_websocket_route(_path, _endpoint(_domain), name=f"events{_path.replace('/', '_')}")
