"""Who may do what on NATS: the permission matrix, written once next to the topology.

Each identity (a service, the gateway, the operator) connects with its own NKEY and gets
exactly the publish and subscribe subjects its code uses, all derived from
`contracts.topology`: its own commands and events, the JetStream API subjects of its own
streams, consumers and KV buckets, its own reply inbox. `terra.nats_auth` renders the
server's `accounts` block from this; a test checks every identity's whole path works and
what it must not do is refused.

Subjects for JetStream operations (verified against nats-server 2.15):
- a pull consumer: CONSUMER.INFO and CONSUMER.MSG.NEXT of that consumer, `$JS.ACK` of it;
- KV: STREAM.INFO of `KV_<bucket>` (open), STREAM.MSG.GET (get: any key of the bucket),
  `$KV.<bucket>.<key>` (put, create, update, delete: a write can be limited by key),
  an unnamed CONSUMER.CREATE, CONSUMER.INFO and `$JS.FC` (watch, list);
- replies come back on the identity's own inbox prefix, so nobody reads another's replies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from contracts import topology as t
from contracts.topology import AuthRpc, ConsumerSpec, KvSpec, StreamSpec

API = "$JS.API"
ACCOUNT = "TERRA"
OPERATOR = "operator"  # the `nats` CLI and `terra provision`/`terra status`: all of TERRA
SYSTEM = "system"  # the operator's server-level commands (`nats server ...`), in SYS


def inbox_prefix(identity: str) -> str:
    """Where an identity's replies arrive (`nats.connect(inbox_prefix=...)`)."""
    return f"_INBOX_{identity}"


def stream_info(name: str) -> list[str]:
    return [f"{API}.STREAM.INFO.{name}"]


def pull(spec: ConsumerSpec) -> list[str]:
    """Bind to a provisioned durable consumer, fetch, ack/nak/in_progress."""
    return [f"{API}.CONSUMER.INFO.{spec.stream}.{spec.durable}",
            f"{API}.CONSUMER.MSG.NEXT.{spec.stream}.{spec.durable}",
            f"$JS.ACK.{spec.stream}.{spec.durable}.>"]


def dead_letters(spec: ConsumerSpec) -> list[str]:
    """Read and remove a message whose deliveries ran out (`terra.worker`)."""
    return [f"{API}.STREAM.MSG.GET.{spec.stream}", f"{API}.STREAM.MSG.DELETE.{spec.stream}"]


def advisory(spec: ConsumerSpec, queue: str) -> str:
    return f"{t.MAX_DELIVERIES_ADVISORY}.{spec.stream}.{spec.durable} {queue}"


def kv_read(kv: KvSpec) -> list[str]:
    return [*stream_info(f"KV_{kv.bucket}"), f"{API}.STREAM.MSG.GET.KV_{kv.bucket}"]


def kv_watch(kv: KvSpec) -> list[str]:
    """watch/list: an ordered consumer on the bucket's stream, and its flow control."""
    stream = f"KV_{kv.bucket}"
    return [f"{API}.CONSUMER.CREATE.{stream}", f"{API}.CONSUMER.INFO.{stream}.*",
            f"{API}.CONSUMER.DELETE.{stream}.*", f"$JS.FC.{stream}.>"]


def kv_write(kv: KvSpec, keys: str = ">") -> list[str]:
    return [f"$KV.{kv.bucket}.{keys}"]


def events_of(domain: str) -> list[str]:
    return [t.events_of_anyone(domain)]


