"""The services `terra up` starts (in this order) and `terra status` reports on: one entry
each, so a new service is one line here. Services are named as data (the module that
`python -m` runs), never imported: `terra/` knows no service's code.
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts import topology
from contracts.jobs import JobKind
from contracts.topology import ConsumerSpec


@dataclass(frozen=True)
class Service:
    name: str  # `terra run <name>`, and its prefix in `terra up`'s output
    module: str  # what `python -m` runs; its settings class is in `<module>.config`
    works: tuple[JobKind, ...] = ()  # the job kinds its workers take (none: no jobs)
    queues: tuple[ConsumerSpec, ...] = ()  # its work queues, whose depth `terra status` shows

    @property
    def config_module(self) -> str:
        return f"{self.module}.config"


# The gateway last: it starts once its backends listen.
SERVICES: tuple[Service, ...] = (
    Service("auth", "auth_service"),
    Service("prompt", "prompt_service", works=(JobKind.PROMPT,),
            queues=(topology.PROMPT_WORKERS,)),
    Service("trainer", "trainer_service", works=(JobKind.TRAINING,),
            queues=(topology.TRAINING_WORKERS,)),
    Service("generator", "generator_service", works=(JobKind.GENERATION,),
            queues=(topology.GENERATION_WORKERS,)),
    Service("notifier", "notifier_service"),
    Service("gateway", "gateway"),
)


def named(name: str) -> Service | None:
    return next((service for service in SERVICES if service.name == name), None)
