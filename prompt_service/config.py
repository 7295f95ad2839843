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
        default=LlmBackendKind.NONE, description="none: the offline engine answers alone; "
        "openai: an OpenAI-compatible chat endpoint (vLLM, Ollama, llama.cpp server); "
        "transformers: a local model folder (the ml extra)."
    )
    llm_url: str | None = Field(
        default=None, description="Base URL of the chat endpoint, with or without /v1 "
        "(openai: required).")
    llm_model: str | None = Field(
        default=None, description="Model name sent to the endpoint (openai: required).")
    llm_api_key: SecretStr | None = Field(
        default=None, description="Sent as Authorization: Bearer (openai); leave it unset "
        "when the endpoint needs none.")
    llm_model_path: str | None = Field(
        default=None, description="Local model directory (transformers: required; "
        "nothing is downloaded).")
    llm_device: str = Field(default="cpu", description="Torch device of the local model.")
    llm_dtype: str = Field(default="float32", description="float32, float16 or bfloat16.")
    llm_timeout_s: float = Field(default=10.0, gt=0, description="Longest wait for an LLM "
                                 "answer; after it the offline result is used.")
    prompt_concurrency: int = Field(
        default=16, ge=1, description="Commands handled at once (their KV and stream round "
        "trips overlap; the optimisation itself takes about a millisecond of CPU)."
    )
