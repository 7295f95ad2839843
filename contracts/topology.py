"""The single definition of subjects, streams, consumers, KV buckets and object buckets.

No service writes a subject literal: they call the functions and read the specs here.
Specs are plain data; `terra.nats.provisioning` turns them into JetStream definitions.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from enum import StrEnum

from contracts.ids import checked_id

PREFIX = "terra"
DAY = 86_400.0


def command_subject(domain: str, verb: str) -> str:
    return f"{PREFIX}.cmd.{domain}.{verb}"


def event_subject(domain: str, name: str, user_id: str) -> str:
    """The subject of one user's event: `user_id` is checked, so no value can turn it into
    a wildcard or reach another user's subjects."""
    return f"{PREFIX}.evt.{domain}.{name}.{checked_id(user_id, 'user id')}"


def events_of_anyone(domain: str = "*", name: str = "*") -> str:
    """A pattern over every user's events (consumers, permissions), never from input."""
    return f"{PREFIX}.evt.{domain}.{name}.*"


def user_events_filter(user_id: str, domain: str | None = None) -> str:
    """Every event of one user, optionally of one domain: one filter replays a history."""
    return f"{PREFIX}.evt.{domain or '*'}.*.{checked_id(user_id, 'user id')}"


def event_owner(subject: str) -> str:
    """The user id an event subject ends in."""
    return subject.rsplit(".", 1)[-1]


def event_domain(subject: str) -> str:
    return subject.split(".")[2]


# Auth is request/reply over core NATS, answered by a queue group of auth_service replicas.
class AuthRpc(StrEnum):
    REGISTER = f"{PREFIX}.rpc.auth.register"
    LOGIN_PASSWORD = f"{PREFIX}.rpc.auth.login.password"
    LOGIN_GOOGLE = f"{PREFIX}.rpc.auth.login.google"
    REFRESH = f"{PREFIX}.rpc.auth.refresh"
    LOGOUT = f"{PREFIX}.rpc.auth.logout"
    GET_USER = f"{PREFIX}.rpc.auth.user.get"
    DELETE_ACCOUNT = f"{PREFIX}.rpc.auth.user.delete"
    CHANGE_PASSWORD = f"{PREFIX}.rpc.auth.password.change"
    SIGNING_KEYS = f"{PREFIX}.rpc.auth.keys"


AUTH_QUEUE_GROUP = "auth_service"


# Notifications are asked of notifier_service the same way, by the gateway alone.
class NotifierRpc(StrEnum):
    WEBPUSH_KEY = f"{PREFIX}.rpc.notifier.webpush.key"
    ADD_WEBPUSH = f"{PREFIX}.rpc.notifier.webpush.add"
    REMOVE_WEBPUSH = f"{PREFIX}.rpc.notifier.webpush.remove"
    ADD_DEVICE = f"{PREFIX}.rpc.notifier.device.add"
    REMOVE_DEVICE = f"{PREFIX}.rpc.notifier.device.remove"
    LIST_TARGETS = f"{PREFIX}.rpc.notifier.targets.list"
    SET_PREFERENCES = f"{PREFIX}.rpc.notifier.preferences.set"
    CREATE_WEBHOOK = f"{PREFIX}.rpc.notifier.webhook.create"
    LIST_WEBHOOKS = f"{PREFIX}.rpc.notifier.webhook.list"
    GET_WEBHOOK = f"{PREFIX}.rpc.notifier.webhook.get"
    UPDATE_WEBHOOK = f"{PREFIX}.rpc.notifier.webhook.update"
    DELETE_WEBHOOK = f"{PREFIX}.rpc.notifier.webhook.delete"
    ROTATE_WEBHOOK_SECRET = f"{PREFIX}.rpc.notifier.webhook.rotate"
    TEST_WEBHOOK = f"{PREFIX}.rpc.notifier.webhook.test"
    REDELIVER_WEBHOOK = f"{PREFIX}.rpc.notifier.webhook.redeliver"
    LIST_DELIVERIES = f"{PREFIX}.rpc.notifier.webhook.deliveries"


