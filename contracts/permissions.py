"""Who may reach what on NATS: each identity's account and exactly what it imports, written
once next to the topology.

Inside one NATS account JetStream is no boundary: it answers an API request on whatever
reply subject the caller names, and a consumer delivers to whatever subject its creator
chose, neither checked against the caller's permissions. So the accounts are the
boundary. Every stream, consumer and bucket lives in one JetStream account (`TERRA`),
where only the operator signs in. Each other identity (a service, the gateway) is a user
of an account of its own, which imports from `TERRA`, subject by subject, what its code
uses, and nothing else:

- the JetStream API calls it makes, under `IMPORTED_API` (`nc.jetstream(prefix=…)`):
  STREAM.INFO of the streams and buckets it reads, STREAM.MSG.GET to read them,
  CONSUMER.INFO and CONSUMER.MSG.NEXT of its own durables (the fetch answered by several
  messages: `streamed`), and for dead letters STREAM.MSG.DELETE of its command stream;
- `$JS.ACK.<stream>.<durable>.>` of its durables (acks, naks, in-progress);
- `$KV.<bucket>.<keys>` of what it writes (KV writes are plain publishes), the commands it
  sends and the events it publishes;
- as streams (messages in, never out): its durables' max-deliveries advisories, and the
  republished copy of what it must follow live (the gateway: every event, revocations);
- the auth requests, which auth_service's account exports to the gateway's alone.

No identity but the operator may create, change or delete a consumer anywhere: that one
right would let it rewrite every consumer of the stream and deliver, as `TERRA`, to any
subject `TERRA` listens on. An API reply lands only in the requester's own account, on
subjects it may publish to anyway. Inside its account each identity's user may also only
publish what it imports and subscribe to its own inbox and stream imports.

`terra.nats.accounts` renders the server's `accounts` block from this; the leaked-key suite
(`tests/integration/test_leaked_keys.py`) tries every identity's key against the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from contracts import topology as t
from contracts.topology import AuthRpc, ConsumerSpec, KvSpec, NotifierRpc, StreamSpec

API = "$JS.API"
JETSTREAM_ACCOUNT = "TERRA"  # the server keeps data under the account's name: never rename
IMPORTED_API = "JS.TERRA.API"  # JetStream's API as the other accounts import it
OPERATOR = "operator"  # the `nats` CLI and `terra provision`/`terra status`: all of TERRA
SYSTEM = "system"  # the operator's server-level commands (`nats server ...`), in SYS
SYSTEM_ACCOUNT = "SYS"
# How long a streamed answer (a pull's messages) may keep coming back: above any fetch's
# expiry (`TERRA_FETCH_TIMEOUT_S` is at most a minute).
STREAMED_RESPONSE_THRESHOLD = "2m"


def inbox_prefix(identity: str) -> str:
    """Where an identity's replies arrive (`nats.connect(inbox_prefix=...)`)."""
    return f"_INBOX_{identity}"


def account_of(identity: str) -> str:
    """The account an identity's users sign in to."""
    if identity == OPERATOR:
        return JETSTREAM_ACCOUNT
    if identity == SYSTEM:
        return SYSTEM_ACCOUNT
    return identity.upper()


def api_prefix(identity: str) -> str:
    """The JetStream API prefix for `nc.jetstream(prefix=…)`: an account without
    JetStream answers `$JS.API.>` itself (503), so imports use a prefix of their own."""
    return API if account_of(identity) == JETSTREAM_ACCOUNT else IMPORTED_API


@dataclass(frozen=True)
class Import:
    """One subject an identity's account takes from another account."""

    subject: str  # as the exporting account knows it
    local: str  # as the identity uses it (the API lives under `IMPORTED_API`)
    kind: Literal["service", "stream"] = "service"  # stream: messages come in, never go out
    source: str = JETSTREAM_ACCOUNT
    streamed: bool = False  # a service that answers one request with several messages


def api(call: str, *, streamed: bool = False) -> Import:
    return Import(f"{API}.{call}", f"{IMPORTED_API}.{call}", streamed=streamed)


def publishes(subject: str) -> Import:
    return Import(subject, subject)


def receives(subject: str) -> Import:
    return Import(subject, subject, kind="stream")


def advisory_subject(spec: ConsumerSpec) -> str:
    return f"{t.MAX_DELIVERIES_ADVISORY}.{spec.stream}.{spec.durable}"


