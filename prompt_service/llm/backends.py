"""Chat backends: an OpenAI-compatible HTTP endpoint, or a local transformers model.

Both answer `complete(messages, max_tokens=…) -> str` deterministically (temperature 0,
greedy) and raise `LlmError` with a short reason when they cannot. torch and
transformers are imported only when a local model is used.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import httpx

from prompt_service.llm.prompting import ChatMessage
from terra.errors import TerraError

BACKEND_KINDS = ("none", "openai", "transformers")
_DTYPES = ("float32", "float16", "bfloat16")


class LlmError(TerraError):
    """A backend could not produce an answer; the message is short enough for a user."""


class ChatBackend(Protocol):
    name: str

    async def complete(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> str: ...

    async def aclose(self) -> None: ...


class OpenAICompatibleBackend:
    """POST /v1/chat/completions, as vLLM, Ollama and llama.cpp's server speak it."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 10.0,
        seed: int = 0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        root = base_url.rstrip("/")
        root = root.removesuffix("/v1")  # accept both "http://host:8000" and ".../v1"
        self.name = f"openai/{model}"
        self.url = f"{root}/v1/chat/completions"
        self.model = model
        self.seed = seed
        self.timeout_s = timeout_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(timeout=timeout_s, headers=headers, transport=transport)

    async def complete(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> str:
        body = {
            "model": self.model,
            "messages": list(messages),
            "temperature": 0,
            "seed": self.seed,
            "max_tokens": max_tokens,
            "n": 1,
            "stream": False,
        }
        try:
            response = await self._client.post(self.url, json=body)
            response.raise_for_status()
        except httpx.TimeoutException as exc:
            raise LlmError(f"no answer within {self.timeout_s:g} s") from exc
        except httpx.HTTPStatusError as exc:
            raise LlmError(f"HTTP {exc.response.status_code}") from exc
        except httpx.HTTPError as exc:
            raise LlmError(f"cannot reach {self.url} ({type(exc).__name__})") from exc
        return _completion_text(response)

    async def aclose(self) -> None:
        await self._client.aclose()


def _completion_text(response: httpx.Response) -> str:
    try:
        choice = response.json()["choices"][0]
        content = choice["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise LlmError("malformed chat completion") from exc
    if not isinstance(content, str):
        raise LlmError("malformed chat completion")
    if choice.get("finish_reason") == "length":
        raise LlmError("answer cut off at max_tokens")
    return content


class TransformersBackend:
    """A causal language model from a local folder, generating greedily off the event loop.

    The model is loaded once (`load()`, or on first use); generations run one at a time
    in a worker thread and stop early when the caller gives up waiting.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        max_new_tokens: int = 512,
    ) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, not {dtype!r}")
        self.model_path = Path(model_path)
        self.name = f"transformers/{self.model_path.name}"
        self.device = device
        self.dtype = dtype
        self.max_new_tokens = max_new_tokens
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()  # one generation at a time; also guards loading

    def load(self) -> None:
        """Load tokenizer and model from the folder (no downloads). Idempotent; blocking."""
        with self._lock:
            self._load_locked()

    def _load_locked(self) -> None:
        if self._model is not None:
            return
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(
                self.model_path, dtype=getattr(torch, self.dtype), local_files_only=True
            )
        except (ImportError, OSError, ValueError) as exc:
            raise LlmError(f"cannot load a model from {self.model_path}: {exc}") from exc
        self._tokenizer = tokenizer
        self._model = model.to(self.device).eval()

    async def complete(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> str:
        stop = threading.Event()
        try:
            return await asyncio.to_thread(self._generate, list(messages), max_tokens, stop)
        except asyncio.CancelledError:
            stop.set()  # the thread cannot be killed; tell generate() to end at the next token
            raise

    async def aclose(self) -> None:
        await asyncio.to_thread(self._unload)

    def _unload(self) -> None:
        with self._lock:  # after any running generation
            self._model = None
            self._tokenizer = None

    def _generate(self, messages: list[ChatMessage], max_tokens: int, stop: threading.Event) -> str:
        with self._lock:
            if stop.is_set():
                return ""
            self._load_locked()
            try:
                return self._generate_locked(messages, max_tokens, stop)
            except (RuntimeError, ValueError) as exc:
                raise LlmError(f"generation failed: {exc}") from exc

    def _generate_locked(
        self, messages: list[ChatMessage], max_tokens: int, stop: threading.Event
    ) -> str:
        import torch
        from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

        class StopWhenAbandoned(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full(
                    (input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device
                )

        tokenizer, model = self._tokenizer, self._model
        templated = bool(getattr(tokenizer, "chat_template", None))
        inputs = tokenizer(
            self._prompt_text(messages, templated),
            return_tensors="pt",
            add_special_tokens=not templated,  # a chat template writes its own markers
        ).to(self.device)
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        config = GenerationConfig(
            do_sample=False,
            max_new_tokens=min(max_tokens, self.max_new_tokens),
            eos_token_id=eos,
            pad_token_id=pad[0] if isinstance(pad, list) else pad,
        )
        with torch.inference_mode():
            output = model.generate(
                **inputs,
                generation_config=config,
                stopping_criteria=StoppingCriteriaList([StopWhenAbandoned()]),
            )
        new_tokens = output[0, inputs["input_ids"].shape[1] :]
        return tokenizer.decode(new_tokens, skip_special_tokens=True)

    def _prompt_text(self, messages: list[ChatMessage], templated: bool) -> str:
        if templated:
            return self._tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        # Base models without a template: the instructions, then a slot to complete.
        system = "\n".join(m["content"] for m in messages if m["role"] == "system")
        user = "\n".join(m["content"] for m in messages if m["role"] == "user")
        return f"{system}\n\nPrompt: {user}\nRewritten prompt:"


def backend_from_settings(
    kind: str,
    *,
    url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    model_path: str | Path | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    timeout_s: float = 10.0,
) -> ChatBackend | None:
    """The backend that settings name, or None for "none". Nothing is loaded yet."""
    if kind == "none":
        return None
    if kind == "openai":
        if not url or not model:
            raise ValueError("the openai backend needs a url and a model name")
        return OpenAICompatibleBackend(url, model, api_key=api_key, timeout_s=timeout_s)
    if kind == "transformers":
        if not model_path:
            raise ValueError("the transformers backend needs a model_path")
        return TransformersBackend(model_path, device=device, dtype=dtype)
    raise ValueError(f"LLM backend must be one of {', '.join(BACKEND_KINDS)}, not {kind!r}")