NOTIFIER_QUEUE_GROUP = "notifier_service"


class Retention(StrEnum):
    WORK_QUEUE = "workqueue"
    LIMITS = "limits"


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    retention: Retention
    max_age_s: float
    duplicate_window_s: float
    description: str
    max_msg_size: int = 1024 * 1024
    # Where the stream republishes every message it stores (its headers say its sequence):
    # processes that must see each one live subscribe there, with no consumer of their own.
    republish_to: str | None = None


@dataclass(frozen=True)
class ConsumerSpec:
    stream: str
    durable: str
    filter_subject: str
    ack_wait_s: float = 30.0
    max_deliver: int = 5
    # Server-side backoff would replace ack_wait as the redelivery timeout of a running job, so
    # it stays empty; handlers nak failed attempts with a delay (`terra.backoff`) instead.
    backoff_s: tuple[float, ...] = ()
    max_ack_pending: int = 1000
    description: str = ""
    # Further subjects beside `filter_subject` (a consumer of several kinds of events).
    more_subjects: tuple[str, ...] = ()

    @property
    def subjects(self) -> tuple[str, ...]:
        return (self.filter_subject, *self.more_subjects)


# The identities that hold credentials (and write state): the services by module name.
GATEWAY = "gateway"
AUTH = "auth_service"
PROMPT = "prompt_service"
TRAINER = "trainer_service"
GENERATOR = "generator_service"
NOTIFIER = "notifier_service"
JOB_SERVICES = (PROMPT, TRAINER, GENERATOR)


@dataclass(frozen=True)
class KvSpec:
    bucket: str
    description: str
    # Who writes it: its owner(s); others read it, or ask an owner with a command.
    owners: tuple[str, ...] = ()
    # Writes outside the owners that the design allows on purpose: (identity, why).
    exceptions: tuple[tuple[str, str], ...] = ()
    # Messages kept per key. A bucket with several writers keeps one (see `rollups`).
    history: int = 1
    ttl_s: float | None = None
    republish_to: str | None = None  # as `StreamSpec.republish_to`

    def __post_init__(self) -> None:
        if not self.rollups and self.history != 1:
            raise ValueError(f"{self.bucket}: a bucket several identities write keeps one "
                             "message per key (deletes must erase without a rollup)")

    @property
    def writers(self) -> tuple[str, ...]:
        return (*self.owners, *(who for who, _ in self.exceptions))

    @property
    def rollups(self) -> bool:
        """Whether the bucket accepts a `Nats-Rollup` header (what a KV purge sends). One
        such header with `all` wipes the whole bucket, so only a bucket one identity writes
        accepts it; the others keep one message per key, where a delete marker replaces
        the value and erases as well as a purge."""
        return len(set(self.writers)) <= 1

    @property
    def stream(self) -> str:
        return f"KV_{self.bucket}"

    @property
    def subject_filter(self) -> str:
        """Every subject of the bucket's stream."""
        return f"$KV.{self.bucket}.>"


# --- streams -----------------------------------------------------------------------------

PROMPT_COMMANDS = StreamSpec(
    name="TERRA_PROMPT_COMMANDS",
    subjects=(f"{PREFIX}.cmd.prompt.>",),
    retention=Retention.WORK_QUEUE,
    max_age_s=1 * DAY,
    duplicate_window_s=120.0,
    description="Prompt optimisation commands (work queue).",
)
TRAINING_COMMANDS = StreamSpec(
    name="TERRA_TRAINING_COMMANDS",
    subjects=(f"{PREFIX}.cmd.training.>",),
    retention=Retention.WORK_QUEUE,
    max_age_s=7 * DAY,
    duplicate_window_s=600.0,
    description="LoRA training commands (work queue).",
)
GENERATION_COMMANDS = StreamSpec(
    name="TERRA_GENERATION_COMMANDS",
    subjects=(f"{PREFIX}.cmd.generation.>",),
    retention=Retention.WORK_QUEUE,
    max_age_s=1 * DAY,
    duplicate_window_s=600.0,
    description="Image generation commands (work queue).",
)
# Copies of what a stream stores, republished by the stream's leader: the gateway follows
# these rather than creating consumers (a right that would let it rewrite any consumer).
LIVE_PREFIX = f"{PREFIX}.live"

