"""Idempotent provisioning of the contracts' streams, consumers and KV buckets.

A second run changes nothing. An existing definition that differs from the contract is
reported with every differing field and never silently replaced: changing a stream's
retention or a consumer's filter under running services loses or duplicates work.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from nats.aio.client import Client as NatsClient
from nats.js import api
from nats.js.errors import APIError, NotFoundError

from contracts import topology
from contracts.topology import ConsumerSpec, KvSpec, StreamSpec
from terra.errors import ConfigurationError, ProvisioningConflict
from terra.events import is_broker_fault
from terra.retry import retry_while

log = logging.getLogger(__name__)

# Consumer settings NATS changes in place without losing a message or a position: a
# contract that changes one of these updates an existing consumer instead of conflicting.
EDITABLE_CONSUMER_FIELDS = frozenset({"ack_wait", "max_deliver", "backoff", "max_ack_pending"})


@dataclass
class ProvisioningReport:
    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)

def stream_config(spec: StreamSpec, replicas: int) -> api.StreamConfig:
    return api.StreamConfig(
        name=spec.name,
        description=spec.description,
        subjects=list(spec.subjects),
        retention=api.RetentionPolicy(spec.retention.value),
        max_age=spec.max_age_s,
        duplicate_window=spec.duplicate_window_s,
        storage=api.StorageType.FILE,
        num_replicas=replicas,
        max_msg_size=spec.max_msg_size,
        discard=api.DiscardPolicy.OLD,
    )

def consumer_config(spec: ConsumerSpec) -> api.ConsumerConfig:
    return api.ConsumerConfig(
        durable_name=spec.durable,
        name=spec.durable,
        description=spec.description,
        filter_subject=spec.filter_subject,
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=spec.ack_wait_s,
        max_deliver=spec.max_deliver,
        backoff=list(spec.backoff_s) or None,
        max_ack_pending=spec.max_ack_pending,
        deliver_policy=api.DeliverPolicy.ALL,
    )

def kv_config(spec: KvSpec, replicas: int) -> api.KeyValueConfig:
    return api.KeyValueConfig(
        bucket=spec.bucket,
        description=spec.description,
        history=spec.history,
        ttl=spec.ttl_s,
        replicas=replicas,
        storage=api.StorageType.FILE,
    )

def _same(want: object, have: object) -> bool:
    if isinstance(want, float) or isinstance(have, float):
        return math.isclose(float(want or 0), float(have or 0), rel_tol=1e-6, abs_tol=1e-3)
    if isinstance(want, list | tuple) or isinstance(have, list | tuple):
        return list(want or []) == list(have or [])
    return want == have

def _differences(kind: str, name: str, wanted: dict, existing: object) -> list[str]:
    diffs = []
    for key, want in wanted.items():
        have = getattr(existing, key, None)
        if not _same(want, have):
            diffs.append(f"{kind} {name}: {key} is {have!r}, the contract says {want!r}")
    return diffs

async def ensure_stream(js, spec: StreamSpec, replicas: int, report: ProvisioningReport) -> None:
    config = stream_config(spec, replicas)
    try:
        info = await js.stream_info(spec.name)
    except NotFoundError:
        await js.add_stream(config)
        report.created.append(f"stream {spec.name}")
        return
    wanted = {
        "subjects": config.subjects,
        "retention": config.retention,
        "max_age": config.max_age,
        "duplicate_window": config.duplicate_window,
        "storage": config.storage,
        "num_replicas": config.num_replicas,
        "max_msg_size": config.max_msg_size,
    }
    diffs = _differences("stream", spec.name, wanted, info.config)
    if diffs:
        raise ProvisioningConflict("\n".join(diffs))
    report.unchanged.append(f"stream {spec.name}")

async def ensure_consumer(js, spec: ConsumerSpec, report: ProvisioningReport) -> None:
    config = consumer_config(spec)
    try:
        info = await js.consumer_info(spec.stream, spec.durable)
    except NotFoundError:
        await js.add_consumer(spec.stream, config)
        report.created.append(f"consumer {spec.stream}/{spec.durable}")
        return
    wanted = {
        "filter_subject": config.filter_subject,
        "ack_policy": config.ack_policy,
        "ack_wait": config.ack_wait,
        "max_deliver": config.max_deliver,
        "backoff": config.backoff or [],
        "max_ack_pending": config.max_ack_pending,
    }
    name = f"{spec.stream}/{spec.durable}"
    changed = {key for key, want in wanted.items() if not _same(want, getattr(info.config, key, None))}
    if changed and changed <= EDITABLE_CONSUMER_FIELDS:
        await js.add_consumer(spec.stream, config)  # create-or-update: an in-place edit
        report.updated.append(f"consumer {name}: {', '.join(sorted(changed))}")
        return
    diffs = _differences("consumer", name, wanted, info.config)
    if diffs:
        raise ProvisioningConflict("\n".join(diffs))
    report.unchanged.append(f"consumer {name}")

async def ensure_kv(js, spec: KvSpec, replicas: int, report: ProvisioningReport) -> None:
    stream_name = f"KV_{spec.bucket}"
    try:
        info = await js.stream_info(stream_name)
    except NotFoundError:
        await js.create_key_value(kv_config(spec, replicas))
        report.created.append(f"kv {spec.bucket}")
        return
    wanted = {
        "max_msgs_per_subject": spec.history,
        "max_age": spec.ttl_s or 0.0,
        "num_replicas": replicas,
    }
    diffs = _differences("kv bucket", spec.bucket, wanted, info.config)
    if diffs:
        raise ProvisioningConflict("\n".join(diffs))
    report.unchanged.append(f"kv {spec.bucket}")

# A cluster that has just formed may not place replicas yet: its meta leader has not heard
# every peer's stats ("no suitable peers for placement, peer offline"). A leader change
# answers 503, a timeout or no responders. All pass; a wrong request does not.
_NO_SUITABLE_PEERS = 10005


def is_transient(error: BaseException) -> bool:
    return is_broker_fault(error) or (isinstance(error, APIError)
                                      and error.err_code == _NO_SUITABLE_PEERS)


async def patiently(step: Callable[[], Awaitable[None]], wait_s: float,
                    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    """Run one ensure step again while the cluster answers with a transient fault, up to
    `wait_s`. Each step reads before it writes, so a create whose answer was lost is
    found, and verified, on the next try."""
    await retry_while(step, is_transient, wait_s=wait_s, first_pause_s=0.1, max_pause_s=2.0,
                      what="provisioning waits for the cluster", sleep=sleep)


async def provision(
    nc: NatsClient,
    *,
    replicas: int = 1,
    streams: Iterable[StreamSpec] = topology.STREAMS,
    consumers: Iterable[ConsumerSpec] = (),
    kv_buckets: Iterable[KvSpec] = topology.KV_BUCKETS,
    wait_s: float = 30.0,
) -> ProvisioningReport:
    """Create what is missing; verify what exists. Streams come before their consumers.
    A transient cluster fault is waited out, step by step, for up to `wait_s`."""
    js = nc.jetstream()
    report = ProvisioningReport()
    for stream in streams:
        await patiently(lambda s=stream: ensure_stream(js, s, replicas, report), wait_s)
    for bucket in kv_buckets:
        await patiently(lambda b=bucket: ensure_kv(js, b, replicas, report), wait_s)
    for consumer in consumers:
        await patiently(lambda c=consumer: ensure_consumer(js, c, report), wait_s)
    if report.created or report.updated:
        log.info("provisioned", extra={"provisioned": report.created, "updated": report.updated})
    return report

async def verify_identity(nc: NatsClient, identity: str) -> list[str]:
    """What `identity` opens (its streams, buckets and consumers in the permission
    matrix) that does not exist; it reads with INFO only, which is all it may do."""
    from contracts.permissions import identities

    me = identities()[identity]
    js = nc.jetstream()
    missing = await verify(nc, me.streams)
    for bucket in me.buckets:
        try:
            await js.stream_info(f"KV_{bucket.bucket}")
        except NotFoundError:
            missing.append(f"kv bucket {bucket.bucket}")
    for consumer in me.pulls:
        try:
            await js.consumer_info(consumer.stream, consumer.durable)
        except NotFoundError:
            missing.append(f"consumer {consumer.stream}/{consumer.durable}")
    return missing


async def require_provisioned(nc: NatsClient, identity: str) -> None:
    """Refuse to start an identity whose streams, buckets or consumers are missing:
    creating them is `terra provision`'s (the operator's), never a service's."""
    missing = await verify_identity(nc, identity)
    if missing:
        raise ConfigurationError(
            f"{identity}: not provisioned: {', '.join(missing)}; run `terra provision` "
            "with the operator's credential")


async def verify(nc: NatsClient, streams: Iterable[StreamSpec] = topology.STREAMS) -> list[str]:
    """What is missing, for readiness checks; provisions nothing."""
    js = nc.jetstream()
    missing = []
    for stream in streams:
        try:
            await js.stream_info(stream.name)
        except NotFoundError:
            missing.append(f"stream {stream.name}")
    return missing
