"""The WebSocket frames the gateway sends are the ones `contracts.websocket` (and so its
AsyncAPI document) describes, and its close codes are the documented ones."""

from __future__ import annotations

import ast
import inspect
import json
import textwrap

import pytest

from contracts.base import utcnow
from contracts.export import websocket_asyncapi
from contracts.generation import GenerationProgressed
from contracts.ids import new_id
from contracts.jobs import JobFailed, JobKind
from contracts.registry import EVENTS
from contracts.websocket import SOCKET_PATHS, CloseCode, EventFrame, PongFrame, ReadyFrame
from gateway import ws
from gateway.events import Delivered


def test_an_event_frame_is_an_event_frame():
    event = GenerationProgressed(user_id=new_id(), job_id=new_id(), step=3, total_steps=4,
                                 occurred_at=utcnow())
    frame = json.loads(Delivered(7, event.subject(), event.model_dump_json().encode()).frame())
    parsed = EventFrame.model_validate(frame)
    assert (parsed.seq, parsed.type, parsed.domain) == (7, event.type, "generation")
    assert parsed.payload["job_id"] == event.job_id


def test_a_job_event_frame_names_the_jobs_domain():
    event = JobFailed(user_id=new_id(), job_id=new_id(), kind=JobKind.TRAINING,
                      code="internal", reason="x")
    frame = EventFrame.model_validate_json(
        Delivered(1, event.subject(), event.model_dump_json().encode()).frame())
    assert frame.domain == "training"
    document = websocket_asyncapi()
    allowed = document["components"]["schemas"]["EventFrame_training"]["properties"]["type"]
    assert "job.failed.v1" in allowed["enum"]


def _string_constants(func) -> list[str]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_the_control_frames_are_described():
    # `ready` is built from a dict literal and `pong` sent as a string in gateway/ws.py.
    ReadyFrame.model_validate({"type": "ready", "last_seq": 0, "replayed": 0})
    source = inspect.getsource(ws)
    assert '{"type": "ready", "last_seq"' in source and '"replayed"' in source
    pong = next(text for text in _string_constants(ws.EventStreamSession.answer_client)
                if "pong" in text)
    PongFrame.model_validate_json(pong)


def test_the_close_codes_are_the_documented_ones():
    used = {value for name, value in vars(ws).items()
            if name.startswith("CLOSE_") and isinstance(value, int)}
    assert used == {int(code) for code in CloseCode}
    assert set(websocket_asyncapi()["x-close-codes"]) == {str(int(c)) for c in CloseCode}


def test_the_socket_paths_are_the_gateways():
    assert set(SOCKET_PATHS) == set(ws.DOMAINS)
    assert SOCKET_PATHS == ws.DOMAINS


@pytest.mark.parametrize("path", sorted(SOCKET_PATHS))
def test_each_socket_lists_the_events_of_its_domain(path):
    document = websocket_asyncapi()
    channel = next(c for c in document["channels"].values() if c["address"] == path)
    frame = next(name for name in channel["messages"] if name.startswith("event_"))
    schema_ref = document["components"]["messages"][frame]["payload"]["$ref"]
    schema = document["components"]["schemas"][schema_ref.rsplit("/", 1)[-1]]
    types = set(schema["properties"]["type"]["enum"])
    domain = SOCKET_PATHS[path]
    expected = {name for name, model in EVENTS.items()
                if domain is None or model.domain == domain
                or name in ("job.failed.v1", "job.requeued.v1")}
    assert types == expected
