"""S3 credentials: a key per service identity, and what each may do, rendered from the
storage half of the permission matrix (`contracts.storage_access`): SeaweedFS's `s3.json`
(`weed mini`: `terra up`, the tests, the benches) and a MinIO policy per identity
(`deploy/minio/`, for production).

A credentials directory holds one file per service identity (`<identity>.json`, mode 0600:
the access key and secret that identity signs with). Files that exist are kept, so a
restart reuses them. The operator's root key is not there: it is the operator's own
setting (TERRA_S3_ACCESS_KEY / TERRA_S3_SECRET_KEY, MinIO's root user in production),
given to `terra up` and `terra provision` only, the only ones that create buckets.

SeaweedFS 4.48, as measured: the actions are `Read`, `Write`, `List`, `Tagging` and
`Admin` (case-sensitive; an unknown one is ignored without a word). There is no `Delete`:
`Write` also deletes, so on SeaweedFS a key allowed to delete under a pattern may write
there too (MinIO keeps the two apart). A rule without a wildcard is compared with the
bucket alone (`Read:terra` is the whole bucket, `Read:terra/images/` nothing), a rule
with one with `bucket/key`, `*` matching `/` too: hence every rule ends in `/*`.
"""

from __future__ import annotations

import json
from pathlib import Path

from contracts.storage_access import STORAGE_IDENTITIES, Verb, grants
from contracts.topology import OBJECTS
from terra.credentials import S3Credentials, S3Key, write_secret
from terra.errors import ConfigurationError

ROOT_IDENTITY = "operator"  # the name SeaweedFS logs for the root key

WEED_ACTION: dict[Verb, str] = {
    Verb.READ: "Read", Verb.WRITE: "Write", Verb.DELETE: "Write", Verb.LIST: "List"}
WEED_ROOT_ACTIONS = ("Admin", "Read", "Write", "List", "Tagging")

MINIO_OBJECT_ACTIONS: dict[Verb, tuple[str, ...]] = {
    Verb.READ: ("s3:GetObject",),
    # A multipart upload that fails is aborted by the client: part of writing.
    Verb.WRITE: ("s3:PutObject", "s3:AbortMultipartUpload"),
    Verb.DELETE: ("s3:DeleteObject",),
}


def weed_actions(identity: str) -> list[str]:
    """SeaweedFS's rules for `identity`, `Action:bucket/pattern`, each once."""
    rules = [f"{WEED_ACTION[verb]}:{OBJECTS.bucket}/{grant.pattern}"
             for grant in grants(identity) for verb in sorted(grant.verbs)]
    for rule in rules:
        if not rule.endswith("/*") or "?" in rule:  # see the module's docstring
            raise ConfigurationError(f"unsafe SeaweedFS rule {rule!r}: end a pattern in /*")
    return list(dict.fromkeys(rules))


def weed_verbs(verbs: frozenset[Verb]) -> frozenset[Verb]:
    """What a SeaweedFS key can do when granted `verbs` (delete and write go together)."""
    actions = {WEED_ACTION[verb] for verb in verbs}
    return frozenset(verb for verb in Verb if WEED_ACTION[verb] in actions)


def weed_config(root: S3Key, credentials: S3Credentials | None) -> dict:
    """`weed mini -s3.config`: the root key may do anything; each service identity only
    its grants. Without `credentials`, the root key alone (every process uses it)."""
    identities = [_weed_identity(ROOT_IDENTITY, root, list(WEED_ROOT_ACTIONS))]
    if credentials is not None:
        identities += [_weed_identity(identity, key, weed_actions(identity))
                       for identity, key in credentials.keys().items()]
    return {"identities": identities}


def _weed_identity(name: str, key: S3Key, actions: list[str]) -> dict:
    return {"name": name, "actions": actions,
            "credentials": [{"accessKey": key.access_key, "secretKey": key.secret_key}]}


def write_weed_config(path: Path, root: S3Key, credentials: S3Credentials | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_secret(path, json.dumps(weed_config(root, credentials), indent=1))
    return path


def minio_policy(identity: str) -> dict:
    """The MinIO (IAM) policy of `identity`: object actions on its patterns, and listing
    only with a prefix under a listable pattern. Nothing on the bucket itself (creating,
    deleting, configuring it), nor `GetBucketLocation`: the clients are given the region."""
    bucket_arn = f"arn:aws:s3:::{OBJECTS.bucket}"
    statements = []
    for grant in grants(identity):
        actions = [action for verb in sorted(grant.verbs)
                   for action in MINIO_OBJECT_ACTIONS.get(verb, ())]
        if actions:
            statements.append({"Effect": "Allow", "Action": actions,
                               "Resource": [f"{bucket_arn}/{grant.pattern}"]})
    listed = [grant.pattern for grant in grants(identity) if Verb.LIST in grant.verbs]
    if listed:
        statements.append({"Effect": "Allow", "Action": ["s3:ListBucket"],
                           "Resource": [bucket_arn],
                           "Condition": {"StringLike": {"s3:prefix": listed}}})
    return {"Version": "2012-10-17", "Statement": statements}


def minio_policy_name(identity: str) -> str:
    return f"{OBJECTS.bucket}-{identity}"


def rendered_minio_policies() -> dict[str, str]:
    """File name -> content of every identity's MinIO policy (`deploy/minio/`)."""
    return {f"{minio_policy_name(identity)}.json":
            json.dumps(minio_policy(identity), indent=2) + "\n"
            for identity in STORAGE_IDENTITIES}


def write_minio_policies(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered_minio_policies().items():
        (directory / name).write_text(text)
        written.append(directory / name)
    return written

