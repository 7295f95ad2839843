"""Generator pieces without a pipeline: the adapter cache's bounds, request checks and
defaults, PNG metadata. (Memory profiles are the kit's: tests/unit/test_fluxkit.py.)"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from PIL import Image

from contracts.generation import MODEL_DEFAULTS, BaseModelName
from generator_service.adapters import AdapterCache, AdapterError, LoraRef
from generator_service.pipelines import FluxGenerator, GenerationRequest, batch_key
from generator_service.render import png_bytes, png_parameters


def counting_ref(adapter_id: str, size: int, calls: list[str]) -> LoraRef:
    def load() -> bytes:
        calls.append(adapter_id)
        return bytes(size)
    return LoraRef(adapter_id, load)


def test_adapter_cache_fetches_once_and_evicts_least_recently_used_by_count():
    calls: list[str] = []
    evicted: list[str] = []
    cache = AdapterCache(max_adapters=2, max_bytes=1000)
    cache.on_evict(evicted.append)
    cache.get(counting_ref("a", 10, calls))
    cache.get(counting_ref("b", 10, calls))
    cache.get(counting_ref("a", 10, calls))  # a hit, and now the most recently used
    cache.get(counting_ref("c", 10, calls))
    assert calls == ["a", "b", "c"] and cache.fetches == 3
    assert evicted == ["b"] and "a" in cache and "b" not in cache and len(cache) == 2


def test_adapter_cache_is_bounded_by_bytes():
    calls: list[str] = []
    cache = AdapterCache(max_adapters=10, max_bytes=100)
    for name in "abc":
        cache.get(counting_ref(name, 40, calls))
    assert cache.total_bytes == 80 and list(cache._entries) == ["b", "c"]
    with pytest.raises(AdapterError, match="over the adapter cache's bound"):
        cache.get(counting_ref("huge", 101, calls))
    assert cache.evict("c") and not cache.evict("c")


def test_lora_bytes_get_a_content_id():
    assert LoraRef.of_bytes(b"x").adapter_id == LoraRef.of_bytes(b"x").adapter_id
    assert LoraRef.of_bytes(b"x").adapter_id != LoraRef.of_bytes(b"y").adapter_id
    assert LoraRef.of_bytes(b"x", "model-1").adapter_id == "model-1"


@pytest.mark.parametrize("size", [{"width": 1000}, {"height": 72 + 1}, {"width": 0}])
def test_sizes_must_be_multiples_of_16(size):
    with pytest.raises(ValueError, match="multiple of 16"):
        GenerationRequest("a cat", **size)


def test_request_checks():
    with pytest.raises(ValueError, match="unknown model"):
        GenerationRequest("a cat", model="pro")
    with pytest.raises(ValueError, match="takes no guidance"):
        GenerationRequest("a cat", model="schnell", guidance=3.5)
    with pytest.raises(ValueError, match="num_images"):
        GenerationRequest("a cat", num_images=0)
    assert GenerationRequest("a cat", model="dev", lora=b"x").adapter_id.startswith("sha256-")


def test_model_defaults_are_the_contracts():
    for model in BaseModelName:
        defaults = MODEL_DEFAULTS[model]
        request = GenerationRequest("a cat", model=model.value)
        assert request.resolved_steps == defaults["steps"]
        assert request.resolved_guidance == defaults["guidance"]
    # schnell takes no guidance: None (a 0 means the same); dev's is overridable
    assert GenerationRequest("a cat", model="schnell", guidance=0).resolved_guidance is None
    assert GenerationRequest("a cat", model="dev", guidance=2.0).resolved_guidance == 2.0
    assert GenerationRequest("a cat", model="dev", steps=3).resolved_steps == 3


def test_batch_key_compares_resolved_settings():
    a = GenerationRequest("a cat", model="schnell", seed=1)
    b = GenerationRequest("a dog", model="schnell", steps=MODEL_DEFAULTS[BaseModelName.SCHNELL][
        "steps"], guidance=0, seed=9, num_images=3)
    assert batch_key(a) == batch_key(b)
    assert batch_key(a) != batch_key(GenerationRequest("a cat", model="schnell", width=512))


def test_the_hot_swap_slot_is_sized_to_the_contracts_maximum_rank():
    import inspect

    from contracts.training import MAX_LORA_RANK
    from generator_service.adapters import AdapterSlot

    assert inspect.signature(FluxGenerator).parameters["slot_rank"].default == MAX_LORA_RANK
    assert inspect.signature(AdapterSlot).parameters["rank"].default == MAX_LORA_RANK


def test_png_metadata_round_trips():
    image = Image.new("RGB", (32, 16), (10, 20, 30))
    parameters = {"prompt": "a cat, 東京 at night", "model": "dev", "seed": 7, "steps": 28,
                  "guidance": 3.5, "lora_id": "m1", "size": "32x16", "lora_scale": None}
    data = png_bytes(image, parameters)
    assert data.startswith(b"\x89PNG")
    text = png_parameters(data)
    assert text == {"prompt": "a cat, 東京 at night", "model": "dev", "seed": "7",
                    "steps": "28", "guidance": "3.5", "lora_id": "m1", "size": "32x16",
                    "Software": "terra"}
    assert b"tEXt" in data and b"iTXt" in data  # non-Latin-1 prompt as UTF-8
