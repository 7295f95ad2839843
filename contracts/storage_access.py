"""Who may do what in object storage: the storage half of the permission matrix (the NATS
half is `contracts/permissions.py`), written once next to the object layout
(`contracts.topology.OBJECTS`).

Each identity that touches storage has its own S3 key, allowed exactly the verbs its code
uses on the key patterns below, all inside `OBJECTS.bucket`; nothing else (no other
bucket, no bucket creation or deletion: that is the operator's root key, used by
`terra provision` and `terra up` only). auth_service and prompt_service use no storage and
get no key.

A pattern is a key with `*` standing for any characters, `/` included (as S3 policies and
SeaweedFS read them), and it always ends in `/*`: `images*` would also match `images2/`.
For `list` the pattern is matched against the listing's prefix, so a listing must name a
prefix under it (`uploads/`, `uploads/<user>/`), never the whole bucket.

`terra.ops.storage_policies` renders this for SeaweedFS (`weed mini`, locally) and as MinIO
policies (`deploy/minio/`); `tests/integration/test_storage_access.py` tries every
identity's key against every verb and prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from contracts.topology import GATEWAY, GENERATOR, OBJECTS, TRAINER


class Verb(StrEnum):
    READ = "read"      # get, stat, and presigned GETs signed with the key
    WRITE = "write"    # put (single or multipart)
    DELETE = "delete"  # delete one or many
    LIST = "list"      # list keys under a prefix


@dataclass(frozen=True)
class Grant:
    verbs: frozenset[Verb]
    pattern: str  # a key pattern inside OBJECTS.bucket: `*` is any characters, `/` too
    why: str


def under(prefix: str) -> str:
    """The pattern of every key in a top-level folder of the layout (`uploads/*`)."""
    if prefix not in OBJECTS.prefixes:
        raise ValueError(f"{prefix!r} is no folder of the object layout")
    return f"{prefix}/*"


UPLOADS, MODELS, IMAGES = (under(prefix) for prefix in ("uploads", "models", "images"))
# A model's sample images, `models/<user>/<model>/samples/<n>.png` (trainer_service/store.py):
# the only part of a model that anyone but the trainer and the generator may read.
MODEL_SAMPLES = "models/*/*/samples/*"

READ, WRITE, DELETE, LIST = Verb.READ, Verb.WRITE, Verb.DELETE, Verb.LIST

STORAGE_ACCESS: dict[str, tuple[Grant, ...]] = {
    GATEWAY: (
        Grant(frozenset({READ, WRITE, DELETE, LIST}), UPLOADS,
              "photo sets: uploads them, reads their manifests, lists a user's sets and "
              "deletes one (gateway/routers/training.py, datasets.py)"),
        Grant(frozenset({READ}), IMAGES,
              "generated images: streamed download and presigned URLs "
              "(gateway/routers/generation.py)"),
        Grant(frozenset({READ}), MODEL_SAMPLES,
              "presigned URLs of a model's sample images, never its LoRA "
              "(gateway/routers/models.py)"),
    ),
    TRAINER: (
        Grant(frozenset({READ, DELETE, LIST}), UPLOADS,
              "the photos it trains on; the retention sweep lists manifests and deletes "
              "expired sets, account erasure a user's (trainer_service/store.py, "
              "datasets.py)"),
        Grant(frozenset({READ, WRITE, DELETE, LIST}), MODELS,
              "checkpoints, the LoRA, metadata and samples; deleting a model or an "
              "account's models (trainer_service/store.py, handlers.py)"),
    ),
    GENERATOR: (
        Grant(frozenset({READ}), MODELS, "a model's LoRA to generate with "
              "(generator_service/handlers.py)"),
        Grant(frozenset({WRITE, DELETE, LIST}), IMAGES,
              "the images it makes; deleting one, and an account's (delete_prefix lists "
              "first) (generator_service/handlers.py)"),
    ),
}
STORAGE_IDENTITIES: tuple[str, ...] = tuple(STORAGE_ACCESS)
# What the gateway lets users download (never `uploads/`: users send those).
DOWNLOAD_FOLDERS = ("images/", "models/")


def grants(identity: str) -> tuple[Grant, ...]:
    """What `identity` may do in storage; an identity with no storage access gets none."""
    return STORAGE_ACCESS.get(identity, ())


def matches(pattern: str, key: str) -> bool:
    """`key` fits `pattern` (`*`: any characters, `/` included; nothing else is special)."""
    return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), key) is not None


def allows(identity: str, verb: Verb, key: str) -> bool:
    """Whether `identity` may `verb` the object `key` (for `list`: the listing prefix)."""
    return any(verb in grant.verbs and matches(grant.pattern, key)
               for grant in grants(identity))


def plain_key(key: str) -> bool:
    """A key of named parts only: no empty, `.` or `..` part that a server might fold."""
    return all(part not in ("", ".", "..") for part in key.split("/"))


def downloadable(user_id: str, key: str) -> bool:
    """A key the gateway may let `user_id` download (streamed, or a presigned URL): under
    that user's own images or models, made of named parts, and readable by the gateway.
    A record naming any other key (damaged, or written by a bug) gets nothing."""
    own = tuple(prefix for prefix in OBJECTS.user_prefixes(user_id)
                if prefix.startswith(DOWNLOAD_FOLDERS))
    return key.startswith(own) and plain_key(key) and allows(GATEWAY, READ, key)


PROBE = "terra-ping"  # a name no object has: keys are `<folder>/<user>/<record>/<name>`


def probe_prefix(identity: str | None) -> str:
    """A prefix `identity` may list and no key starts with, for a health check that asks
    only what the key may ask (`ObjectStorage.ping`); None: the operator, who may do all."""
    listable = [grant.pattern for grant in grants(identity or "") if LIST in grant.verbs]
    return (listable[0] if listable else UPLOADS).removesuffix("*") + f"{PROBE}/"
