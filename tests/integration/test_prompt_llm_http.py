"""LlmOptimizer over HTTP against a small OpenAI-compatible server started here.

The server answers canned completions chosen by the user's prompt, so each test picks
a behaviour (good rewrite, refusal, chatter, lost word, stall, HTTP 500, translation)
by the prompt it sends. These check wiring, validation and fallback, not prose.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from contracts.prompt import ChangeKind
from prompt_service.engine import OfflineEngine, PromptRequest
from prompt_service.llm import LlmOptimizer, OpenAICompatibleBackend

pytestmark = pytest.mark.integration

FOX = "a red fox in a snowy forest at dawn"
FOX_REWRITE = (
    "A red fox stands in a snowy forest at dawn, soft golden light falling between "
    "the pines, a calm wildlife photograph."
)
FOX_SECOND = "At dawn a red fox crosses a snowy forest, pale pink sky, wide shot."
FRENCH = "Un chat roux dort sur un canapé en velours bleu près d'une fenêtre, 2 coussins"
FRENCH_IN_ENGLISH = (
    "A ginger cat sleeps on a blue velvet sofa near a window with 2 cushions, soft morning light."
)

STALL_S = 3.0  # the stalled server's delay: six times the optimiser's limit (the `llm` fixture)
# user prompt -> (status, answer text, seconds to stall before answering)
SCRIPT: dict[str, tuple[int, str, float]] = {
    FOX: (200, FOX_REWRITE, 0),
    "a knight on a horse": (200, "I'm sorry, but I can't help with that request.", 0),
    "a lighthouse on a cliff": (
        200,
        (
            "Sure! Here is your prompt:\n\nA lighthouse on a cliff above a stormy sea.\n\n"
            "I added the sea to give the scene some drama."
        ),
        0,
    ),
    "a blue vase with tulips on a wooden table": (
        200,
        "A vase with tulips on a table, soft window light, still life photograph.",
        0,
    ),
    "a snail crossing a garden path": (200, "A snail crossing a garden path.", STALL_S),
    "a robot repairing a bicycle": (500, "", 0),
    FRENCH: (200, FRENCH_IN_ENGLISH, 0),
}


class ChatCompletions(BaseHTTPRequestHandler):
    requests: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append({"path": self.path, "body": body})
        prompt = body["messages"][-1]["content"]
        status, text, stall_s = SCRIPT[prompt]
        if prompt == FOX and "numbered" in body["messages"][0]["content"]:
            text = f"1. {FOX_REWRITE}\n2. {FOX_SECOND}"
        time.sleep(stall_s)
        reply = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
        }
        payload = json.dumps(reply if status == 200 else {"error": "boom"}).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting: that is the timeout test

    def log_message(self, format: str, *args) -> None:
        pass


@pytest.fixture(scope="module")
def chat_server() -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ChatCompletions)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
async def llm(chat_server):
    backend = OpenAICompatibleBackend(chat_server, "tiny-chat", timeout_s=5)
    optimizer = LlmOptimizer(backend, OfflineEngine(), timeout_s=0.5)
    yield optimizer
    await optimizer.aclose()


async def test_a_good_rewrite_is_accepted(llm):
    result = await llm.optimize(PromptRequest(FOX))
    assert result.engine == "llm:openai/tiny-chat"
    assert result.optimized == FOX_REWRITE
    assert result.variants == [FOX_REWRITE]
    assert result.warnings == []
    sent = ChatCompletions.requests[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["temperature"] == 0 and sent["body"]["model"] == "tiny-chat"


async def test_variants_come_from_one_numbered_answer(llm):
    result = await llm.optimize(PromptRequest(FOX, variants=2))
    assert result.variants == [FOX_REWRITE, FOX_SECOND]


async def assert_offline_fallback(llm, prompt: str, reason: str) -> None:
    result = await llm.optimize(PromptRequest(prompt))
    assert result.engine == "offline"
    assert result.optimized == OfflineEngine().optimize(PromptRequest(prompt)).optimized
    assert "LLM" in result.warnings[-1] and reason in result.warnings[-1]


async def test_a_refusal_falls_back_to_the_offline_engine(llm):
    await assert_offline_fallback(llm, "a knight on a horse", "refusal")


async def test_chatter_falls_back_to_the_offline_engine(llm):
    await assert_offline_fallback(llm, "a lighthouse on a cliff", "explanation")


async def test_a_dropped_content_word_falls_back_to_the_offline_engine(llm):
    await assert_offline_fallback(llm, "a blue vase with tulips on a wooden table", "dropped")


async def test_a_stalled_server_falls_back_within_the_time_limit(llm):
    # Its late answer would be accepted: the offline result, before the server answers,
    # is the optimiser's limit cutting the wait short.
    await asyncio.wait_for(
        assert_offline_fallback(llm, "a snail crossing a garden path", "no answer within"),
        STALL_S)


async def test_an_http_error_falls_back_to_the_offline_engine(llm):
    await assert_offline_fallback(llm, "a robot repairing a bicycle", "HTTP 500")


async def test_a_french_prompt_answered_in_english_is_accepted_as_a_translation(llm):
    result = await llm.optimize(PromptRequest(FRENCH))
    assert result.engine == "llm:openai/tiny-chat"
    assert result.optimized == FRENCH_IN_ENGLISH
    assert result.language == "fr"
    assert ChangeKind.TRANSLATED in [change.kind for change in result.changes]
    assert not any("English" in warning for warning in result.warnings)


async def test_an_unreachable_server_falls_back():
    closed_port = OpenAICompatibleBackend("http://127.0.0.1:9", "tiny-chat", timeout_s=1)
    optimizer = LlmOptimizer(closed_port, OfflineEngine(), timeout_s=2)
    result = await optimizer.optimize(PromptRequest(FOX))
    await optimizer.aclose()
    assert result.engine == "offline"
    assert "cannot reach" in result.warnings[-1]