EVENTS = StreamSpec(
    name="TERRA_EVENTS",
    subjects=(f"{PREFIX}.evt.>",),
    retention=Retention.LIMITS,
    max_age_s=7 * DAY,
    duplicate_window_s=120.0,
    description="Every domain event, kept for replay; subjects end in the user id.",
    republish_to=f"{LIVE_PREFIX}.evt.>",
)
# notifier_service's own work: one message per notice and target, retried on its own
# schedule (a nak with the next delay), so no event is ever re-queued to every target.
NOTIFIER_DELIVERIES = StreamSpec(
    name="TERRA_NOTIFIER_DELIVERIES",
    subjects=(f"{PREFIX}.notifier.>",),
    retention=Retention.WORK_QUEUE,
    max_age_s=3 * DAY,  # above the longest retry schedule (about 18 h by default)
    duplicate_window_s=3600.0,
    description="notifier_service's deliveries and Expo receipt checks (work queue); "
    "subjects end in the user id.",
)


def delivery_subject(user_id: str) -> str:
    return f"{PREFIX}.notifier.deliver.{checked_id(user_id, 'user id')}"


def receipts_subject(user_id: str) -> str:
    return f"{PREFIX}.notifier.receipts.{checked_id(user_id, 'user id')}"


def notifier_work_of(user_id: str) -> str:
    """Every delivery and receipt check of one user (erased with the account)."""
    return f"{PREFIX}.notifier.*.{checked_id(user_id, 'user id')}"


STREAMS: tuple[StreamSpec, ...] = (PROMPT_COMMANDS, TRAINING_COMMANDS, GENERATION_COMMANDS, EVENTS,
                                   NOTIFIER_DELIVERIES)
COMMAND_STREAMS: dict[str, StreamSpec] = {
    "prompt": PROMPT_COMMANDS,
    "training": TRAINING_COMMANDS,
    "generation": GENERATION_COMMANDS,
}

# --- consumers (durable, pull, explicit ack) -----------------------------------------------

PROMPT_WORKERS = ConsumerSpec(
    stream=PROMPT_COMMANDS.name,
    durable="prompt_workers",
    filter_subject=f"{PREFIX}.cmd.prompt.>",
    ack_wait_s=30.0,
    description="prompt_service replicas share this consumer.",
)
TRAINING_WORKERS = ConsumerSpec(
    stream=TRAINING_COMMANDS.name,
    durable="training_workers",
    filter_subject=command_subject("training", "start"),
    # Kept alive by in_progress() heartbeats while a job runs; a dead worker's job is
    # redelivered (and resumed from its checkpoint) this long after its last heartbeat.
    ack_wait_s=30.0,
    max_deliver=4,
    max_ack_pending=64,
    description="trainer_service replicas share this consumer.",
)
GENERATION_WORKERS = ConsumerSpec(
    stream=GENERATION_COMMANDS.name,
    durable="generation_workers",
    filter_subject=command_subject("generation", "generate"),
    ack_wait_s=30.0,  # a dead worker's held commands return this long after its heartbeats stop
    # Held commands are delivered again at every hand-off between workers; the attempts
    # that started work are counted on the job (`terra.jobs.lifecycle`), this is a backstop.
    max_deliver=20,
    max_ack_pending=256,
    description="generator_service replicas share this consumer.",
)



