"""The WebSocket protocol between the gateway and client apps: its frames and close codes.

The gateway's `/ws` sockets (`gateway/ws.py`) send an event frame per event of the user
(the event itself is `payload`, one of `contracts.registry.EVENTS`) and control frames
without `seq`; clients may send `ping`. `python -m contracts.export` writes them as an
AsyncAPI document (`schemas/websocket.asyncapi.json`)."""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Each socket path and the event domain it carries (None: every domain).
SOCKET_PATHS: dict[str, str | None] = {
    "/ws": None, "/ws/prompt": "prompt", "/ws/training": "training",
    "/ws/generate": "generation",
}


class Frame(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EventFrame(Frame):
    """One event of yours, in stream order."""

    seq: int = Field(ge=1, description="The event's stream sequence: reconnect with "
                     "`since=<the last seq you saw>` to miss nothing.", examples=[2])
    type: str = Field(description="The event's type, as in `payload.type`.",
                      examples=["generation.started.v1"])
    job_id: str | None = Field(description="The job it is about, if any.",
                               examples=["0f3c9a7e5b2d4c1a8e6f9d0b7a2c4e1f"])
    domain: str = Field(description="The domain it belongs to (`prompt`, `training`, "
                        "`generation`, `account`).", examples=["generation"])
    payload: dict[str, Any] = Field(description="The event itself (its JSON Schema is "
                                    "named by `type`).")


class ReadyFrame(Frame):
    """The replay asked with `since=` is done; live events follow."""

    type: Literal["ready"] = Field(description="Always `ready`.")
    last_seq: int = Field(ge=0, description="The last event sequence sent (the `since` "
                          "asked, when nothing was replayed).", examples=[2])
    replayed: int = Field(ge=0, description="How many events the replay sent.",
                          examples=[1])


class PongFrame(Frame):
    """The answer to a client's `ping`."""

    type: Literal["pong"] = Field(description="Always `pong`.")


class PingFrame(Frame):
    """A client's keep-alive; answered with `pong`."""

    type: Literal["ping"] = Field(description="Always `ping`.")


class CloseCode(IntEnum):
    """Why the gateway closes a socket (the close reason says more)."""

    BAD_REQUEST = 4400  # a bad query, e.g. since=x: fix the URL
    UNAUTHORIZED = 4401  # a missing, bad, expired or revoked token, or a bad ticket
    TOO_SLOW = 4408  # the client fell behind: reconnect with since=<last seq>
    TOKEN_EXPIRED = 4440  # the token expired while open: refresh, reconnect with since=
    TRY_AGAIN_LATER = 1013  # the ticket could not be checked right now


CLOSE_CODE_MEANINGS: dict[CloseCode, str] = {
    CloseCode.BAD_REQUEST: "A bad query (e.g. `since=x`): fix the URL.",
    CloseCode.UNAUTHORIZED: "A missing, bad, expired or revoked token, or an unknown, used or "
    "expired ticket; reason `revoked` when the account was deleted or signed out "
    "everywhere: sign in again.",
    CloseCode.TOO_SLOW: "Too slow: the client fell behind; reconnect with "
    "`since=<last seq>` (the reason repeats it).",
    CloseCode.TOKEN_EXPIRED: "The access token expired while the socket was open: refresh "
    "it and reconnect with `since=<last seq>` (the reason repeats it).",
    CloseCode.TRY_AGAIN_LATER: "The ticket could not be checked right now: try again "
    "shortly.",
}