@dataclass
class Identity:
    name: str
    imports: list[Import] = field(default_factory=list)
    # Requests it answers in a queue group (auth_service): exported to `answers_to` only.
    answers: list[str] = field(default_factory=list)
    answers_to: list[str] = field(default_factory=list)
    queue_group: str | None = None
    # What it opens, and so verifies at start (`terra.nats.provisioning.verify_identity`).
    streams: list[StreamSpec] = field(default_factory=list)
    buckets: list[KvSpec] = field(default_factory=list)
    pulls: list[ConsumerSpec] = field(default_factory=list)

    @property
    def account(self) -> str:
        return account_of(self.name)

    def add(self, *imports: Import) -> Identity:
        self.imports += [i for i in imports if i not in self.imports]
        return self

    def uses(self, *, streams: tuple[StreamSpec, ...] = (), buckets: tuple[KvSpec, ...] = (),
             pulls: tuple[ConsumerSpec, ...] = ()) -> Identity:
        """Open (and verify at start) these streams and buckets; pull these consumers."""
        self.streams += [s for s in streams if s not in self.streams]
        self.buckets += [b for b in buckets if b not in self.buckets]
        self.pulls += [p for p in pulls if p not in self.pulls]
        for stream in streams:
            self.add(api(f"STREAM.INFO.{stream.name}"))
        for bucket in buckets:  # nats-py reads a bucket's config, then its keys by MSG.GET
            self.add(api(f"STREAM.INFO.{bucket.stream}"), api(f"STREAM.MSG.GET.{bucket.stream}"))
        for spec in pulls:
            self.add(api(f"CONSUMER.INFO.{spec.stream}.{spec.durable}"),
                     api(f"CONSUMER.MSG.NEXT.{spec.stream}.{spec.durable}", streamed=True),
                     publishes(f"$JS.ACK.{spec.stream}.{spec.durable}.>"))
        return self

    def writes(self, *buckets: KvSpec, keys: str = ">") -> Identity:
        """Put, create, update, delete and purge under `keys` (KV writes are publishes)."""
        return self.add(*(publishes(f"$KV.{bucket.bucket}.{keys}") for bucket in buckets))

    def handles_dead_letters(self, spec: ConsumerSpec) -> Identity:
        """Hear that a command ran out of deliveries, read it and remove it."""
        return self.add(receives(advisory_subject(spec)),
                        api(f"STREAM.MSG.GET.{spec.stream}"),
                        api(f"STREAM.MSG.DELETE.{spec.stream}"))

    def follows(self, spec: StreamSpec | KvSpec) -> Identity:
        """Every message the stream stores, live (its republished copy), and a missed one
        read by sequence."""
        assert spec.republish_to, f"{spec} republishes nothing"
        stream = spec.stream if isinstance(spec, KvSpec) else spec.name
        return self.add(receives(spec.republish_to), api(f"STREAM.INFO.{stream}"),
                        api(f"STREAM.MSG.GET.{stream}"))

    @property
    def allowed(self) -> tuple[list[str], list[str]]:
        """The publish and subscribe allow-lists of its users inside its own account."""
        publish = [i.local for i in self.imports if i.kind == "service"]
        subscribe = [f"{inbox_prefix(self.name)}.>",
                     *(i.local for i in self.imports if i.kind == "stream"),
                     *(f"{subject} {self.queue_group}" for subject in self.answers)]
        return list(dict.fromkeys(publish)), list(dict.fromkeys(subscribe))


def _job_service(name: str, domain: str, work: ConsumerSpec, *others: ConsumerSpec,
                 buckets: tuple[KvSpec, ...] = ()) -> Identity:
    """A job service: its consumers, dead letters, events, its own kind of jobs, the
    deleted accounts' marks."""
    jobs = t.JOBS_KVS[domain]
    identity = Identity(name).uses(
        streams=(t.COMMAND_STREAMS[domain], t.EVENTS),
        buckets=(jobs, t.DELETED_ACCOUNTS_KV, *buckets),
        pulls=(work, *others))
    identity.handles_dead_letters(work)
    identity.add(publishes(t.events_of_anyone(domain)))
    return identity.writes(jobs)


