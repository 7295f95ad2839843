"""WebSocket tickets: a short-lived, single-use stand-in for the access token in `/ws?ticket=`.

A browser cannot set headers on a WebSocket, and a token in a URL ends up in proxies'
logs and browser history. So a client asks `POST /api/ws/ticket` (with its bearer token)
and connects with the ticket instead. A ticket is not a token: it opens one socket, once,
within `ws_ticket_ttl_s`, for the session of the token that asked for it (its user, its
`iat` and `exp`), so a revocation or the token's expiry still close that socket.

Tickets live in KV `terra_ws_tickets` (the gateway's), so any replica redeems one issued
by another. The key is the ticket's SHA-256, never the ticket. Redeeming is a delete
checked against the revision read: of two concurrent uses, one deletes and the other's
delete is refused by the server, so one socket opens.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from contracts.topology import WS_TICKETS_KV, ws_ticket_key
from gateway.security import Caller
from terra.errors import TerraError
from terra.records.store import write_checked

_MAX_TICKET_CHARS = 128


class InvalidTicket(TerraError):
    """Unknown, already used or expired."""


def _key(ticket: str) -> str:
    return ws_ticket_key(hashlib.sha256(ticket.encode()).hexdigest())


class WsTickets:
    def __init__(self, kv: KeyValue, ttl_s: float, *,
                 clock: Callable[[], float] = time.time) -> None:
        self._kv = kv
        self.ttl_s = ttl_s
        self._clock = clock

    @classmethod
    async def open(cls, js: JetStreamContext, ttl_s: float) -> WsTickets:
        return cls(await js.key_value(WS_TICKETS_KV.bucket), ttl_s)

    async def issue(self, caller: Caller) -> str:
        """A new ticket for the caller's session."""
        ticket = secrets.token_urlsafe(32)
        record = {"user_id": caller.user_id, "email": caller.email,
                  "token_id": caller.token_id, "issued_at": caller.issued_at,
                  "token_expires_at": caller.expires_at,
                  "expires_at": self._clock() + self.ttl_s}
        await self._kv.create(_key(ticket), json.dumps(record).encode())
        return ticket

    async def redeem(self, ticket: str | None) -> Caller:
        """The session the ticket was issued for; the ticket is spent. `InvalidTicket`
        when it is unknown, was used, or has expired."""
        if not ticket or len(ticket) > _MAX_TICKET_CHARS:
            raise InvalidTicket("the ticket is not valid")
        key = _key(ticket)
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:  # never issued, used (a delete marker), or forgotten
            raise InvalidTicket("the ticket is not valid (unknown, used or expired)") from None
        if entry.value is None:
            raise InvalidTicket("the ticket is not valid (unknown, used or expired)")
        if not await write_checked(self._kv, key, None, entry.revision):  # spent meanwhile
            raise InvalidTicket("the ticket has already been used")
        record = json.loads(entry.value)
        if record["expires_at"] <= self._clock():
            raise InvalidTicket("the ticket has expired")
        return Caller(user_id=record["user_id"], email=record.get("email"),
                      token_id=record.get("token_id"), issued_at=record["issued_at"],
                      expires_at=record["token_expires_at"])
