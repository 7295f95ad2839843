"""The services `terra up` starts (in this order) and `terra status` reports on: one entry
each, so a new service is one line here. Services are named as data (the module that
`python -m` runs), never imported: `terra/` knows no service's code.
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts.jobs import JobKind


@dataclass(frozen=True)
class Service:
    name: str  # `terra run <name>`, and its prefix in `terra up`'s output
    module: str  # what `python -m` runs; its settings class is in `<module>.config`
    works: tuple[JobKind, ...] = ()  # the job kinds its workers take (none: no jobs)

    @property
    def config_module(self) -> str:
        return f"{self.module}.config"


# The gateway last: it starts once its backends listen.
SERVICES: tuple[Service, ...] = (
    Service("auth", "auth_service"),
    Service("prompt", "prompt_service", works=(JobKind.PROMPT,)),
    Service("trainer", "trainer_service", works=(JobKind.TRAINING,)),
    Service("generator", "generator_service", works=(JobKind.GENERATION,)),
    Service("gateway", "gateway"),
)


def named(name: str) -> Service | None:
    return next((service for service in SERVICES if service.name == name), None)
