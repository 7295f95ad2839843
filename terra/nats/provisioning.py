"""Idempotent provisioning of the contracts' streams, consumers and KV buckets.

A second run changes nothing. An existing definition that differs from the contract is
reported with every differing field and never silently replaced: changing a stream's
retention or a consumer's filter under running services loses or duplicates work. Fields
the server changes in place without losing a message (a consumer's limits, a stream's
republishing, whether a bucket accepts rollups) are brought to the contract.

Services verify at start what they open, a durable's whole configuration included
(`require_provisioned`): they may read a definition, never change it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from nats.aio.client import Client as NatsClient
from nats.js import api
from nats.js.errors import (
    APIError,
    BucketNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)

from contracts import topology
from contracts.jobs import JobState
from contracts.topology import ConsumerSpec, KvSpec, StreamSpec
from terra.backoff import retry_while
from terra.errors import ConfigurationError, ProvisioningConflict
from terra.nats.faults import is_broker_fault
from terra.nats.listings import live_entries

log = logging.getLogger(__name__)

# Consumer settings NATS changes in place without losing a message or a position: a
# contract that changes one of these updates an existing consumer instead of conflicting.
EDITABLE_CONSUMER_FIELDS = frozenset({"ack_wait", "max_deliver", "backoff", "max_ack_pending"})
EDITABLE_STREAM_FIELDS = frozenset({"republish", "allow_rollup_hdrs", "max_msgs_per_subject"})


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
        republish=republish(spec.subjects[0], spec.republish_to),
    )


def republish(source: str, to: str | None) -> api.RePublish | None:
    return api.RePublish(src=source, dest=to) if to else None

def consumer_config(spec: ConsumerSpec) -> api.ConsumerConfig:
    return api.ConsumerConfig(
        durable_name=spec.durable,
        name=spec.durable,
        description=spec.description,
        # One subject as `filter_subject`; several as `filter_subjects` (never both).
        filter_subject=None if spec.more_subjects else spec.filter_subject,
        filter_subjects=list(spec.subjects) if spec.more_subjects else None,
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=spec.ack_wait_s,
        max_deliver=spec.max_deliver,
        backoff=list(spec.backoff_s) or None,
        max_ack_pending=spec.max_ack_pending,
        deliver_policy=api.DeliverPolicy.ALL,
    )

def consumer_fields(spec: ConsumerSpec) -> dict[str, object]:
    """Everything that makes a durable what the contract says: a consumer that differs in
    any of these (another filter, a push delivery, an expiry) is not ours."""
    config = consumer_config(spec)
    return {
        "durable_name": config.durable_name,
        "filter_subject": config.filter_subject,
        "ack_policy": config.ack_policy,
        "ack_wait": config.ack_wait,
        "max_deliver": config.max_deliver,
        "backoff": config.backoff or [],
        "max_ack_pending": config.max_ack_pending,
        "deliver_policy": config.deliver_policy,
        "deliver_subject": None,
        "deliver_group": None,
        "inactive_threshold": None,
        "filter_subjects": config.filter_subjects,
    }


def consumer_differences(spec: ConsumerSpec, existing: api.ConsumerConfig) -> dict[str, str]:
    """Field -> how the existing durable differs from the contract."""
    found = {}
    for key, want in consumer_fields(spec).items():
        have = getattr(existing, key, None)
        if want is None and not have:
            continue  # unset, however the server spells it
        if not _same(want, have):
            found[key] = f"{key} is {have!r}, the contract says {want!r}"
    return found


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
    await _edit_in_place(js, f"stream {spec.name}", info.config,
                         {"republish": config.republish}, report)

async def ensure_consumer(js, spec: ConsumerSpec, report: ProvisioningReport) -> None:
    config = consumer_config(spec)
    try:
        info = await js.consumer_info(spec.stream, spec.durable)
    except NotFoundError:
        await js.add_consumer(spec.stream, config)
        report.created.append(f"consumer {spec.stream}/{spec.durable}")
        return
    name = f"{spec.stream}/{spec.durable}"
    diffs = consumer_differences(spec, info.config)
    if diffs and set(diffs) <= EDITABLE_CONSUMER_FIELDS:
        await js.add_consumer(spec.stream, config)  # create-or-update: an in-place edit
        report.updated.append(f"consumer {name}: {', '.join(sorted(diffs))}")
        return
    if diffs:
        raise ProvisioningConflict("\n".join(f"consumer {name}: {diff}"
                                             for diff in diffs.values()))
    report.unchanged.append(f"consumer {name}")

async def ensure_kv(js, spec: KvSpec, replicas: int, report: ProvisioningReport) -> None:
    try:
        info = await js.stream_info(spec.stream)
    except NotFoundError:
        await js.create_key_value(kv_config(spec, replicas))
        report.created.append(f"kv {spec.bucket}")
        info = await js.stream_info(spec.stream)
    wanted = {
        "max_age": spec.ttl_s or 0.0,
        "num_replicas": replicas,
    }
    diffs = _differences("kv bucket", spec.bucket, wanted, info.config)
    if diffs:
        raise ProvisioningConflict("\n".join(diffs))
    await _edit_in_place(js, f"kv {spec.bucket}", info.config, {
        # Fewer messages per key: the server drops the older ones, which nothing reads.
        "max_msgs_per_subject": spec.history,
        "allow_rollup_hdrs": spec.rollups,
        "republish": republish(spec.subject_filter, spec.republish_to)}, report)


async def _edit_in_place(js, name: str, existing: api.StreamConfig, wanted: dict,
                         report: ProvisioningReport) -> None:
    """Bring the fields the server edits in place to the contract (`EDITABLE_STREAM_FIELDS`)."""
    assert set(wanted) <= EDITABLE_STREAM_FIELDS
    changed = {key: value for key, value in wanted.items()
               if _comparable(getattr(existing, key, None)) != _comparable(value)}
    if not changed:
        if name not in report.created:
            report.unchanged.append(name)
        return
    await js.update_stream(existing.evolve(**changed))
    if name not in report.created:
        report.updated.append(f"{name}: {', '.join(sorted(changed))}")


def _comparable(value: object) -> object:
    """A field as the contract means it: a republish by what it does, an unset flag as
    false (the server echoes unset fields differently)."""
    if isinstance(value, api.RePublish):
        return (value.src, value.dest, bool(value.headers_only))
    return bool(value) if value is None or isinstance(value, bool) else value

async def move_legacy_jobs(js, report: ProvisioningReport) -> None:
    """Jobs recorded before each kind had a bucket of its own (`terra_jobs`, which every
    job service could write): each goes to its kind's bucket (one already there is kept),
    then the old bucket goes, or an erasure would never reach what it holds."""
    try:
        legacy = await js.key_value(topology.LEGACY_JOBS_BUCKET)
    except BucketNotFoundError:
        return
    targets = {kind: await js.key_value(spec.bucket) for kind, spec in topology.JOBS_KVS.items()}
    moved = 0
    for key, entry in (await live_entries(legacy)).items():
        try:
            kind = JobState.model_validate_json(entry.value).kind
        except ValueError:
            log.warning("unreadable legacy job record dropped", extra={"key": key})
            continue
        try:
            await targets[kind.value].create(key, entry.value)
            moved += 1
        except KeyWrongLastSequenceError:
            pass  # moved by an earlier run that stopped before removing the bucket
    await js.delete_key_value(topology.LEGACY_JOBS_BUCKET)
    report.updated.append(f"kv {topology.LEGACY_JOBS_BUCKET}: {moved} job records moved to "
                          "the bucket of their kind; the old bucket removed")


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
    await patiently(lambda: move_legacy_jobs(js, report), wait_s)
    if report.created or report.updated:
        log.info("provisioned", extra={"provisioned": report.created, "updated": report.updated})
    return report

async def verify_identity(nc: NatsClient, identity: str) -> list[str]:
    """What `identity` opens (its streams, buckets and consumers in the permission
    matrix) that does not exist, or, for its durables, differs in any field from the
    contract; it reads with INFO only, which is all it may do."""
    from contracts.permissions import identities
    from terra.nats.connection import jetstream

    me = identities()[identity]
    js = jetstream(nc, identity)
    missing = await verify(nc, me.streams, js=js)
    for bucket in me.buckets:
        try:
            await js.stream_info(bucket.stream)
        except NotFoundError:
            missing.append(f"kv bucket {bucket.bucket}")
    for consumer in me.pulls:
        name = f"consumer {consumer.stream}/{consumer.durable}"
        try:
            info = await js.consumer_info(consumer.stream, consumer.durable)
        except NotFoundError:
            missing.append(name)
            continue
        missing += [f"{name}: {diff}" for diff in
                    consumer_differences(consumer, info.config).values()]
    return missing


async def require_provisioned(nc: NatsClient, identity: str) -> None:
    """Refuse to start an identity whose streams, buckets or consumers are missing:
    creating them is `terra provision`'s (the operator's), never a service's."""
    missing = await verify_identity(nc, identity)
    if missing:
        raise ConfigurationError(
            f"{identity}: not provisioned as the contract says: {'; '.join(missing)}; run "
            "`terra provision` with the operator's credential")


async def verify(nc: NatsClient, streams: Iterable[StreamSpec] = topology.STREAMS, *,
                 js=None) -> list[str]:
    """What is missing, for readiness checks; provisions nothing."""
    js = js or nc.jetstream()
    missing = []
    for stream in streams:
        try:
            await js.stream_info(stream.name)
        except NotFoundError:
            missing.append(f"stream {stream.name}")
    return missing
