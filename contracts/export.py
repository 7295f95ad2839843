"""Generate the committed JSON Schemas and the AsyncAPI document from the models.

`python -m contracts.export` writes them; `python -m contracts.export --check` exits 1
when the committed files no longer match the models (a test runs the same check).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from contracts import auth, notifications, topology, websocket
from contracts.base import Command, Event
from contracts.generation import ImageRecord
from contracts.jobs import CancelJob, JobFailed, JobKind, JobRequeued, JobState
from contracts.registry import EVENTS, MESSAGES
from contracts.training import DatasetManifest, ModelRecord
from contracts.workers import WorkerHeartbeat

SCHEMA_DIR = Path(__file__).parent / "schemas"
ASYNCAPI_FILE = SCHEMA_DIR / "asyncapi.json"
WEBSOCKET_FILE = SCHEMA_DIR / "websocket.asyncapi.json"

# Request/reply pairs of the auth service.
# Each request subject: the requests it takes (a retired version beside the current one,
# which auth_service refuses with a reason), and the replies.
AUTH_OPERATIONS: dict[str, tuple[tuple[type, ...], tuple[type, ...]]] = {
    topology.AuthRpc.REGISTER: ((auth.Register,), (auth.TokenPair, auth.AuthFailure)),
    topology.AuthRpc.LOGIN_PASSWORD: ((auth.LoginWithPassword,),
                                      (auth.TokenPair, auth.AuthFailure)),
    topology.AuthRpc.LOGIN_GOOGLE: ((auth.LoginWithGoogle,), (auth.TokenPair, auth.AuthFailure)),
    topology.AuthRpc.REFRESH: ((auth.RefreshTokens,), (auth.TokenPair, auth.AuthFailure)),
    topology.AuthRpc.LOGOUT: ((auth.Logout, auth.LogoutV1), (auth.Done, auth.AuthFailure)),
    topology.AuthRpc.GET_USER: ((auth.GetUser,), (auth.UserReply, auth.AuthFailure)),
    topology.AuthRpc.DELETE_ACCOUNT: ((auth.DeleteAccount, auth.DeleteAccountV1),
                                      (auth.Done, auth.AuthFailure)),
    topology.AuthRpc.CHANGE_PASSWORD: ((auth.ChangePassword,), (auth.TokenPair, auth.AuthFailure)),
    topology.AuthRpc.SIGNING_KEYS: ((auth.GetSigningKeys,), (auth.SigningKeys,)),
}

# Request/reply pairs of notifier_service (the gateway asks; every reply may be a failure).
_N = notifications
NOTIFIER_OPERATIONS: dict[str, tuple[tuple[type, ...], tuple[type, ...]]] = {
    subject: ((_N.REQUESTS[subject],), (*replies, _N.NotifierFailure))
    for subject, replies in (
        (topology.NotifierRpc.WEBPUSH_KEY, (_N.WebPushKey,)),
        (topology.NotifierRpc.ADD_WEBPUSH, (_N.WebPushAdded,)),
        (topology.NotifierRpc.REMOVE_WEBPUSH, (_N.NotifierDone,)),
        (topology.NotifierRpc.ADD_DEVICE, (_N.DeviceAdded,)),
        (topology.NotifierRpc.REMOVE_DEVICE, (_N.NotifierDone,)),
        (topology.NotifierRpc.LIST_TARGETS, (_N.Targets,)),
        (topology.NotifierRpc.SET_PREFERENCES, (_N.PreferencesReply,)),
        (topology.NotifierRpc.CREATE_WEBHOOK, (_N.WebhookReply,)),
        (topology.NotifierRpc.LIST_WEBHOOKS, (_N.WebhookList,)),
        (topology.NotifierRpc.GET_WEBHOOK, (_N.WebhookReply,)),
        (topology.NotifierRpc.UPDATE_WEBHOOK, (_N.WebhookReply,)),
        (topology.NotifierRpc.DELETE_WEBHOOK, (_N.NotifierDone,)),
        (topology.NotifierRpc.ROTATE_WEBHOOK_SECRET, (_N.WebhookReply,)),
        (topology.NotifierRpc.TEST_WEBHOOK, (_N.DeliveryQueued,)),
        (topology.NotifierRpc.REDELIVER_WEBHOOK, (_N.DeliveryQueued,)),
        (topology.NotifierRpc.LIST_DELIVERIES, (_N.DeliveryList,)),
    )
}
# What a webhook receiver gets: its body's schema, published beside the messages'.
WEBHOOK_PAYLOAD_FILE = "webhook.payload.json"


def json_schemas() -> dict[str, dict]:
    """File name -> schema, one per message type plus the job state."""
    schemas = {f"{name}.json": model.model_json_schema() for name, model in MESSAGES.items()}
    schemas["job.state.v1.json"] = JobState.model_json_schema()
    schemas["training.model.v1.json"] = ModelRecord.model_json_schema()
    schemas["training.dataset.v1.json"] = DatasetManifest.model_json_schema()
    schemas["generation.image.v1.json"] = ImageRecord.model_json_schema()
    schemas["worker.heartbeat.v1.json"] = WorkerHeartbeat.model_json_schema()
    schemas[WEBHOOK_PAYLOAD_FILE] = notifications.WebhookPayload.model_json_schema()
    return schemas


def _channels_for(model: type) -> list[str]:
    if model in (JobFailed, JobRequeued):
        return [f"{topology.events_of_anyone(kind.value, model.name)[:-1]}{{user_id}}"
                for kind in JobKind]
    if model is CancelJob:
        return [topology.command_subject(kind.value, "cancel") for kind in JobKind]
    if issubclass(model, Event):
        return [f"{topology.events_of_anyone(model.domain, model.name)[:-1]}{{user_id}}"]
    if issubclass(model, Command):
        return [topology.command_subject(model.domain, model.verb)]
    if model is notifications.Deliver:
        return [topology.delivery_subject("USER").replace("USER", "{user_id}")]
    if model is notifications.CheckExpoReceipts:
        return [topology.receipts_subject("USER").replace("USER", "{user_id}")]
    return []


def _channel_id(address: str) -> str:
    return address.replace("{user_id}", "user").replace(".", "_")


def asyncapi() -> dict:
    channels: dict[str, dict] = {}
    operations: dict[str, dict] = {}
    messages: dict[str, dict] = {}

    def message_ref(model: type) -> dict:
        name = model.model_fields["type"].default
        messages[name] = {
            "name": name,
            "title": model.__name__,
            "summary": (model.__doc__ or "").strip().split("\n")[0],
            "contentType": "application/json",
            "payload": {"$ref": f"schemas/{name}.json"},
        }
        return {"$ref": f"#/components/messages/{name}"}

    def add_channel(address: str, models: list[type], **extra) -> str:
        channel_id = _channel_id(address)
        channel = channels.setdefault(channel_id, {"address": address, "messages": {}, **extra})
        for model in models:
            name = model.model_fields["type"].default
            channel["messages"][name.replace(".", "_")] = message_ref(model)
        return channel_id

    for model in MESSAGES.values():
        for address in _channels_for(model):
            params = {"user_id": {"description": "The owning user's id."}} if "{user_id}" in address else {}
            channel_id = add_channel(address, [model], **({"parameters": params} if params else {}))
            action = "receive" if issubclass(model, Command) else "send"
            op_id = f"{action}_{channel_id}_{model.__name__}"
            operations[op_id] = {
                "action": action,
                "channel": {"$ref": f"#/channels/{channel_id}"},
                "messages": [
                    {"$ref": f"#/channels/{channel_id}/messages/"
                     f"{model.model_fields['type'].default.replace('.', '_')}"}
                ],
            }

    for subject, (requests, replies) in {**AUTH_OPERATIONS, **NOTIFIER_OPERATIONS}.items():
        channel_id = add_channel(subject, list(requests))
        reply_id = add_channel(f"{subject}.reply", list(replies),
                               description="The requester's inbox (NATS request/reply).")
        operations[f"reply_{channel_id}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "reply": {"channel": {"$ref": f"#/channels/{reply_id}"}},
        }

    streams = {
        spec.name: {
            "subjects": list(spec.subjects),
            "retention": spec.retention.value,
            "max_age_s": spec.max_age_s,
            "duplicate_window_s": spec.duplicate_window_s,
        }
        for spec in topology.STREAMS
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Terra",
            "version": "1",
            "description": "Commands, events and request/reply of Terra over NATS JetStream. "
            "Payloads are plain JSON; commands carry Nats-Msg-Id = message_id for dedupe.",
        },
        "defaultContentType": "application/json",
        "channels": dict(sorted(channels.items())),
        "operations": dict(sorted(operations.items())),
        "components": {"messages": dict(sorted(messages.items()))},
        "x-terra-streams": streams,
        "x-terra-kv-buckets": [spec.bucket for spec in topology.KV_BUCKETS],
    }


def _frame_schema(model: type, defs: str = "#/components/schemas/{model}") -> dict:
    schema = model.model_json_schema(ref_template=defs)
    schema.pop("$defs", None)
    return schema


def _event_domains(model: type[Event]) -> list[str]:
    """The `domain` of an event's frames: its subject's (a job event: each job kind's)."""
    if model in (JobFailed, JobRequeued):
        return [kind.value for kind in JobKind]
    return [model.domain]


def websocket_asyncapi() -> dict:
    """The gateway's WebSockets for client apps: paths, query, frames, close codes."""
    frames = {
        "ready": websocket.ReadyFrame, "pong": websocket.PongFrame,
        "ping": websocket.PingFrame,
    }
    messages: dict[str, dict] = {
        name: {"name": name, "title": model.__name__,
               "summary": (model.__doc__ or "").strip(), "contentType": "application/json",
               "payload": {"$ref": f"#/components/schemas/{model.__name__}"}}
        for name, model in frames.items()
    }
    schemas = {model.__name__: _frame_schema(model) for model in frames.values()}
    channels: dict[str, dict] = {}
    operations: dict[str, dict] = {}
    for path, domain in websocket.SOCKET_PATHS.items():
        events = sorted(name for name, model in EVENTS.items()
                        if domain is None or domain in _event_domains(model))
        frame_name = f"event_{domain or 'any'}"
        frame = _frame_schema(websocket.EventFrame)
        frame["properties"]["type"]["enum"] = events
        frame["properties"]["type"]["examples"] = [
            next(name for name in events if not name.startswith("job."))]
        frame["properties"]["payload"] = {
            **frame["properties"]["payload"],
            "oneOf": [{"$ref": f"./{name}.json"} for name in events]}
        schemas[f"EventFrame_{domain or 'any'}"] = frame
        messages[frame_name] = {
            "name": frame_name, "title": f"An event on {path}",
            "summary": websocket.EventFrame.__doc__.strip(), "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/EventFrame_{domain or 'any'}"}}
        channel_id = path.strip("/").replace("/", "_")
        channels[channel_id] = {
            "address": path,
            "description": ("Every event of yours." if domain is None else
                            f"Your {domain} events.") + " Frames: events, then `ready` "
            "once a `since=` replay is done, and `pong` for each `ping`.",
            "messages": {frame_name: {"$ref": f"#/components/messages/{frame_name}"},
                         **{name: {"$ref": f"#/components/messages/{name}"}
                            for name in frames}},
            "bindings": {"ws": {"method": "GET", "query": _WS_QUERY,
                                "bindingVersion": "0.1.0"}},
        }
        ref = f"#/channels/{channel_id}"
        operations[f"send_events_{channel_id}"] = {
            "action": "send", "channel": {"$ref": ref},
            "summary": "The gateway sends your events, `ready` and `pong`.",
            "messages": [{"$ref": f"{ref}/messages/{name}"}
                         for name in (frame_name, "ready", "pong")]}
        operations[f"receive_ping_{channel_id}"] = {
            "action": "receive", "channel": {"$ref": ref},
            "summary": "A client may send `ping`.",
            "messages": [{"$ref": f"{ref}/messages/ping"}]}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Terra WebSockets",
            "version": "1",
            "description": "The gateway's WebSockets: your job events, live and replayed "
            "from `since=<seq>` with no gap and no duplicate. Each event's payload is "
            "described by its JSON Schema beside this file (`<type>.json`).",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": dict(sorted(operations.items())),
        "components": {"messages": dict(sorted(messages.items())),
                       "schemas": dict(sorted(schemas.items()))},
        "x-close-codes": {str(int(code)): meaning
                          for code, meaning in websocket.CLOSE_CODE_MEANINGS.items()},
    }


