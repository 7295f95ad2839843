"""Request/reply with a service over NATS: the one way the gateway asks auth_service and
notifier_service, and what it answers when nobody does (a 503 with `Retry-After`)."""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

from faststream.nats import NatsBroker
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from pydantic import TypeAdapter

from contracts.base import Message
from gateway.problems import Problem
from terra.runtime.logs import correlation_id

log = logging.getLogger(__name__)

RETRY_AFTER_S = 2  # a service restarting or electing answers again within seconds


class ServiceClient:
    """Asks one service; a subclass turns that service's failure replies into problems."""

    # For the log and the 503's detail.
    service = "a service"
    unavailable = "A service is not answering; try again shortly."

    def __init__(self, broker: NatsBroker, timeout_s: float) -> None:
        self._broker = broker
        self._timeout_s = timeout_s

    async def _ask(self, subject: str, request: Message, reply_type: Any) -> Any:
        """Send `request` under this request's correlation id; the reply, validated as
        `reply_type` (success or failure). No answer in time, or no one listening: 503."""
        if cid := correlation_id.get():
            request = request.model_copy(update={"correlation_id": cid})
        try:
            response = await self._broker.request(
                request.model_dump_json().encode(),
                subject,
                correlation_id=request.correlation_id,
                timeout=self._timeout_s,
            )
        except (NatsTimeout, NoRespondersError, TimeoutError) as exc:
            log.warning("%s did not answer", self.service, extra={"subject": subject})
            raise Problem(503, "unavailable", self.unavailable,
                          headers={"Retry-After": str(RETRY_AFTER_S)}) from exc
        return _adapter(reply_type).validate_json(response.body)


@cache
def _adapter(reply_type: Any) -> TypeAdapter:
    return TypeAdapter(reply_type)  # built once per reply type, not once per request
