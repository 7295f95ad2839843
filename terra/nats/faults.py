"""What nats-py raises when the broker, not our code, is the problem: the errors a caller
waits out (a leader election, a reconnect) and the wider set a call into NATS can raise."""

from __future__ import annotations

import nats.errors
import nats.js.errors

# What nats-py raises while a stream or consumer has no leader, while the client
# reconnects, or when a pull request is answered with a temporary status.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServerError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.errors.SlowConsumerError,
)

# Everything a call into NATS raises when the broker, not our code, is the problem
# (every nats-py error derives from nats.errors.Error; a lost socket is an OSError).
BROKER_ERRORS: tuple[type[BaseException], ...] = (nats.errors.Error, TimeoutError, OSError)

# What a publish raises while it cannot be stored right now: no ack in time (either
# timeout type), or any broker fault `terra.runtime.worker` waits out.
RETRYABLE_PUBLISH_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *TRANSIENT_ERRORS)


def is_broker_fault(error: BaseException) -> bool:
    """A fault that passes: a timeout, a leader election, a reconnect."""
    return isinstance(error, RETRYABLE_PUBLISH_ERRORS)