def control_consumer(domain: str) -> ConsumerSpec:
    """Cancels of long jobs have a consumer of their own: queued behind the very job they
    cancel, on the workers' consumer, they would arrive when it is over."""
    return ConsumerSpec(
        stream=COMMAND_STREAMS[domain].name,
        durable=f"{domain}_control",
        filter_subject=command_subject(domain, "cancel"),
        ack_wait_s=30.0,
        description=f"{domain} cancels, served by every replica.",
    )


TRAINING_CONTROL = control_consumer("training")
GENERATION_CONTROL = control_consumer("generation")


def records_consumer(domain: str, verb: str) -> ConsumerSpec:
    """Deletions the owner of a record carries out (models: trainer, images: generator),
    apart from the work so they never wait behind it."""
    return ConsumerSpec(
        stream=COMMAND_STREAMS[domain].name,
        durable=f"{domain}_records",
        filter_subject=command_subject(domain, verb),
        description=f"{domain} record deletions, served by every replica.",
    )


TRAINING_RECORDS = records_consumer("training", "delete_model")
GENERATION_RECORDS = records_consumer("generation", "delete_image")
# A deleted LoRA leaves every generator's adapter cache at once, not at eviction.
GENERATOR_MODEL_DELETIONS = ConsumerSpec(
    stream=EVENTS.name,
    durable="generator_model_deletions",
    filter_subject=events_of_anyone("training", "model_deleted"),
    description="generator_service drops deleted LoRAs from its caches.",
)


def account_cleanup_consumer(service: str) -> ConsumerSpec:
    """Each service that holds user data erases it when the account is deleted."""
    return ConsumerSpec(
        stream=EVENTS.name,
        durable=f"{service}_account_cleanup",
        filter_subject=events_of_anyone("account", "deleted"),
        ack_wait_s=120.0,
        max_deliver=10,
        description=f"{service} erases a deleted user's data.",
    )


# The endings people are notified of (`contracts.notifications.NotifyEvent`), and nothing
# else: progress events never reach the notifier.
NOTIFIER_EVENTS = ConsumerSpec(
    stream=EVENTS.name,
    durable="notifier_events",
    filter_subject=events_of_anyone("training", "completed"),
    more_subjects=(events_of_anyone("training", "failed"),
                   events_of_anyone("training", "cancelled"),
                   events_of_anyone("generation", "completed"),
                   events_of_anyone("generation", "failed"),
                   events_of_anyone("prompt", "optimized")),
    ack_wait_s=30.0,
    max_deliver=20,
    description="notifier_service turns endings into one delivery per target.",
)
NOTIFIER_SENDS = ConsumerSpec(
    stream=NOTIFIER_DELIVERIES.name,
    durable="notifier_deliveries",
    filter_subject=f"{PREFIX}.notifier.deliver.*",
    # Above the longest send (TERRA_NOTIFY_TIMEOUT_S is at most 15 s, cut off 2 s later)
    # and the wait for a slot: what a killed notifier held comes back this soon.
    ack_wait_s=25.0,
    # Attempts are counted on the delivery record, and a busy target's wait (a nak) is no
    # attempt: a bound here would drop a delivery queued behind a slow target. Unlimited.
    max_deliver=-1,
    # A delivery waiting for its retry (a nak with a delay, up to hours) counts as pending:
    # any bound here would stop every user's notifications once enough of them wait. The
    # notifier's own concurrency bounds the work in hand.
    max_ack_pending=-1,
    description="notifier_service sends each delivery, retrying on its schedule.",
)
NOTIFIER_RECEIPTS = ConsumerSpec(
    stream=NOTIFIER_DELIVERIES.name,
    durable="notifier_receipts",
    filter_subject=f"{PREFIX}.notifier.receipts.*",
    ack_wait_s=60.0,
    max_deliver=50,
    max_ack_pending=-1,  # each check waits its due time (15 min) as a delayed nak
    description="notifier_service reads Expo receipts once they are due.",
)

