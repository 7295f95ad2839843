"""Prompt optimisation through the gateway, NATS and a real prompt_service process."""

from __future__ import annotations

import asyncio
import json

import pytest
from nats.js.errors import NotFoundError

from contracts.ids import new_id
from contracts.prompt import OptimizePrompt
from contracts.topology import (
    EVENTS,
    MODELS_KV,
    PROMPT_COMMANDS,
    model_key,
    user_events_filter,
)
from contracts.training import ModelRecord, ModelStatus
from tests.e2e.client import open_socket, receive_events, register

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def prompt_service(stack):
    return stack.start_service("prompt", "prompt_service")


@pytest.fixture
async def alice(http, prompt_service):
    return await register(http)


async def optimize(http, account, **body):
    params = {"wait": "true"} if body.pop("wait", True) else {}
    return await http.post("/api/prompt/optimize", json=body, params=params,
                           headers=account.headers)


async def events_of(nc, user_id: str, job_id: str) -> list[dict]:
    """Every event the stream holds about one job."""
    js, found, seq = nc.jetstream(), [], 1
    while True:
        try:
            raw = await js.get_msg(EVENTS.name, seq=seq, subject=user_events_filter(user_id),
                                   next=True)
        except NotFoundError:
            return found
        payload = json.loads(raw.data)
        if payload.get("job_id") == job_id:
            found.append(payload)
        seq = raw.seq + 1


async def test_styles_are_listed_with_descriptions(http):
    styles = (await http.get("/api/prompt/styles")).json()
    names = {style["name"] for style in styles}
    assert {"photo", "portrait", "cinematic", "anime", "oil_painting", "watercolour",
            "3d_render", "pixel_art"} <= names
    assert all(style["description"] and style["label"] for style in styles)


async def test_optimize_and_wait_for_the_result(http, alice):
    response = await optimize(http, alice, prompt="  a cat on a windowsill  ", style="photo")
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["original"] == "a cat on a windowsill"
    assert "cat" in result["optimized"] and "windowsill" in result["optimized"]
    assert result["engine"] == "offline" and result["variants"][0] == result["optimized"]
    assert set(result["analysis"]) >= {"subject", "lighting", "text"}
    assert 0 < result["tokens"]["clip"] <= 77 and result["tokens"]["t5"] > 0
    assert all({"kind", "text", "reason"} <= set(change) for change in result["changes"])

    job = (await http.get(f"/api/jobs/{result['job_id']}", headers=alice.headers)).json()
    assert job["status"] == "succeeded" and job["result"]["optimized"] == result["optimized"]


async def test_the_result_arrives_on_the_prompt_socket(http, gateway_url, alice):
    socket = (await open_socket(gateway_url, alice, "/ws/prompt")).socket
    try:
        response = await optimize(http, alice, prompt="a lighthouse in a storm", variants=3,
                                  wait=False)
        assert response.status_code == 202
        job_id = response.json()["job_id"]
        [frame] = await receive_events(socket, 1)
        assert frame["type"] == "prompt.optimized.v1" and frame["job_id"] == job_id
        variants = frame["payload"]["variants"]
        assert len(variants) == 3 and len(set(variants)) == 3
    finally:
        await socket.close()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 2001}, "prompt"),
        ({"prompt": "a cat", "style": "vaporwave-deluxe"}, "style"),
        ({"prompt": "a cat", "variants": 5}, "variants"),
        ({"prompt": "a cat", "variants": 0}, "variants"),
    ],
)
async def test_invalid_requests_name_the_field(http, alice, body, field):
    response = await optimize(http, alice, **body)
    assert response.status_code == 422
    assert field in {error["field"] for error in response.json()["errors"]}


async def test_the_trigger_word_of_my_model_is_placed_once(http, nc, alice):
    bob = await register(http)
    kv = await nc.jetstream().key_value(MODELS_KV.bucket)
    mine = ModelRecord(model_id=new_id(), user_id=alice.user_id, trigger_word="zqx",
                       status=ModelStatus.READY)
    theirs = ModelRecord(model_id=new_id(), user_id=bob.user_id, trigger_word="brr",
                         status=ModelStatus.READY)
    for model in (mine, theirs):
        await kv.put(model_key(model.user_id, model.model_id), model.model_dump_json().encode())

    response = await optimize(http, alice, prompt="a portrait of me hiking in the alps",
                              for_model=mine.model_id)
    assert response.status_code == 200, response.text
    assert response.json()["optimized"].lower().split().count("zqx") == 1

    other = await optimize(http, alice, prompt="a portrait", for_model=theirs.model_id)
    assert other.status_code == 404


