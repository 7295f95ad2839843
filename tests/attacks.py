"""An attacker holding one leaked NATS key: what they try, and the check that nothing
happened.

`attempts(identity)` lists, for one identity, every way its key could reach beyond what
its code uses, each as a message to send:

- consumers: create one on any stream (delivering onto auth's requests, another
  identity's inbox, a durable's advisory, a KV key), create, update or delete any durable
  by name, through the imported API prefix and the raw `$JS.API`;
- replies: every API call it may make, with the answer aimed at every subject outside its
  own rights (every bucket's keys, every domain's events and commands, auth's requests,
  other inboxes, advisories);
- publishes: every command, event and KV key outside its rights, a `Nats-Rollup: all`
  on every bucket it writes that others write too;
- streams: purge, delete, update, delete a message, on every stream;
- reads (`reads(identity)`): every bucket and stream it may not read.

`Snapshot.of(operator_js)` is every stream's configuration, last sequence and message
count, and every consumer's configuration: taken before and after the attempts, the two
must be equal (nothing was written, purged, created, changed or deleted). Writes an
identity is allowed (its own events, its own keys) are not attempted: they are its room.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import nats
from nats.aio.client import Client as NatsClient

from contracts import topology as t
from contracts.permissions import (
    API,
    IMPORTED_API,
    SERVICE_IDENTITIES,
    advisory_subject,
    identities,
    inbox_prefix,
)
from terra.runtime.worker import subject_matches

VICTIM = "victim0000000000000000000000000001"
VICTIM_JOB = "victimjob00000000000000000000000001"

STREAM_NAMES = (*(s.name for s in t.STREAMS), *(kv.stream for kv in t.KV_BUCKETS))
DURABLES = t.CONSUMERS


@dataclass(frozen=True)
class Attempt:
    what: str
    subject: str
    data: bytes = b""
    reply: str | None = None
    headers: dict[str, str] | None = None


def may_publish(identity: str, subject: str) -> bool:
    """Whether `subject` is within the identity's own rights (a service import of its
    account): such a write is its room, not an attack."""
    return any(subject_matches(subject, i.local) for i in identities()[identity].imports
               if i.kind == "service")


def victim_subjects() -> list[str]:
    """Every subject an attacker would like to write: each bucket's keys of a victim,
    every domain's events and commands, auth's requests, inboxes, advisories, the API."""
    keys = (VICTIM, f"{VICTIM}.{VICTIM_JOB}", f"user.{VICTIM}", f"active.{VICTIM}",
            f"generation.{VICTIM}", f"{t.GENERATOR}.w1")
    subjects = [f"$KV.{kv.bucket}.{key}" for kv in t.KV_BUCKETS for key in keys]
    domains = ("prompt", "training", "generation", "account")
    names = ("completed", "failed", "deleted", "queued", "model_deleted", "cancelled")
    subjects += [t.event_subject(d, n, VICTIM) for d in domains for n in names]
    verbs = ("optimize", "start", "generate", "cancel", "delete_model", "delete_image")
    subjects += [t.command_subject(d, v) for d in domains[:3] for v in verbs]
    subjects += [rpc.value for rpc in t.AuthRpc]
    subjects += [f"{inbox_prefix(name)}.attack" for name in SERVICE_IDENTITIES]
    subjects += [advisory_subject(spec) for spec in DURABLES]
    subjects += [f"{t.LIVE_PREFIX}.evt.generation.completed.{VICTIM}",
                 f"{t.LIVE_PREFIX}.revocations.user.{VICTIM}"]
    for prefix in (API, IMPORTED_API):
        subjects += [f"{prefix}.CONSUMER.MSG.NEXT.{s.stream}.{s.durable}" for s in DURABLES]
        subjects += [f"{prefix}.STREAM.PURGE.{name}" for name in STREAM_NAMES]
    return subjects


def _consumer_attempts() -> list[Attempt]:
    found = []
    deliver_to = [(t.AuthRpc.DELETE_ACCOUNT.value, t.AUTH_QUEUE_GROUP),
                  (f"{inbox_prefix(t.GATEWAY)}.stolen", None),
                  (advisory_subject(t.GENERATION_WORKERS), t.GENERATOR),
                  (f"$KV.{t.USERS_KV.bucket}.{VICTIM}", None)]
    for prefix in (IMPORTED_API, API):
        for stream in STREAM_NAMES:
            for deliver, group in deliver_to:
                config = {"deliver_subject": deliver, "ack_policy": "none",
                          "deliver_policy": "all"}
                if group:
                    config["deliver_group"] = group
                found.append(Attempt(f"consumer on {stream} delivering to {deliver}",
                                     f"{prefix}.CONSUMER.CREATE.{stream}",
                                     json.dumps({"stream_name": stream,
                                                 "config": config}).encode()))
        for spec in DURABLES:
            changed = {"durable_name": spec.durable, "name": spec.durable,
                       "ack_policy": "explicit", "filter_subject": "terra.evt.nothing.*.*",
                       "inactive_threshold": 1_000_000_000}
            body = json.dumps({"stream_name": spec.stream, "config": changed}).encode()
            name = f"{spec.stream}.{spec.durable}"
            found += [
                Attempt(f"rewrite durable {name}", f"{prefix}.CONSUMER.CREATE.{name}", body),
                Attempt(f"rewrite durable {name} (legacy API)",
                        f"{prefix}.CONSUMER.DURABLE.CREATE.{name}", body),
                Attempt(f"rewrite durable {name} (unnamed)",
                        f"{prefix}.CONSUMER.CREATE.{spec.stream}", body),
                Attempt(f"delete durable {name}", f"{prefix}.CONSUMER.DELETE.{name}"),
                Attempt(f"reset durable {name}", f"{prefix}.CONSUMER.RESET.{name}"),
            ]
    return found


def _stream_attempts() -> list[Attempt]:
    found = []
    for prefix in (IMPORTED_API, API):
        for stream in STREAM_NAMES:
            found += [
                Attempt(f"purge {stream}", f"{prefix}.STREAM.PURGE.{stream}", b"{}"),
                Attempt(f"delete {stream}", f"{prefix}.STREAM.DELETE.{stream}"),
                Attempt(f"update {stream}", f"{prefix}.STREAM.UPDATE.{stream}",
                        json.dumps({"name": stream, "subjects": ["attack.>"]}).encode()),
                Attempt(f"delete a message of {stream}", f"{prefix}.STREAM.MSG.DELETE.{stream}",
                        b'{"seq": 1}'),
            ]
    return found


def attempts(identity: str) -> list[Attempt]:
    """Everything the identity's key is tried for, outside its own rights."""
    me = identities()[identity]
    found = _consumer_attempts()
    found += [a for a in _stream_attempts() if not may_publish(identity, a.subject)]
    # Reply subjects: each API call it may make, answered onto another's subject.
    calls = [i.local for i in me.imports if i.local.startswith(IMPORTED_API)]
    calls += [f"{API}.STREAM.INFO.{name}" for name in STREAM_NAMES]
    targets = [s for s in victim_subjects() if not may_publish(identity, s)]
    for call in calls:
        body = b'{"batch": 1, "no_wait": true}' if ".MSG.NEXT." in call else b""
        found += [Attempt(f"{call} answered onto {target}", call, body, reply=target)
                  for target in targets]
    # Plain publishes of what is not its own.
    found += [Attempt(f"publish {target}", target, json.dumps({
        "type": "auth.delete_account.v1", "user_id": VICTIM}).encode()) for target in targets]
    # A rollup on a bucket it writes beside others wipes theirs too: refused.
    for kv in t.KV_BUCKETS:
        subject = f"$KV.{kv.bucket}.{identity}.rollup"
        if not kv.rollups and may_publish(identity, subject):
            found.append(Attempt(f"rollup of {kv.bucket}", subject, b"",
                                 headers={"Nats-Rollup": "all"}))
    return found


