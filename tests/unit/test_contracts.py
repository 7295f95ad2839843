"""Every wire model round-trips, ignores unknown fields, and matches its committed schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import TypeAdapter, ValidationError

from contracts import export, topology
from contracts.ids import InvalidId
from contracts.registry import COMMANDS, EVENTS, MESSAGES

USER = "u1a2b3"
JOB = "j9f8e7"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
USER_VIEW = {
    "id": USER,
    "email": "ada@example.com",
    "display_name": "Ada",
    "providers": ["password"],
    "created_at": NOW.isoformat(),
}

# One valid payload per message type (beyond the defaulted envelope fields). A new model
# without an example fails `test_every_message_has_an_example`.
_KEYS = {"p256dh": "B" + "A" * 86, "auth": "A" * 22}
_WEBHOOK_VIEW = {"id": "w1", "url": "https://hooks.example.com/terra", "events": None,
                 "language": "en", "created_at": "2026-01-01T00:00:00Z", "enabled": True}
NOTIFY_EXAMPLES: dict[str, dict] = {
    "notify.get_webpush_key.v1": {},
    "notify.add_webpush.v1": {"user_id": USER, "endpoint": "https://push.example.com/x",
                              "keys": _KEYS, "language": "fr"},
    "notify.remove_webpush.v1": {"user_id": USER, "subscription_id": "s1"},
    "notify.add_device.v1": {"user_id": USER, "token": "ExponentPushToken[x]",
                             "platform": "ios", "provider": "expo"},
    "notify.remove_device.v1": {"user_id": USER, "device_id": "d1"},
    "notify.list_targets.v1": {"user_id": USER},
    "notify.set_preferences.v1": {"user_id": USER,
                                  "events": {"prompt.optimized": ["webhook"]}},
    "notify.create_webhook.v1": {"user_id": USER, "url": "https://hooks.example.com/terra"},
    "notify.list_webhooks.v1": {"user_id": USER},
    "notify.get_webhook.v1": {"user_id": USER, "webhook_id": "w1"},
    "notify.update_webhook.v1": {"user_id": USER, "webhook_id": "w1", "enabled": True},
    "notify.delete_webhook.v1": {"user_id": USER, "webhook_id": "w1"},
    "notify.rotate_webhook_secret.v1": {"user_id": USER, "webhook_id": "w1"},
    "notify.test_webhook.v1": {"user_id": USER, "webhook_id": "w1"},
    "notify.redeliver_webhook.v1": {"user_id": USER, "webhook_id": "w1", "delivery_id": "d1"},
    "notify.list_deliveries.v1": {"user_id": USER, "webhook_id": "w1"},
    "notify.failure.v1": {"code": "invalid_request", "detail": "bad", "field": "url"},
    "notify.webpush_key.v1": {"public_key": "B" + "A" * 86},
    "notify.targets.v1": {"web_push": [], "devices": [], "preferences": {"events": {}}},
    "notify.webpush_added.v1": {"subscription": {
        "id": "s1", "endpoint_origin": "https://push.example.com", "language": "en",
        "created_at": "2026-01-01T00:00:00Z", "enabled": True}, "created": True},
    "notify.device_added.v1": {"device": {
        "id": "d1", "platform": "android", "provider": "fcm", "token_hint": "abcdef",
        "language": "en", "created_at": "2026-01-01T00:00:00Z", "enabled": True},
        "created": False},
    "notify.preferences_reply.v1": {"preferences": {"events": {"training.completed": []}}},
    "notify.webhook_reply.v1": {"webhook": _WEBHOOK_VIEW, "secret": "whsec_abc"},
    "notify.webhook_list.v1": {"webhooks": [_WEBHOOK_VIEW]},
    "notify.delivery_list.v1": {"deliveries": [{
        "id": "d1", "event": "webhook.test", "event_id": "e1", "state": "delivered",
        "attempts": [{"at": "2026-01-01T00:00:00Z", "status_code": 200}],
        "created_at": "2026-01-01T00:00:00Z"}]},
    "notify.delivery_queued.v1": {"delivery_id": "d1"},
    "notify.done.v1": {},
    "notify.deliver.v1": {"user_id": USER, "target_id": "t1", "delivery_id": "d1",
                          "channel": "webhook"},
    "notify.expo_receipts.v1": {"user_id": USER, "device_id": "d1", "ticket_ids": ["x"],
                                "due_at": "2026-01-01T00:15:00Z"},
}

EXAMPLES: dict[str, dict] = {
    "auth.register.v1": {"email": "ada@example.com", "password": "correct horse battery"},
    "auth.login_password.v1": {"email": "ada@example.com", "password": "x" * 12},
    "auth.login_google.v1": {"id_token": "eyJ.eyJ.sig"},
    "auth.refresh.v1": {"refresh_token": "opaque"},
    "auth.logout.v1": {"refresh_token": "opaque"},
    "auth.logout.v2": {"refresh_token": "opaque", "everywhere": True, "access_token": "a.b.c"},
    "auth.get_user.v1": {"user_id": USER},
    "auth.delete_account.v1": {"user_id": USER},
    "auth.delete_account.v2": {"user_id": USER, "access_token": "a.b.c"},
    "auth.change_password.v1": {"user_id": USER, "access_token": "a.b.c",
                                "current_password": "old one 1234", "new_password": "new one 5678"},
    "auth.get_signing_keys.v1": {},
    "auth.failure.v1": {"code": "email_taken", "detail": "taken"},
    "auth.token_pair.v1": {
        "user": USER_VIEW,
        "access_token": "a.b.c",
        "refresh_token": "r",
        "expires_in": 900,
    },
    "auth.user.v1": {"user": USER_VIEW},
    "auth.done.v1": {},
    "auth.signing_keys.v1": {"issuer": "terra", "audience": "terra", "keys": [{"kid": "k"}]},
    "account.registered.v1": {"user_id": USER, "provider": "google"},
    "account.deleted.v1": {"user_id": USER},
    "prompt.optimize.v1": {"job_id": JOB, "user_id": USER, "prompt": "a cat", "variants": 2},
    "prompt.optimized.v1": {
        "job_id": JOB,
        "user_id": USER,
        "original": "a cat",
        "optimized": "A photo of a cat.",
        "analysis": {"subject": "cat", "lighting": None},
        "changes": [{"kind": "added", "text": "photo", "reason": "medium was missing"}],
        "tokens": {"clip": 7, "t5": 6},
        "engine": "offline",
    },
    "prompt.record_decision.v1": {"job_id": JOB, "user_id": USER, "final_prompt": "a cat"},
    "prompt.decision_recorded.v1": {
        "job_id": JOB,
        "user_id": USER,
        "decision": "edited",
        "final_prompt": "a cat",
    },
    "training.start.v1": {
        "job_id": JOB,
        "user_id": USER,
        "model_id": "m1",
        "dataset_id": "d1",
        "trigger_word": "zxq person",
    },
    "training.queued.v1": {"job_id": JOB, "user_id": USER, "model_id": "m1", "position": 0},
    "training.started.v1": {"job_id": JOB, "user_id": USER, "model_id": "m1"},
    "training.progressed.v1": {
        "job_id": JOB,
        "user_id": USER,
        "step": 10,
        "total_steps": 1000,
        "loss": 0.12,
        "eta_seconds": 300.0,
    },
    "training.sample_ready.v1": {"job_id": JOB, "user_id": USER, "step": 10, "image_id": "i1"},
    "training.completed.v1": {
        "job_id": JOB,
        "user_id": USER,
        "model_id": "m1",
        "trigger_word": "zxq",
        "lora_key": "models/u1a2b3/m1/lora.safetensors",
    },
    "training.cancelled.v1": {"job_id": JOB, "user_id": USER, "model_id": "m1"},
    "generation.generate.v1": {
        "job_id": JOB,
        "user_id": USER,
        "prompt": "a cat",
        "model": "schnell",
        "steps": 4,
    },
    "generation.queued.v1": {"job_id": JOB, "user_id": USER, "position": 3},
    "generation.position_changed.v1": {"job_id": JOB, "user_id": USER, "position": 1},
    "generation.started.v1": {"job_id": JOB, "user_id": USER},
    "generation.progressed.v1": {"job_id": JOB, "user_id": USER, "step": 1, "total_steps": 4},
    "generation.image_generated.v1": {
        "job_id": JOB,
        "user_id": USER,
        "images": [{"image_id": "i1", "key": "images/u/j/i1.png", "width": 64, "height": 64,
                    "seed": 1}],
    },
    "generation.cancelled.v1": {"job_id": JOB, "user_id": USER},
    "job.cancel.v1": {"job_id": JOB, "user_id": USER, "kind": "generation"},
    "training.delete_model.v1": {"user_id": USER, "model_id": "m1"},
    "training.model_deleted.v1": {"user_id": USER, "model_id": "m1"},
    "generation.delete_image.v1": {"user_id": USER, "image_id": "i1"},
    "generation.image_deleted.v1": {"user_id": USER, "image_id": "i1"},
    "job.requeued.v1": {
        "job_id": JOB,
        "user_id": USER,
        "kind": "training",
        "reason": "The worker running it stopped; it will be picked up again.",
        "attempt": 1,
        "resumed_from_step": 200,
    },
    **NOTIFY_EXAMPLES,
    "job.failed.v1": {
        "job_id": JOB,
        "user_id": USER,
        "kind": "training",
        "code": "out_of_memory",
        "reason": "The GPU ran out of memory at 1024 px; try 768.",
    },
}


def test_every_message_has_an_example():
    assert set(MESSAGES) == set(EXAMPLES)


@pytest.mark.parametrize("message_type", sorted(EXAMPLES))
def test_round_trip_through_json(message_type):
    model = MESSAGES[message_type]
    original = model(**EXAMPLES[message_type])
    wire = original.model_dump_json()
    assert json.loads(wire)["type"] == message_type
    assert model.model_validate_json(wire) == original


@pytest.mark.parametrize("message_type", sorted(EXAMPLES))
def test_unknown_fields_are_ignored(message_type):
    model = MESSAGES[message_type]
    payload = json.loads(model(**EXAMPLES[message_type]).model_dump_json())
    payload["added_in_a_later_minor_version"] = {"nested": True}
    decoded = model.model_validate(payload)
    assert not hasattr(decoded, "added_in_a_later_minor_version")


@pytest.mark.parametrize("message_type", sorted(EXAMPLES))
def test_messages_are_frozen(message_type):
    message = MESSAGES[message_type](**EXAMPLES[message_type])
    with pytest.raises(ValidationError):
        message.correlation_id = "changed"


def test_envelope_is_complete_and_utc():
    message = MESSAGES["generation.started.v1"](**EXAMPLES["generation.started.v1"])
    assert message.message_id and message.correlation_id
    assert message.occurred_at.utcoffset().total_seconds() == 0


@pytest.mark.parametrize("message_type", sorted(EVENTS))
def test_event_subjects_end_in_the_owner(message_type):
    event = EVENTS[message_type](**EXAMPLES[message_type])
    subject = event.subject()
    assert subject.startswith("terra.evt.")
    assert topology.event_owner(subject) == USER
    assert any(_matches(subject, pattern) for pattern in topology.EVENTS.subjects)


@pytest.mark.parametrize("message_type", sorted(COMMANDS))
def test_each_command_lands_in_exactly_one_work_queue(message_type):
    command = COMMANDS[message_type](**EXAMPLES[message_type])
    homes = [
        spec.name
        for spec in topology.STREAMS
        if spec.retention is topology.Retention.WORK_QUEUE
        and any(_matches(command.subject(), p) for p in spec.subjects)
    ]
    assert len(homes) == 1


def test_job_failures_go_to_the_job_kind_domain():
    failed = MESSAGES["job.failed.v1"](**EXAMPLES["job.failed.v1"])
    assert failed.subject() == f"terra.evt.training.failed.{USER}"
    assert topology.event_domain(failed.subject()) == "training"


@pytest.mark.parametrize("bad_id", ["a.b", "a*", ">", "a b", "", "x" * 65])
def test_ids_that_would_break_subjects_are_refused(bad_id):
    with pytest.raises(ValidationError):
        MESSAGES["account.deleted.v1"](user_id=bad_id)


@pytest.mark.parametrize("bad_id", ["*", ">", "a.b", "", "x" * 200, "../etc", "a b"])
def test_no_subject_key_or_object_path_is_built_from_an_unchecked_id(bad_id):
    """The one validator: every builder of a subject, KV key or object key refuses a
    token that would reach beyond its owner (a wildcard, another token, another folder)."""
    builders = [
        lambda: topology.event_subject("generation", "completed", bad_id),
        lambda: topology.user_events_filter(bad_id),
        lambda: topology.model_key(bad_id, "m1"), lambda: topology.model_key("u1", bad_id),
        lambda: topology.active_training_key(bad_id), lambda: topology.revocation_key(bad_id),
        lambda: topology.OBJECTS.image_key(bad_id, "j1", "0.png"),
        lambda: topology.OBJECTS.upload_key("u1", bad_id, "manifest.json"),
        lambda: topology.OBJECTS.user_prefixes(bad_id),
    ]
    for build in builders:
        with pytest.raises(InvalidId):
            build()


def test_user_event_filter_selects_only_that_user():
    mine = topology.event_subject("generation", "completed", "alice")
    theirs = topology.event_subject("generation", "completed", "alice2")
    assert _matches(mine, topology.user_events_filter("alice"))
    assert not _matches(theirs, topology.user_events_filter("alice"))
    assert not _matches(mine, topology.user_events_filter("alice", "training"))


def test_committed_schemas_match_the_models():
    assert export.stale_files() == [], "run `make schemas` and commit contracts/schemas"


# Request versions replaced by a breaking change: auth_service still decodes them, to refuse
# them clearly (or serve what stays safe), so their schemas stay.
def test_asyncapi_lists_every_message_and_stream():
    """Retired request versions too, beside the current ones on their subject: a producer
    still sending one finds why it is refused."""
    document = export.asyncapi()
    listed = set(document["components"]["messages"])
    assert listed == set(MESSAGES)
    assert set(document["x-terra-streams"]) == {s.name for s in topology.STREAMS}


def test_requests_acting_on_an_account_carry_the_callers_access_token():
    from contracts.auth import DeleteAccount, DeleteAccountRequest, DeleteAccountV1, Logout

    with pytest.raises(ValidationError):
        DeleteAccount(user_id=USER)
    request = DeleteAccount(user_id=USER, access_token="eyJa.eyJb.secret")
    logout = Logout(refresh_token="opaque-refresh", everywhere=True,
                    access_token="eyJa.eyJb.secret")
    for message in (request, logout):  # whatever prints one, a token is not in it
        assert "secret" not in repr(message) and "secret" not in str(message)
    assert "opaque-refresh" not in repr(logout)
    # Both versions decode on the subject, each as itself (auth_service refuses the old).
    decode = TypeAdapter(DeleteAccountRequest).validate_json
    assert isinstance(decode(request.model_dump_json()), DeleteAccount)
    assert isinstance(decode(DeleteAccountV1(user_id=USER).model_dump_json()), DeleteAccountV1)


def test_a_password_change_prints_no_password_and_no_token():
    from contracts.auth import ChangePassword

    with pytest.raises(ValidationError):  # only with the caller's access token
        ChangePassword(user_id=USER, current_password="old secret 1", new_password="new secret 2")
    change = ChangePassword(user_id=USER, access_token="eyJa.eyJb.secret",
                            current_password="old secret 1", new_password="new secret 2")
    for secret in ("eyJa.eyJb.secret", "old secret 1", "new secret 2"):
        assert secret not in repr(change) and secret not in str(change)


def _matches(subject: str, pattern: str) -> bool:
    tokens, wanted = subject.split("."), pattern.split(".")
    for i, want in enumerate(wanted):
        if want == ">":
            return len(tokens) > i
        if i >= len(tokens) or (want != "*" and want != tokens[i]):
            return False
    return len(tokens) == len(wanted)


def test_a_deleted_account_is_remembered_longer_than_any_command_waits():
    """Workers drop a deleted account's commands by this mark: a command older than the
    mark could otherwise run after both erasure passes."""
    longest_wait = max(stream.max_age_s for stream in topology.COMMAND_STREAMS.values())
    assert topology.DELETED_ACCOUNTS_KV.ttl_s > longest_wait