_WS_QUERY = {
    "type": "object",
    "properties": {
        "ticket": {"type": "string", "description": "A single-use ticket from `POST "
                   "/api/ws/ticket`: no token in the URL."},
        "token": {"type": "string", "description": "An access token (older clients; prefer "
                  "a ticket or an `Authorization: Bearer` header)."},
        "since": {"type": "integer", "minimum": 0, "description": "Replay your events after "
                  "this sequence first (0: everything still kept)."},
    },
}


def rendered() -> dict[Path, str]:
    files = {
        SCHEMA_DIR / name: json.dumps(schema, indent=2, sort_keys=True) + "\n"
        for name, schema in json_schemas().items()
    }
    files[ASYNCAPI_FILE] = json.dumps(asyncapi(), indent=2) + "\n"
    files[WEBSOCKET_FILE] = json.dumps(websocket_asyncapi(), indent=2) + "\n"
    return files


def stale_files() -> list[str]:
    """Files whose committed content differs from what the models generate (or extras)."""
    wanted = rendered()
    stale = [str(p.name) for p, text in wanted.items() if not p.exists() or p.read_text() != text]
    extra = [p.name for p in SCHEMA_DIR.glob("*.json") if p not in wanted]
    return sorted(stale + extra)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed files are stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            print("stale contract files (run `make schemas`):", ", ".join(stale))
            return 1
        return 0
    SCHEMA_DIR.mkdir(exist_ok=True)
    for extra in SCHEMA_DIR.glob("*.json"):
        extra.unlink()
    for path, text in rendered().items():
        path.write_text(text)
    print(f"wrote {len(rendered())} files to {SCHEMA_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
