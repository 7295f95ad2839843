"""terra/ops/services.py is the one list of services: what `terra up` starts and `terra
status` reports on. It must name every service package, each once, and cover every job."""

from __future__ import annotations

import importlib
from pathlib import Path

from contracts.jobs import JobKind
from terra.ops.services import SERVICES, named
from terra.ops.status import WORK_QUEUES

ROOT = Path(__file__).resolve().parents[2]


def test_every_service_package_is_listed_once_and_the_gateway_starts_last():
    packages = {path.parent.name for path in ROOT.glob("*_service/__init__.py")} | {"gateway"}
    modules = [service.module for service in SERVICES]
    assert sorted(modules) == sorted(packages)
    assert len({service.name for service in SERVICES}) == len(SERVICES)
    assert SERVICES[-1].module == "gateway"  # it starts once its backends listen


def test_every_job_kind_has_exactly_one_service_and_a_work_queue():
    worked = [kind for service in SERVICES for kind in service.works]
    assert sorted(worked) == sorted(JobKind)
    for service in SERVICES:
        assert bool(service.works) == bool(service.queues), service.name
    assert len(WORK_QUEUES) == len({queue.durable for queue in WORK_QUEUES}) == len(JobKind)


def test_each_service_has_the_settings_module_the_config_page_reads():
    for service in SERVICES:
        assert importlib.util.find_spec(service.config_module) is not None, service.name


def test_a_service_is_found_by_its_name():
    assert named("trainer").module == "trainer_service"
    assert named("nope") is None
