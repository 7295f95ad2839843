"""The storage half of the permission matrix: what each identity may do, how it is
rendered for SeaweedFS and MinIO, the keys kept on disk, and the gateway's rule for what
a user may download. The same grants on a real server: tests/integration/
test_storage_access.py."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from contracts.storage_access import (
    STORAGE_IDENTITIES,
    Verb,
    allows,
    downloadable,
    grants,
    matches,
    probe_prefix,
)
from contracts.topology import AUTH, GATEWAY, GENERATOR, OBJECTS, PROMPT, TRAINER
from terra.credentials import S3Credentials, S3Key
from terra.errors import ConfigurationError
from terra.ops.storage_policies import (
    ROOT_IDENTITY,
    minio_policy,
    rendered_minio_policies,
    weed_actions,
    weed_config,
    weed_verbs,
)
from terra.settings import RuntimeSettings

ROOT = Path(__file__).resolve().parents[2]
READ, WRITE, DELETE, LIST = Verb.READ, Verb.WRITE, Verb.DELETE, Verb.LIST
UPLOAD, LORA = "uploads/u/d/a.jpg", "models/u/m/lora.safetensors"
SAMPLE, IMAGE = "models/u/m/samples/0.png", "images/u/j/0.png"


def test_each_identity_may_do_what_its_code_does_and_no_more():
    may = {identity: {(verb, key) for verb in Verb for key in (UPLOAD, LORA, SAMPLE, IMAGE)
                      if allows(identity, verb, key)} for identity in STORAGE_IDENTITIES}
    assert may[GATEWAY] == {(READ, UPLOAD), (WRITE, UPLOAD), (DELETE, UPLOAD), (LIST, UPLOAD),
                            (READ, IMAGE), (READ, SAMPLE)}
    assert may[TRAINER] == {(READ, UPLOAD), (DELETE, UPLOAD), (LIST, UPLOAD),
                            *((verb, key) for verb in Verb for key in (LORA, SAMPLE))}
    assert may[GENERATOR] == {(READ, LORA), (READ, SAMPLE),
                              (WRITE, IMAGE), (DELETE, IMAGE), (LIST, IMAGE)}
    assert grants(AUTH) == grants(PROMPT) == ()  # no storage, no key


def test_listing_needs_a_prefix_under_a_listable_folder():
    assert allows(GATEWAY, LIST, "uploads/") and allows(GATEWAY, LIST, "uploads/u/")
    for prefix in ("", "uploads", "uploads2/", "images/"):
        assert not allows(GATEWAY, LIST, prefix), prefix


def test_patterns_match_whole_keys_and_only_star_is_special():
    assert matches("models/*/*/samples/*", SAMPLE)
    assert not matches("models/*/*/samples/*", "models/u/samples/lora.safetensors")
    assert not matches("images/*", "images2/u/j/0.png")
    assert not matches("images/*", "x/images/u")
    assert not matches("a.b/*", "aXb/c")


def test_every_grant_is_a_folder_of_the_layout_ending_in_a_slash_star():
    for identity in STORAGE_IDENTITIES:
        for grant in grants(identity):
            assert grant.pattern.endswith("/*") and "?" not in grant.pattern
            assert grant.pattern.split("/")[0] in OBJECTS.prefixes
            assert grant.verbs and grant.why


def test_seaweedfs_rules_are_scoped_to_the_bucket_and_end_in_a_slash_star():
    for identity in STORAGE_IDENTITIES:
        for rule in weed_actions(identity):
            action, _, resource = rule.partition(":")
            assert action in {"Read", "Write", "List"}  # never Admin or Tagging
            assert resource.startswith(f"{OBJECTS.bucket}/") and resource.endswith("/*"), rule
    assert weed_actions(GENERATOR) == ["Read:terra/models/*", "Write:terra/images/*",
                                       "List:terra/images/*"]


def test_on_seaweedfs_delete_and_write_come_together():
    assert weed_verbs(frozenset({DELETE})) == {WRITE, DELETE}
    assert weed_verbs(frozenset({READ, LIST})) == {READ, LIST}


def test_weed_config_gives_root_everything_and_each_service_its_own_key(tmp_path):
    credentials = S3Credentials.ensure(tmp_path / "keys")
    config = weed_config(S3Key("root-key", "root-secret"), credentials)
    by_name = {identity["name"]: identity for identity in config["identities"]}
    assert set(by_name) == {ROOT_IDENTITY, *STORAGE_IDENTITIES}
    assert "Admin" in by_name[ROOT_IDENTITY]["actions"]
    assert by_name[ROOT_IDENTITY]["credentials"][0]["accessKey"] == "root-key"
    for identity in STORAGE_IDENTITIES:
        assert by_name[identity]["actions"] == weed_actions(identity)
        assert by_name[identity]["credentials"][0]["accessKey"] == \
            credentials.key(identity).access_key
    assert [i["name"] for i in weed_config(S3Key("k", "s"), None)["identities"]] == [
        ROOT_IDENTITY]


def test_minio_policies_grant_objects_by_pattern_and_list_only_under_prefixes():
    policy = minio_policy(GATEWAY)
    bucket = f"arn:aws:s3:::{OBJECTS.bucket}"
    statements = policy["Statement"]
    assert all(s["Effect"] == "Allow" for s in statements)
    actions = {action for s in statements for action in s["Action"]}
    assert actions == {"s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload",
                       "s3:DeleteObject", "s3:ListBucket"}
    for statement in statements:
        if statement["Action"] == ["s3:ListBucket"]:
            assert statement["Resource"] == [bucket]
            assert statement["Condition"] == {"StringLike": {"s3:prefix": ["uploads/*"]}}
        else:
            assert all(r.startswith(f"{bucket}/") and r.endswith("/*")
                       for r in statement["Resource"])
    reads = {r for s in statements if "s3:GetObject" in s["Action"] for r in s["Resource"]}
    assert reads == {f"{bucket}/uploads/*", f"{bucket}/images/*",
                     f"{bucket}/models/*/*/samples/*"}
    # The generator deletes images but never reads them back; MinIO keeps them apart.
    generator = {tuple(s["Action"]): s["Resource"] for s in minio_policy(GENERATOR)["Statement"]}
    assert generator[("s3:GetObject",)] == [f"{bucket}/models/*"]


def test_committed_minio_policies_match_the_matrix():
    directory = ROOT / "deploy" / "minio"
    rendered = rendered_minio_policies()
    committed = {path.name: path.read_text() for path in directory.glob("*.json")}
    assert committed == rendered, (
        "run `terra storage-credentials policies --out deploy/minio` and commit the files")
    assert all(json.loads(text) for text in committed.values())


def test_keys_are_private_files_kept_across_runs(tmp_path):
    directory = tmp_path / "s3-auth"
    first = S3Credentials.ensure(directory).keys()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for identity in STORAGE_IDENTITIES:
        assert stat.S_IMODE((directory / f"{identity}.json").stat().st_mode) == 0o600
    assert S3Credentials.ensure(directory).keys() == first  # a restart reuses them
    assert len({key.access_key for key in first.values()}) == len(STORAGE_IDENTITIES)
    assert first[GATEWAY].secret_key not in repr(first[GATEWAY])  # never logged by accident


def test_a_missing_key_says_how_to_make_one(tmp_path):
    with pytest.raises(ConfigurationError, match="storage-credentials init"):
        S3Credentials(tmp_path).key(GATEWAY)


def test_settings_give_each_identity_its_own_key(tmp_path):
    credentials = S3Credentials.ensure(tmp_path)
    settings = RuntimeSettings(s3_credentials_dir=tmp_path, s3_access_key="root",
                               s3_secret_key="root-secret")
    gateway = credentials.key(GATEWAY)
    assert settings.s3_key(GATEWAY) == (gateway.access_key, gateway.secret_key)
    assert settings.s3_key(None) == ("root", "root-secret")  # the operator's
    assert RuntimeSettings(s3_access_key="one", s3_secret_key="key").s3_key(TRAINER) == (
        "one", "key")  # production: each container is given only its own


def test_production_takes_keys_from_the_directory_but_never_a_placeholder(tmp_path):
    S3Credentials.ensure(tmp_path)
    settings = RuntimeSettings(profile="production", s3_credentials_dir=tmp_path,
                               nats_nkey_file=tmp_path / "x.nk", nats_ca_file=tmp_path / "ca")
    assert settings.s3_key(GENERATOR)[0]
    with pytest.raises(ConfigurationError, match="TERRA_S3_ACCESS_KEY"):
        settings.s3_key(None)  # the placeholder root key


def test_the_health_check_lists_a_prefix_its_identity_may_list_and_nothing_has():
    for identity in STORAGE_IDENTITIES:
        prefix = probe_prefix(identity)
        assert allows(identity, LIST, prefix) and prefix.endswith("/terra-ping/")
    assert probe_prefix(None) == "uploads/terra-ping/"


@pytest.mark.parametrize(("key", "ok"), [
    ("images/alice/j/0.png", True),
    ("models/alice/m/samples/0.png", True),
    ("images/bob/j/0.png", False),             # another user's
    ("models/alice/m/lora.safetensors", False),  # not a sample: the gateway may not read it
    ("uploads/alice/d/a.jpg", False),          # uploads are sent, never handed out
    ("images/alice/../bob/j/0.png", False),
    ("images/alice//0.png", False),
    ("images/alice/", False),
    ("images/alice2/j/0.png", False),
    ("images2/alice/j/0.png", False),
])
def test_a_user_downloads_only_keys_under_their_own_folders(key, ok):
    assert downloadable("alice", key) is ok


def test_the_cli_makes_keys_once_and_renders_the_policies(tmp_path, capsys):
    from terra.ops.cli import main

    assert main(["storage-credentials", "init", "--dir", str(tmp_path / "keys")]) == 0
    keys = S3Credentials(tmp_path / "keys").keys()
    assert main(["storage-credentials", "init", "--dir", str(tmp_path / "keys")]) == 0
    assert S3Credentials(tmp_path / "keys").keys() == keys
    assert main(["storage-credentials", "policies", "--out", str(tmp_path / "minio")]) == 0
    assert {path.name: path.read_text() for path in (tmp_path / "minio").iterdir()} == \
        rendered_minio_policies()
    with pytest.raises(SystemExit):
        main(["storage-credentials", "init", "--out", str(tmp_path)])