CONSUMERS: tuple[ConsumerSpec, ...] = (
    PROMPT_WORKERS,
    TRAINING_WORKERS,
    TRAINING_CONTROL,
    TRAINING_RECORDS,
    GENERATION_WORKERS,
    GENERATION_CONTROL,
    GENERATION_RECORDS,
    GENERATOR_MODEL_DELETIONS,
    account_cleanup_consumer("prompt"),
    account_cleanup_consumer("trainer"),
    account_cleanup_consumer("generator"),
    NOTIFIER_EVENTS,
    NOTIFIER_SENDS,
    NOTIFIER_RECEIPTS,
    account_cleanup_consumer("notifier"),
)

# Advisory the server publishes when a message exhausts max_deliver (no built-in DLQ).
MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"

# --- KV buckets ----------------------------------------------------------------------------

def _jobs_bucket(domain: str, owner: str, *, admitted_by_gateway: bool) -> KvSpec:
    """One bucket per job domain: each has one writing service (and the gateway's admission
    where it records the queued job), so no service can touch another domain's jobs."""
    exceptions = ((GATEWAY, ("admission: the queued record of a job it accepts, so the job "
                             "is visible (and cancellable) before a worker takes it")),)
    return KvSpec(
        bucket=f"terra_{domain}_jobs",
        description=f"{domain.capitalize()} job state under `<user_id>.<job_id>`, written by "
        f"{owner} with revision checks.",
        owners=(owner,),
        exceptions=exceptions if admitted_by_gateway else (),
        ttl_s=30 * DAY,
    )


PROMPT_JOBS_KV = _jobs_bucket("prompt", PROMPT, admitted_by_gateway=False)
TRAINING_JOBS_KV = _jobs_bucket("training", TRAINER, admitted_by_gateway=True)
GENERATION_JOBS_KV = _jobs_bucket("generation", GENERATOR, admitted_by_gateway=True)
JOBS_KVS: dict[str, KvSpec] = {
    "prompt": PROMPT_JOBS_KV,
    "training": TRAINING_JOBS_KV,
    "generation": GENERATION_JOBS_KV,
}
# Before each domain had its own bucket, every job was here; `terra provision` moves them.
LEGACY_JOBS_BUCKET = "terra_jobs"
USERS_KV = KvSpec(bucket="terra_users", description="Accounts by user id (auth_service).",
                  owners=(AUTH,))
CREDENTIALS_KV = KvSpec(
    bucket="terra_credentials",
    owners=(AUTH,),
    description="Credential indexes: email and Google subject -> user id (auth_service).",
)
REFRESH_TOKENS_KV = KvSpec(
    bucket="terra_refresh_tokens",
    owners=(AUTH,),
    description="Refresh tokens by hash, and token families (auth_service).",
    ttl_s=30 * DAY,
)
LOGIN_THROTTLE_KV = KvSpec(
    bucket="terra_login_throttle",
    owners=(AUTH,),
    description="Recent sign-in attempts (auth_service.throttle): `login.pair.<h>` per email "
    "and client network, `login.addr.<h>` per network, `login.email.<h>` per email; `<h>` "
    "is a keyed hash, never an email or address. The TTL bounds the login window.",
    ttl_s=15 * 60.0,
)
SIGNUP_THROTTLE_KV = KvSpec(
    bucket="terra_signup_throttle",
    owners=(AUTH,),
    description="Recent sign-ups per client network (auth_service.throttle): "
    "`signup.addr.<h>`, `<h>` a keyed hash. The TTL bounds the sign-up window.",
    ttl_s=DAY,
)
MODELS_KV = KvSpec(
    bucket="terra_models",
    owners=(TRAINER,),
    exceptions=((GATEWAY, ("admission: the `active.<user_id>` claim (one training per "
                           "user, 409 at once) and the model record of the training it "
                           "accepts")),),
    description="Users' LoRA models under `<user_id>.<model_id>`, and `active.<user_id>` "
    "naming the one training a user may have running.",
)


def job_key(user_id: str, job_id: str) -> str:
    """Keyed by owner first, like models and images: the key itself checks ownership, and
    one filter (`<user_id>.*`) finds a user's jobs (to list or erase them)."""
    return f"{checked_id(user_id, 'user id')}.{checked_id(job_id, 'job id')}"