async def test_a_retried_request_runs_the_job_once(http, nc, alice):
    headers = {**alice.headers, "Idempotency-Key": f"retry-{new_id()}"}
    first = await http.post("/api/prompt/optimize?wait=true", json={"prompt": "a red fox"},
                            headers=headers)
    again = await http.post("/api/prompt/optimize?wait=true", json={"prompt": "a red fox"},
                            headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    produced = [e for e in await events_of(nc, alice.user_id, first.json()["job_id"])
                if e["type"] == "prompt.optimized.v1"]
    assert len(produced) == 1


async def test_accepting_records_what_the_user_kept(http, alice):
    result = (await optimize(http, alice, prompt="a bowl of ramen")).json()
    job = result["job_id"]

    async def accept(**body) -> dict:
        response = await http.post(f"/api/prompt/{job}/accept", json=body,
                                   headers=alice.headers)
        if response.status_code == 200:
            return response.json()
        # 202: recorded later (a busy machine); the job's result says what was recorded.
        assert response.status_code == 202, response.text
        for _ in range(100):
            stored = (await http.get(f"/api/jobs/{job}", headers=alice.headers)).json()
            if stored["result"].get("final_prompt") == (body.get("final_prompt")
                                                        or result["optimized"]):
                return {"job_id": job, "decision": stored["result"]["decision"],
                        "final_prompt": stored["result"]["final_prompt"]}
            await asyncio.sleep(0.1)
        raise AssertionError("the decision was never recorded")

    assert await accept() == {"job_id": job, "decision": "unchanged",
                              "final_prompt": result["optimized"]}
    assert (await accept(final_prompt="a bowl of ramen, steam rising"))["decision"] == "edited"
    assert (await accept(final_prompt="a bowl of ramen"))["decision"] == "rejected"
    stored = (await http.get(f"/api/jobs/{job}", headers=alice.headers)).json()["result"]
    assert stored["decision"] == "rejected" and stored["final_prompt"] == "a bowl of ramen"


async def test_someone_elses_job_cannot_be_accepted(http, alice):
    bob = await register(http)
    job = (await optimize(http, alice, prompt="a bowl of ramen")).json()["job_id"]
    response = await http.post(f"/api/prompt/{job}/accept", json={}, headers=bob.headers)
    assert response.status_code == 404


async def test_operators_can_drive_it_over_nats_alone(nc, alice):
    """What `nats req terra.cmd.prompt.optimize '{…}'` does: the stream acks, the event follows."""
    job_id = new_id()
    body = json.dumps({"type": "prompt.optimize.v1", "job_id": job_id,
                       "user_id": alice.user_id, "prompt": "a tiny robot"}).encode()
    ack = json.loads((await nc.request("terra.cmd.prompt.optimize", body, timeout=5)).data)
    assert ack["stream"] == "TERRA_PROMPT_COMMANDS"
    for _ in range(50):
        found = await events_of(nc, alice.user_id, job_id)
        if found:
            break
        await asyncio.sleep(0.1)
    assert [e["type"] for e in found] == ["prompt.optimized.v1"]


async def handled(js, stream: str, seqs: list[int], timeout_s: float = 30.0) -> None:
    """Until the work queue `stream` holds none of `seqs`: a worker handled each and acked
    it (a work queue drops a message at its ack; a failed one stays, to be retried)."""
    async with asyncio.timeout(timeout_s):
        for seq in seqs:
            while True:
                try:
                    await js.get_msg(stream, seq)
                except NotFoundError:
                    break
                await asyncio.sleep(0.05)


async def test_a_redelivered_command_does_not_run_twice(http, nc, alice):
    command = OptimizePrompt(job_id=new_id(), user_id=alice.user_id, prompt="a paper boat")
    js = nc.jetstream()
    # The same command delivered twice (past the duplicate window: a new Nats-Msg-Id).
    stored = [await js.publish(command.subject(), command.model_dump_json().encode(),
                               headers={"Nats-Msg-Id": f"{command.message_id}-{attempt}"})
              for attempt in ("first", "second")]
    assert not any(ack.duplicate for ack in stored)  # two deliveries, not one deduplicated
    await handled(js, PROMPT_COMMANDS.name, [ack.seq for ack in stored])

    # Both were handled, and the job ran to one ending: one event, one result recorded.
    [produced] = await events_of(nc, alice.user_id, command.job_id)
    assert produced["type"] == "prompt.optimized.v1"
    job = (await http.get(f"/api/jobs/{command.job_id}", headers=alice.headers)).json()
    assert job["status"] == "succeeded" and job["result"]["optimized"] == produced["optimized"]


async def test_a_malformed_command_fails_the_job_with_a_reason(nc, alice):
    job_id = new_id()
    body = json.dumps({"type": "prompt.optimize.v1", "job_id": job_id,
                       "user_id": alice.user_id, "prompt": "", "variants": 9}).encode()
    await nc.jetstream().publish("terra.cmd.prompt.optimize", body)
    for _ in range(50):
        found = await events_of(nc, alice.user_id, job_id)
        if found:
            break
        await asyncio.sleep(0.1)
    [failed] = found
    assert failed["type"] == "job.failed.v1" and failed["code"] == "invalid_input"
    assert "prompt" in failed["reason"] and "variants" in failed["reason"]
