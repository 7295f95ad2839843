"""LlmOptimizer with a scripted backend: what is asked, what is kept, when it falls back."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from contracts.prompt import ChangeKind, TokenCounts
from prompt_service.engine import ASPECTS, Optimization, PromptRequest
from prompt_service.llm import (
    LlmError,
    LlmOptimizer,
    OpenAICompatibleBackend,
    TransformersBackend,
    backend_from_settings,
    build_messages,
    split_answer,
)
from prompt_service.styles import STYLES

FOX = "a red fox in a snowy forest at dawn"
FOX_REWRITE = "A red fox stands in a snowy forest at dawn, soft golden light between the pines."
STALL_S = 60.0  # a backend that stalls: far past any time limit given here


class ScriptedBackend:
    """Answers with a fixed text (or raises, or stalls) and remembers what it was asked."""

    name = "scripted"

    def __init__(
        self, answer: str = FOX_REWRITE, *, error: Exception | None = None, delay_s: float = 0.0
    ) -> None:
        self.answer = answer
        self.error = error
        self.delay_s = delay_s
        self.calls: list[tuple[list, int]] = []

    async def complete(self, messages, *, max_tokens: int) -> str:
        self.calls.append((list(messages), max_tokens))
        await asyncio.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        return self.answer

    async def aclose(self) -> None:
        pass


class EchoOffline:
    """Stands in for OfflineEngine: echoes the prompt, labels its variants."""

    def __init__(self, language: str = "en") -> None:
        self.language = language
        self.requests: list[PromptRequest] = []

    def optimize(self, request: PromptRequest) -> Optimization:
        self.requests.append(request)
        return Optimization(
            original=request.prompt,
            optimized=request.prompt,
            variants=[f"{request.prompt} (offline {i})" for i in range(request.variants)],
            analysis={aspect: f"{aspect} of {request.prompt}" for aspect in ASPECTS},
            changes=[],
            tokens=TokenCounts(clip=1, t5=1),
            warnings=["offline warning"],
            engine="offline",
            language=self.language,
        )


def optimizer(backend: ScriptedBackend, timeout_s: float = 5.0) -> LlmOptimizer:
    return LlmOptimizer(backend, EchoOffline(), timeout_s)


async def test_a_good_rewrite_is_returned_with_the_backend_named():
    result = await optimizer(ScriptedBackend()).optimize(PromptRequest(FOX))
    assert result.engine == "llm:scripted"
    assert result.optimized == FOX_REWRITE
    assert result.variants == [FOX_REWRITE]
    assert result.original == FOX
    assert result.warnings == []
    assert result.analysis["subject"] == f"subject of {FOX_REWRITE}"  # described offline
    kinds = [change.kind for change in result.changes]
    assert kinds == [ChangeKind.REWORDED, ChangeKind.ADDED]
    assert "golden" in result.changes[1].text


async def test_the_request_asks_for_english_flux_prose_deterministically_bounded():
    backend = ScriptedBackend()
    await optimizer(backend).optimize(PromptRequest(FOX))
    ((messages, max_tokens),) = backend.calls
    system, user = messages
    assert user == {"role": "user", "content": FOX}
    assert "FLUX" in system["content"] and "translate it to English" in system["content"]
    assert "Answer with the prompt only" in system["content"]
    assert 0 < max_tokens <= 1000


def test_the_instructions_carry_the_style_and_the_trigger_rule():
    style = next(iter(STYLES.values()))
    system = build_messages(PromptRequest(FOX, style=style.name, trigger_word="ohwx"))[0]
    assert style.description in system["content"]
    assert '"ohwx" exactly once' in system["content"]


def test_several_variants_are_asked_for_as_numbered_lines():
    system = build_messages(PromptRequest(FOX, variants=3))[0]["content"]
    assert "exactly 3 lines numbered" in system
    answer = "Here you go:\n1. First prompt.\n2) Second prompt.\n**3.** Third prompt.\n"
    assert split_answer(answer, 3) == ["First prompt.", "Second prompt.", "Third prompt."]
    assert split_answer("One unnumbered prompt.", 3) == ["One unnumbered prompt."]


async def test_numbered_variants_become_the_variants():
    second = "At dawn, a red fox crosses a snowy forest under pale pink sky."
    backend = ScriptedBackend(f"1. {FOX_REWRITE}\n2. {second}")
    result = await optimizer(backend).optimize(PromptRequest(FOX, variants=2))
    assert result.variants == [FOX_REWRITE, second]
    assert result.optimized == FOX_REWRITE


async def test_missing_variants_are_filled_from_the_offline_engine_with_a_warning():
    backend = ScriptedBackend(f"1. {FOX_REWRITE}\n2. I'm sorry, that is all I have.")
    result = await optimizer(backend).optimize(PromptRequest(FOX, variants=3))
    assert result.engine == "llm:scripted"
    assert result.variants == [FOX_REWRITE, f"{FOX} (offline 0)", f"{FOX} (offline 1)"]
    assert "1 usable of 3" in result.warnings[0]


async def test_a_backend_error_falls_back_to_the_offline_result_saying_why():
    backend = ScriptedBackend(error=LlmError("HTTP 503"))
    result = await optimizer(backend).optimize(PromptRequest(FOX))
    assert result.engine == "offline"
    assert result.optimized == FOX
    assert result.warnings[0] == "offline warning"
    assert "LLM" in result.warnings[1] and "HTTP 503" in result.warnings[1]


async def test_an_unusable_answer_falls_back_with_the_reason():
    result = await optimizer(ScriptedBackend("I'm sorry, I can't do that.")).optimize(
        PromptRequest(FOX)
    )
    assert result.engine == "offline"
    assert "refusal" in result.warnings[-1]


async def test_a_slow_backend_falls_back_at_the_time_limit():
    # The backend would answer (and be accepted) after STALL_S: an offline answer within
    # the deadline is the 0.2 s limit cutting the wait short, however loaded the machine.
    slow = optimizer(ScriptedBackend(delay_s=STALL_S), timeout_s=0.2)
    result = await asyncio.wait_for(slow.optimize(PromptRequest(FOX)), STALL_S / 2)
    assert result.engine == "offline"
    assert "no answer within 0.2 s" in result.warnings[-1]


async def test_an_unexpected_backend_crash_still_answers_offline():
    result = await optimizer(ScriptedBackend(error=KeyError("boom"))).optimize(PromptRequest(FOX))
    assert result.engine == "offline"
    assert "KeyError" in result.warnings[-1]


async def test_a_prompt_the_offline_engine_reads_as_french_must_come_back_translated():
    french = "un renard roux dans une forêt enneigée à l'aube, 2 sapins"
    english = "A red fox in a snowy forest at dawn beside 2 fir trees, soft pink light."
    translate = LlmOptimizer(ScriptedBackend(english), EchoOffline("fr"), 5)
    result = await translate.optimize(PromptRequest(french))
    assert result.engine == "llm:scripted" and result.language == "fr"
    assert [change.kind for change in result.changes] == [ChangeKind.TRANSLATED]
    untranslated = LlmOptimizer(ScriptedBackend(french), EchoOffline("fr"), 5)
    assert (await untranslated.optimize(PromptRequest(french))).engine == "offline"


async def test_a_placed_trigger_word_is_reported():
    backend = ScriptedBackend(f"ohwx, {FOX_REWRITE}")
    result = await optimizer(backend).optimize(PromptRequest(FOX, trigger_word="ohwx"))
    assert result.engine == "llm:scripted"
    assert ChangeKind.TRIGGER_WORD in [change.kind for change in result.changes]


def test_settings_pick_the_backend():
    assert backend_from_settings("none") is None
    http = backend_from_settings("openai", url="http://llm:8000/v1/", model="qwen", timeout_s=3)
    assert isinstance(http, OpenAICompatibleBackend)
    assert http.url == "http://llm:8000/v1/chat/completions"
    local = backend_from_settings("transformers", model_path="/models/tiny", dtype="bfloat16")
    assert isinstance(local, TransformersBackend) and local.name == "transformers/tiny"


@pytest.mark.parametrize(
    ("kind", "kwargs", "message"),
    [
        ("gpt", {}, "must be one of"),
        ("openai", {"model": "qwen"}, "needs a url"),
        ("transformers", {}, "needs a model_path"),
        ("transformers", {"model_path": "/m", "dtype": "fp8"}, "dtype must be"),
    ],
)
def test_settings_that_cannot_work_are_refused(kind, kwargs, message):
    with pytest.raises(ValueError, match=message):
        backend_from_settings(kind, **kwargs)


def _completion(content: str, finish_reason: str = "stop") -> dict:
    return {
        "choices": [
            {"message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}
        ]
    }


async def test_the_http_backend_sends_a_deterministic_chat_request():
    seen: list[httpx.Request] = []

    def reply(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=_completion("A prompt."))

    backend = OpenAICompatibleBackend(
        "http://llm:8000", "qwen", api_key="k", transport=httpx.MockTransport(reply)
    )
    text = await backend.complete([{"role": "user", "content": "hi"}], max_tokens=50)
    await backend.aclose()
    assert text == "A prompt."
    body = json.loads(seen[0].content)
    assert str(seen[0].url) == "http://llm:8000/v1/chat/completions"
    assert seen[0].headers["authorization"] == "Bearer k"
    assert body["model"] == "qwen" and body["temperature"] == 0 and body["seed"] == 0
    assert body["max_tokens"] == 50 and body["messages"] == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (httpx.Response(200, json=_completion("A prompt cut", "length")), "cut off"),
        (httpx.Response(200, json={"error": "no choices"}), "malformed"),
        (httpx.Response(200, text="<html>"), "malformed"),
        (httpx.Response(401, json={}), "HTTP 401"),
    ],
)
async def test_the_http_backend_reports_unusable_responses(response, reason):
    backend = OpenAICompatibleBackend(
        "http://llm:8000", "qwen", transport=httpx.MockTransport(lambda request: response)
    )
    with pytest.raises(LlmError, match=reason):
        await backend.complete([{"role": "user", "content": "hi"}], max_tokens=50)
    await backend.aclose()
