"""Optional LLM backends for the prompt optimiser.

`LlmOptimizer(backend, offline, timeout_s)` asks a chat backend for rewrites, checks
them (`check_rewrite`) and answers with the offline engine's result, plus a warning,
whenever the backend fails, times out or answers something unusable.
"""

from prompt_service.llm.backends import (
    BACKEND_KINDS,
    ChatBackend,
    LlmError,
    OpenAICompatibleBackend,
    TransformersBackend,
    backend_from_settings,
)
from prompt_service.llm.checks import check_rewrite, clean_rewrite, tidy_rewrite
from prompt_service.llm.optimizer import LlmOptimizer
from prompt_service.llm.prompting import ChatMessage, build_messages, split_answer

__all__ = [
    "BACKEND_KINDS",
    "ChatBackend",
    "ChatMessage",
    "LlmError",
    "LlmOptimizer",
    "OpenAICompatibleBackend",
    "TransformersBackend",
    "backend_from_settings",
    "build_messages",
    "check_rewrite",
    "clean_rewrite",
    "split_answer",
    "tidy_rewrite",
]