def model_key(user_id: str, model_id: str) -> str:
    """Keyed by owner first: one filter (`<user_id>.*`) lists a user's models."""
    return f"{checked_id(user_id, 'user id')}.{checked_id(model_id, 'model id')}"


def active_training_key(user_id: str) -> str:
    return f"active.{checked_id(user_id, 'user id')}"


IMAGES_KV = KvSpec(
    bucket="terra_images",
    owners=(GENERATOR,),
    description="Generated images under `<user_id>.<image_id>` (generator_service); they "
    "expire with the objects (TERRA_IMAGE_RETENTION_DAYS).",
)
WORKERS_KV = KvSpec(
    bucket="terra_workers",
    owners=(AUTH, *JOB_SERVICES, NOTIFIER),  # each writes only its own `<service>.*` keys
    description="Worker heartbeats under `<service>.<worker_id>`, each rewritten every "
    "few seconds and gone once it stops (TTL): which domains have a live worker.",
    ttl_s=6.0,
)
QUEUE_SLOTS_KV = KvSpec(
    bucket="terra_queue_slots",
    owners=(GENERATOR,),  # releases a job's slot when the job ends
    exceptions=((GATEWAY, ("admission: claims the slot, so the per-user cap answers 429 "
                           "at once")),),
    description="`generation.<user_id>`: the user's queued and running generation jobs, "
    "for the per-user cap.",
)
REVOCATIONS_KV = KvSpec(
    bucket="terra_revocations",
    description="`user.<user_id>`: the time before which that user's access tokens are "
    "refused (account deleted, or signed out everywhere); kept longer than any access token "
    "lives. Every gateway watches it.",
    owners=(AUTH,),
    ttl_s=DAY,
    republish_to=f"{LIVE_PREFIX}.revocations.>",
)


def revocation_key(user_id: str) -> str:
    return f"user.{checked_id(user_id, 'user id')}"


DELETED_ACCOUNTS_KV = KvSpec(
    bucket="terra_deleted_accounts",
    description="`<user_id>`: when that account was deleted. Written by auth_service before "
    "it announces the deletion; workers read it so a command of a deleted account, however "
    "late it comes, runs nothing and stores nothing. Kept longer than any command waits.",
    owners=(AUTH,),
    ttl_s=8 * DAY,
)


def deleted_account_key(user_id: str) -> str:
    return checked_id(user_id, "user id")


RATE_LIMITS_KV = KvSpec(
    bucket="terra_rate_limits",
    owners=(GATEWAY,),
    description="Recent requests per user for the gateway's rate limits (`terra.records.rate_limits` "
    "sliding-window logs): `prompt.<digest of the user id>` for prompt optimisations (see "
    "`rate_limit_key`). The TTL bounds the "
    "longest window.",
    ttl_s=3600.0,
)


def rate_limit_key(what: str, user_id: str) -> str:
    """A counter's key names no one (a digest of the user id): counters outlive nothing
    but they would otherwise outlive an account's erasure by up to their window."""
    digest = hashlib.sha256(f"terra-rate-limit:{checked_id(user_id, 'user id')}".encode())
    return f"{what}.{digest.hexdigest()[:32]}"


WS_TICKETS_KV = KvSpec(
    bucket="terra_ws_tickets",
    owners=(GATEWAY,),
    description="WebSocket tickets (`gateway.tickets`): `ticket.<sha256 of the ticket>` -> "
    "the user and the access token's session it opens a socket for. Single use (a "
    "revision-checked delete redeems it, on any gateway); the TTL forgets unused ones.",
    ttl_s=120.0,
)


def ws_ticket_key(ticket_digest: str) -> str:
    """A ticket's key names its digest, never the ticket: a reader of the bucket learns
    nothing it could open a socket with."""
    if not re.fullmatch(r"[0-9a-f]{64}", ticket_digest):
        raise ValueError("a ticket key is a SHA-256 hex digest")
    return f"ticket.{ticket_digest}"