@dataclass
class Identity:
    name: str
    publish: list[str] = field(default_factory=list)
    subscribe: list[str] = field(default_factory=list)
    allow_responses: bool = False  # may answer requests (auth RPC) without publish rights
    # What it opens, and so verifies at start (`terra.provisioning.verify_identity`).
    streams: list[StreamSpec] = field(default_factory=list)
    buckets: list[KvSpec] = field(default_factory=list)
    pulls: list[ConsumerSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.subscribe.append(f"{inbox_prefix(self.name)}.>")

    def uses(self, *, streams: tuple[StreamSpec, ...] = (), buckets: tuple[KvSpec, ...] = (),
             pulls: tuple[ConsumerSpec, ...] = ()) -> Identity:
        """Open (and verify at start) these streams and buckets; pull these consumers."""
        self.streams += streams
        self.buckets += buckets
        self.pulls += pulls
        for stream in streams:
            self.publish += stream_info(stream.name)
        for bucket in buckets:
            self.publish += kv_read(bucket)
        for spec in pulls:
            self.publish += pull(spec)
        return self

    def writes(self, *buckets: KvSpec, keys: str = ">") -> Identity:
        for bucket in buckets:
            self.publish += kv_write(bucket, keys)
        return self

    @property
    def allowed(self) -> tuple[list[str], list[str]]:
        return list(dict.fromkeys(self.publish)), list(dict.fromkeys(self.subscribe))


def _worker(name: str, domain: str, work: ConsumerSpec, *others: ConsumerSpec,
            buckets: tuple[KvSpec, ...] = ()) -> Identity:
    """A job service: its consumers, dead letters, events, jobs, deleted accounts."""
    identity = Identity(name).uses(
        streams=(t.COMMAND_STREAMS[domain], t.EVENTS),
        buckets=(t.JOBS_KV, t.DELETED_ACCOUNTS_KV, *buckets),
        pulls=(work, *others))
    # Its jobs: read, written, and a user's listed (to erase a deleted account's).
    identity.publish += [*dead_letters(work), *events_of(domain), *kv_watch(t.JOBS_KV)]
    identity.subscribe.append(advisory(work, name))
    return identity.writes(t.JOBS_KV)


def identities() -> dict[str, Identity]:
    gateway = Identity(t.GATEWAY).uses(
        streams=t.STREAMS,
        buckets=(t.JOBS_KV, t.MODELS_KV, t.IMAGES_KV, t.QUEUE_SLOTS_KV, t.WORKERS_KV,
                 t.REVOCATIONS_KV, t.RATE_LIMITS_KV))
    gateway.publish += [
        # It sends every command, and asks auth_service.
        *(t.command_subject(domain, ">") for domain in t.COMMAND_STREAMS),
        *(rpc.value for rpc in AuthRpc),
        # Admission announces the jobs it accepts (one `queued` each).
        t.events_of_anyone("training", "queued"), t.events_of_anyone("generation", "queued"),
        # Its event fan-out (an ephemeral consumer on every event) and the replay by sequence.
        f"{API}.CONSUMER.CREATE.{t.EVENTS.name}", f"{API}.CONSUMER.DELETE.{t.EVENTS.name}.*",
        f"$JS.FC.{t.EVENTS.name}.>", f"{API}.STREAM.MSG.GET.{t.EVENTS.name}",
        # Listing a user's models and images, live workers, revocations.
        *kv_watch(t.MODELS_KV), *kv_watch(t.IMAGES_KV), *kv_watch(t.WORKERS_KV),
        *kv_watch(t.REVOCATIONS_KV),
    ]
    # What it owns (its rate limits), and the writes the design allows it elsewhere.
    gateway.writes(*(kv for kv in t.KV_BUCKETS if t.GATEWAY in kv.owners
                     or any(who == t.GATEWAY for who, _ in kv.exceptions)))

    auth = Identity(t.AUTH, allow_responses=True).uses(
        streams=(t.EVENTS,),
        buckets=tuple(kv for kv in t.KV_BUCKETS if t.AUTH in kv.owners))
    auth.writes(*(kv for kv in t.KV_BUCKETS if t.AUTH in kv.owners))
    auth.publish += [*events_of("account"), *kv_watch(t.REFRESH_TOKENS_KV)]
    # Only its queue group may receive requests (they carry passwords and tokens).
    auth.subscribe += [f"{rpc.value} {t.AUTH_QUEUE_GROUP}" for rpc in AuthRpc]

    prompt = _worker(t.PROMPT, "prompt", t.PROMPT_WORKERS, t.account_cleanup_consumer("prompt"))
    trainer = _worker(t.TRAINER, "training", t.TRAINING_WORKERS, t.TRAINING_CONTROL,
                      t.TRAINING_RECORDS, t.account_cleanup_consumer("trainer"),
                      buckets=(t.MODELS_KV,))
    trainer.writes(t.MODELS_KV).publish += kv_watch(t.MODELS_KV)
    generator = _worker(t.GENERATOR, "generation", t.GENERATION_WORKERS,
                        t.GENERATION_CONTROL, t.GENERATION_RECORDS,
                        t.GENERATOR_MODEL_DELETIONS, t.account_cleanup_consumer("generator"),
                        buckets=(t.MODELS_KV, t.IMAGES_KV, t.QUEUE_SLOTS_KV))
    generator.writes(t.IMAGES_KV, t.QUEUE_SLOTS_KV)
    generator.publish += [*kv_watch(t.MODELS_KV), *kv_watch(t.IMAGES_KV)]
    for service in (auth, prompt, trainer, generator):  # each says it is alive, as itself
        service.uses(buckets=(t.WORKERS_KV,)).writes(t.WORKERS_KV, keys=f"{service.name}.>")
    return {i.name: i for i in (gateway, auth, prompt, trainer, generator)}


SERVICE_IDENTITIES: tuple[str, ...] = (t.GATEWAY, t.AUTH, t.PROMPT, t.TRAINER, t.GENERATOR)
ALL_IDENTITIES: tuple[str, ...] = (*SERVICE_IDENTITIES, OPERATOR, SYSTEM)
