"""TransformersBackend with a tiny randomly initialised Llama built here, no downloads.

Its output is noise, so the optimiser must fall back; the test checks that the model
was loaded, generated text and was judged, not what it wrote.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from prompt_service.engine import OfflineEngine, PromptRequest
from prompt_service.llm import LlmError, LlmOptimizer, TransformersBackend, build_messages
from prompt_service.llm.prompting import max_tokens_for

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TOKEN_S = 0.05  # the pace forced on the model where a generation must take long

FOX = "a red fox in a snowy forest at dawn"
WORDS = [
    "a",
    "red",
    "fox",
    "in",
    "snowy",
    "forest",
    "at",
    "dawn",
    "the",
    "light",
    "soft",
    "golden",
    "pines",
    "photo",
    "of",
    "with",
    "and",
    "stands",
    "sky",
    "cat",
    "blue",
    "sofa",
    "window",
    "prompt",
    "rewritten",
    "flux",
    "english",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def build_tiny_llama(folder, *, chat_template: str | None) -> None:
    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    vocab = {word: i for i, word in enumerate(specials + sorted(set(WORDS)))}
    word_level = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    word_level.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=word_level,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
    )
    if chat_template:
        tokenizer.chat_template = chat_template
    config = transformers.LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@pytest.fixture(scope="module", params=["chat-template", "plain"])
def tiny_model(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"tiny-llama-{request.param}")
    build_tiny_llama(
        folder, chat_template=CHAT_TEMPLATE if request.param == "chat-template" else None
    )
    return folder


async def test_the_local_model_generates_text(tiny_model):
    backend = TransformersBackend(tiny_model, device="cpu", dtype="float32", max_new_tokens=12)
    text = await backend.complete(build_messages(PromptRequest(FOX)), max_tokens=400)
    await backend.aclose()
    assert isinstance(text, str) and text.strip()
    assert len(text.split()) <= 12


async def test_noise_from_the_local_model_falls_back_to_the_offline_engine(tiny_model):
    backend = TransformersBackend(tiny_model, max_new_tokens=12)
    optimizer = LlmOptimizer(backend, OfflineEngine(), timeout_s=30)
    await optimizer.start()
    result = await optimizer.optimize(PromptRequest(FOX))
    await optimizer.aclose()
    assert result.engine == "offline"
    assert result.optimized == OfflineEngine().optimize(PromptRequest(FOX)).optimized
    assert "LLM rewrite failed" in result.warnings[-1]


async def test_a_missing_model_folder_is_a_clear_error(tmp_path):
    backend = TransformersBackend(tmp_path / "absent")
    with pytest.raises(LlmError, match="cannot load a model"):
        await backend.complete(build_messages(PromptRequest(FOX)), max_tokens=8)


async def test_an_abandoned_generation_stops_and_frees_the_model(tiny_model):
    backend = TransformersBackend(tiny_model, max_new_tokens=3000)
    optimizer = LlmOptimizer(backend, OfflineEngine(), timeout_s=0.2)
    await optimizer.start()
    # A token every TOKEN_S: the answer takes seconds however fast this machine is (a tiny
    # model alone can finish its few dozen tokens inside the 0.2 s limit).
    slow = backend._model.register_forward_pre_hook(lambda *_: time.sleep(TOKEN_S))
    try:
        result = await optimizer.optimize(PromptRequest(FOX))
        assert "no answer within 0.2 s" in result.warnings[-1]
        # At the same pace, a run queued behind the abandoned one would wait out its
        # tokens (20 s); two tokens of its own take a tenth of a second.
        abandoned_run_s = max_tokens_for(PromptRequest(FOX)) * TOKEN_S
        await asyncio.wait_for(backend.complete(build_messages(PromptRequest(FOX)),
                                                max_tokens=2), abandoned_run_s / 4)
    finally:
        slow.remove()
    await optimizer.aclose()
