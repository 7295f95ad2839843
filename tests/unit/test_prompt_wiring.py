"""Settings choose the optimiser: offline alone, or an LLM backend in front of it."""

from __future__ import annotations

from prompt_service.bootstrap import OfflineOnly, build_optimizer
from prompt_service.config import PromptSettings
from prompt_service.engine import PromptRequest
from prompt_service.llm import LlmOptimizer


async def test_the_default_is_the_offline_engine():
    optimizer = build_optimizer(PromptSettings())
    assert isinstance(optimizer, OfflineOnly)
    result = await optimizer.optimize(PromptRequest("a cat"))
    assert result.engine == "offline" and "cat" in result.optimized


def test_an_openai_compatible_endpoint_is_put_in_front():
    optimizer = build_optimizer(PromptSettings(
        llm_backend="openai", llm_url="http://127.0.0.1:9", llm_model="qwen2.5-7b-instruct",
        llm_timeout_s=3,
    ))
    assert isinstance(optimizer, LlmOptimizer)
    assert optimizer.engine == "llm:openai/qwen2.5-7b-instruct"
