from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

from pydantic import Field, SecretStr

from terra.settings import RuntimeSettings


class LlmBackendKind(StrEnum):
    NONE = "none"
    OPENAI = "openai"  # any OpenAI-compatible chat endpoint: vLLM, Ollama, llama.cpp server
    TRANSFORMERS = "transformers"  # a local causal language model from a path


class PromptSettings(RuntimeSettings):
    uses_storage: ClassVar[bool] = False

    llm_backend: LlmBackendKind = Field(
        default=LlmBackendKind.NONE, description="none: the offline engine answers alone."
    )
    llm_url: str | None = Field(default=None, description="Base URL of the chat endpoint.")
    llm_model: str | None = Field(default=None, description="Model name sent to the endpoint.")
    llm_api_key: SecretStr | None = None
    llm_model_path: str | None = Field(default=None, description="Local model directory.")
    llm_device: str = "cpu"
    llm_dtype: str = "float32"
    llm_timeout_s: float = Field(default=10.0, gt=0)
    prompt_concurrency: int = Field(
        default=16, ge=1, description="Commands handled at once (their KV and stream round "
        "trips overlap; the optimisation itself takes about a millisecond of CPU)."
    )