def identities() -> dict[str, Identity]:
    gateway = Identity(t.GATEWAY).uses(
        streams=(*t.COMMAND_STREAMS.values(), t.EVENTS),
        buckets=(*t.JOBS_KVS.values(), t.MODELS_KV, t.IMAGES_KV, t.QUEUE_SLOTS_KV,
                 t.WORKERS_KV, t.REVOCATIONS_KV, t.RATE_LIMITS_KV, t.WS_TICKETS_KV))
    gateway.add(
        # It sends every command, and asks auth_service.
        *(publishes(t.command_subject(domain, ">")) for domain in t.COMMAND_STREAMS),
        *(Import(rpc.value, rpc.value, source=account_of(t.AUTH)) for rpc in AuthRpc),
        *(Import(rpc.value, rpc.value, source=account_of(t.NOTIFIER)) for rpc in NotifierRpc),
        # Admission announces the jobs it accepts (one `queued` each).
        publishes(t.events_of_anyone("training", "queued")),
        publishes(t.events_of_anyone("generation", "queued")))
    # Its event fan-out and the revocation list: followed live, without a consumer.
    gateway.follows(t.EVENTS).follows(t.REVOCATIONS_KV)
    # What it owns (its rate limits, WebSocket tickets), and the writes the design allows it elsewhere.
    gateway.writes(*(kv for kv in t.KV_BUCKETS if t.GATEWAY in kv.owners
                     or any(who == t.GATEWAY for who, _ in kv.exceptions)))

    auth = Identity(t.AUTH, answers=[rpc.value for rpc in AuthRpc], answers_to=[t.GATEWAY],
                    queue_group=t.AUTH_QUEUE_GROUP)
    own = tuple(kv for kv in t.KV_BUCKETS if t.AUTH in kv.owners and kv is not t.WORKERS_KV)
    auth.uses(streams=(t.EVENTS,), buckets=own).writes(*own)
    auth.add(publishes(t.events_of_anyone("account")))

    prompt = _job_service(t.PROMPT, "prompt", t.PROMPT_WORKERS,
                          t.account_cleanup_consumer("prompt"))
    trainer = _job_service(t.TRAINER, "training", t.TRAINING_WORKERS, t.TRAINING_CONTROL,
                           t.TRAINING_RECORDS, t.account_cleanup_consumer("trainer"),
                           buckets=(t.MODELS_KV,))
    trainer.writes(t.MODELS_KV)
    generator = _job_service(t.GENERATOR, "generation", t.GENERATION_WORKERS,
                             t.GENERATION_CONTROL, t.GENERATION_RECORDS,
                             t.GENERATOR_MODEL_DELETIONS, t.account_cleanup_consumer("generator"),
                             buckets=(t.MODELS_KV, t.IMAGES_KV, t.QUEUE_SLOTS_KV))
    generator.writes(t.IMAGES_KV, t.QUEUE_SLOTS_KV)
    notifier = Identity(t.NOTIFIER, answers=[rpc.value for rpc in NotifierRpc],
                        answers_to=[t.GATEWAY], queue_group=t.NOTIFIER_QUEUE_GROUP)
    notifier.uses(streams=(t.EVENTS, t.NOTIFIER_DELIVERIES),
                  buckets=(*t.NOTIFIER_KVS, t.DELETED_ACCOUNTS_KV),
                  pulls=(t.NOTIFIER_EVENTS, t.NOTIFIER_SENDS, t.NOTIFIER_RECEIPTS,
                         t.account_cleanup_consumer("notifier")))
    notifier.writes(*t.NOTIFIER_KVS)
    notifier.add(
        # Its own work (a delivery, a receipt check), published and, at an account's
        # erasure, purged by subject; nothing else of any stream.
        publishes(f"{t.PREFIX}.notifier.>"),
        api(f"STREAM.PURGE.{t.NOTIFIER_DELIVERIES.name}"))
    for service in (auth, prompt, trainer, generator, notifier):  # each says it is alive
        service.uses(buckets=(t.WORKERS_KV,)).writes(t.WORKERS_KV, keys=f"{service.name}.>")
    return {i.name: i for i in (gateway, auth, prompt, trainer, generator, notifier)}


SERVICE_IDENTITIES: tuple[str, ...] = (t.GATEWAY, t.AUTH, t.PROMPT, t.TRAINER, t.GENERATOR,
                                       t.NOTIFIER)
ALL_IDENTITIES: tuple[str, ...] = (*SERVICE_IDENTITIES, OPERATOR, SYSTEM)
