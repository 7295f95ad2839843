"""Provisioning waits out what a cluster answers while it forms or changes leaders, and
nothing else."""

from __future__ import annotations

import nats.errors
import pytest
from nats.js.errors import BadRequestError, ServiceUnavailableError

from terra.nats.provisioning import patiently

NO_PEERS = BadRequestError(code=400, err_code=10005,
                           description="no suitable peers for placement, peer offline")


class Step:
    """Fails with `errors` in order, then succeeds; counts its tries."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.tries = 0

    async def __call__(self) -> None:
        self.tries += 1
        if self.errors:
            raise self.errors.pop(0)


async def no_sleep(_: float) -> None:
    return None


@pytest.mark.parametrize("fault", [
    NO_PEERS, ServiceUnavailableError(code=503, err_code=10008),
    nats.errors.TimeoutError(), nats.errors.NoRespondersError(),
], ids=["no suitable peers", "503", "timeout", "no responders"])
async def test_a_transient_fault_is_tried_again(fault):
    step = Step(fault, fault)
    await patiently(step, wait_s=30, sleep=no_sleep)
    assert step.tries == 3


async def test_a_wrong_request_fails_at_once():
    wrong = BadRequestError(code=400, err_code=10052, description="replicas > 1 not supported")
    step = Step(wrong)
    with pytest.raises(BadRequestError):
        await patiently(step, wait_s=30, sleep=no_sleep)
    assert step.tries == 1


async def test_a_cluster_that_never_places_fails_after_the_wait():
    step = Step(*[NO_PEERS] * 1000)
    with pytest.raises(BadRequestError):
        await patiently(step, wait_s=0.0, sleep=no_sleep)
    assert step.tries == 1