def _notifier_bucket(name: str, description: str, ttl_s: float | None = None) -> KvSpec:
    return KvSpec(bucket=f"terra_notify_{name}", owners=(NOTIFIER,), description=description,
                  ttl_s=ttl_s)


WEB_PUSH_KV = _notifier_bucket(
    "web_push", "Browsers' Web Push subscriptions under `<user_id>.<subscription_id>` "
    "(notifier_service).")
DEVICES_KV = _notifier_bucket(
    "devices", "Phones' Expo and FCM tokens under `<user_id>.<device_id>` (notifier_service).")
WEBHOOKS_KV = _notifier_bucket(
    "webhooks", "Users' webhooks with their signing secrets under `<user_id>.<webhook_id>` "
    "(notifier_service; no other identity reads it).")
PREFERENCES_KV = _notifier_bucket(
    "preferences", "`<user_id>`: which channels notify which event (notifier_service).")
DELIVERIES_KV = _notifier_bucket(
    "deliveries", "One notice to one target under `<user_id>.<target_id>.<delivery_id>`: "
    "its state and attempts (notifier_service, revision-checked). The TTL keeps a week.",
    ttl_s=7 * DAY)
NOTIFIER_KVS: tuple[KvSpec, ...] = (WEB_PUSH_KV, DEVICES_KV, WEBHOOKS_KV, PREFERENCES_KV,
                                    DELIVERIES_KV)


def delivery_key(user_id: str, target_id: str, delivery_id: str) -> str:
    return (f"{checked_id(user_id, 'user id')}.{checked_id(target_id, 'target id')}."
            f"{checked_id(delivery_id, 'delivery id')}")


KV_BUCKETS: tuple[KvSpec, ...] = (
    PROMPT_JOBS_KV,
    TRAINING_JOBS_KV,
    GENERATION_JOBS_KV,
    MODELS_KV,
    IMAGES_KV,
    QUEUE_SLOTS_KV,
    WORKERS_KV,
    USERS_KV,
    CREDENTIALS_KV,
    REFRESH_TOKENS_KV,
    LOGIN_THROTTLE_KV,
    SIGNUP_THROTTLE_KV,
    REVOCATIONS_KV,
    DELETED_ACCOUNTS_KV,
    RATE_LIMITS_KV,
    WS_TICKETS_KV,
    *NOTIFIER_KVS,
)

# --- object storage ------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectLayout:
    """One bucket; keys are prefixed by kind and then by the owning user."""

    bucket: str = "terra"
    prefixes: tuple[str, ...] = field(default=("uploads", "models", "images"))
    # Who writes each prefix (S3 credentials are shared; these are the design's owners).
    owners: dict[str, str] = field(default_factory=lambda: {
        "uploads": GATEWAY, "models": TRAINER, "images": GENERATOR})

    def upload_key(self, user_id: str, dataset_id: str, name: str) -> str:
        return f"uploads/{_owned(user_id, dataset_id)}/{name}"

    def model_key(self, user_id: str, model_id: str, name: str) -> str:
        return f"models/{_owned(user_id, model_id)}/{name}"

    def image_key(self, user_id: str, job_id: str, name: str) -> str:
        return f"images/{_owned(user_id, job_id)}/{name}"

    def user_prefixes(self, user_id: str) -> tuple[str, ...]:
        checked_id(user_id, "user id")
        return tuple(f"{prefix}/{user_id}/" for prefix in self.prefixes)


def _owned(user_id: str, record_id: str) -> str:
    """`<user>/<record>`: neither part may climb out of its folder (`..`, `/`)."""
    return f"{checked_id(user_id, 'user id')}/{checked_id(record_id, 'id')}"


OBJECTS = ObjectLayout()
OBJECT_BUCKETS: tuple[str, ...] = (OBJECTS.bucket,)