def reads(identity: str) -> list[Attempt]:
    """Reads of every bucket and stream the identity may not read."""
    found = []
    for name in STREAM_NAMES:
        for prefix in (IMPORTED_API, API):
            for call, body in (("STREAM.MSG.GET", b'{"seq": 1}'),
                               ("DIRECT.GET", b'{"seq": 1}'), ("STREAM.INFO", b"")):
                subject = f"{prefix}.{call}.{name}"
                if not may_publish(identity, subject):
                    found.append(Attempt(f"read {name} by {call}", subject, body))
    return found


async def send(nc: NatsClient, batch: list[Attempt]) -> None:
    """Every attempt, fire and forget (a refused publish is only an error on the
    connection); then a flush, so the server has handled them all."""
    for attempt in batch:
        await nc.publish(attempt.subject, attempt.data, reply=attempt.reply or "",
                         headers=attempt.headers)
    await nc.flush(timeout=10)


async def answers(nc: NatsClient, batch: list[Attempt], timeout_s: float = 0.5) -> dict:
    """What came back for each read (the attempts run concurrently)."""

    async def one(attempt: Attempt) -> tuple[str, bytes | str]:
        try:
            reply = await nc.request(attempt.subject, attempt.data, timeout=timeout_s)
        except (nats.errors.Error, TimeoutError) as exc:
            return attempt.what, type(exc).__name__
        return attempt.what, reply.data

    return dict(await asyncio.gather(*(one(a) for a in batch)))


def leaked(answer: bytes | str) -> bool:
    """An answer that carries data (a message, a stream's state), not a refusal."""
    if not isinstance(answer, bytes) or not answer:
        return False
    try:
        body = json.loads(answer)
    except ValueError:
        return True  # a raw message body
    return "error" not in body


@dataclass
class Snapshot:
    streams: dict[str, dict] = field(default_factory=dict)

    @classmethod
    async def of(cls, js) -> Snapshot:
        """As the operator sees it: every stream and consumer of the JetStream account."""
        snapshot = cls()
        for info in await js.streams_info():
            name = info.config.name
            consumers = {c.name: _stable(c.config.as_dict())
                         for c in await js.consumers_info(name)}
            snapshot.streams[name] = {
                "config": _stable(info.config.as_dict()), "last_seq": info.state.last_seq,
                "messages": info.state.messages, "consumers": consumers}
        return snapshot

    def differences(self, after: Snapshot) -> list[str]:
        found = []
        for name in sorted(set(self.streams) | set(after.streams)):
            was, now = self.streams.get(name), after.streams.get(name)
            if was != now:
                found.append(f"{name}: {_changed(was, now)}")
        return found


def _stable(config: dict) -> dict:
    return {k: v for k, v in config.items() if v not in (None, [], {})}


def _changed(was: dict | None, now: dict | None) -> str:
    if was is None or now is None:
        return f"{'created' if was is None else 'gone'}"
    return ", ".join(f"{key}: {was.get(key)!r} -> {now.get(key)!r}"
                     for key in was if was.get(key) != now.get(key))
