"""Generator pieces without a pipeline: memory profiles and their VRAM table, the adapter
cache's bounds, request checks, PNG metadata."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")

import torch
from PIL import Image

from generator_service.adapters import AdapterCache, AdapterError, LoraRef
from generator_service.memory import (
    EIGHT_GB,
    MemoryProfile,
    MemoryProfileError,
    choose_profile,
    expected_peak_vram_gb,
    parse_profile,
    resolve_profile,
)
from generator_service.pipelines import GenerationRequest
from generator_service.render import png_bytes, png_parameters


def test_profiles_parse_from_settings():
    assert parse_profile("gpu") == MemoryProfile("gpu", "none")
    assert parse_profile("model_offload+int8") == MemoryProfile("model_offload", "int8")
    assert parse_profile(" Group_Offload+float8 ").name == "group_offload+float8"
    assert parse_profile("auto") is None
    assert parse_profile("8gb") == EIGHT_GB and EIGHT_GB.quantized
    with pytest.raises(MemoryProfileError, match="unknown placement"):
        parse_profile("everywhere")
    with pytest.raises(MemoryProfileError, match="unknown weights"):
        parse_profile("gpu+int4")


def test_expected_peak_vram_follows_component_sizes():
    table = {name: expected_peak_vram_gb(parse_profile(name)) for name in (
        "gpu", "gpu+float8", "model_offload", "model_offload+int8", "group_offload",
        "group_offload+int8", "sequential_offload")}
    assert table == {
        "gpu": 59.5, "gpu+float8": 31.0, "model_offload": 25.8, "model_offload+int8": 13.9,
        "group_offload": 3.5, "group_offload+int8": 2.8, "sequential_offload": 2.1,
    }
    assert expected_peak_vram_gb(MemoryProfile("gpu"), resident_models=1) == 35.7
    assert expected_peak_vram_gb(EIGHT_GB) < 8  # the 8 GB profile fits an 8 GB card


def test_auto_picks_the_fastest_profile_that_fits():
    assert choose_profile(80).name == "gpu"
    assert choose_profile(40, eight_bit="float8").name == "gpu+float8"
    assert choose_profile(30).name == "model_offload"
    assert choose_profile(16).name == "model_offload+int8"
    assert choose_profile(8).name == "group_offload"
    assert choose_profile(4.5).name == "group_offload+int8"
    assert choose_profile(2).name == "sequential_offload+int8"


def test_profiles_needing_cuda_are_refused_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_profile("auto", cpu) == MemoryProfile("gpu")
    with pytest.raises(MemoryProfileError, match="needs a CUDA device"):
        resolve_profile("sequential_offload", cpu)
    assert resolve_profile("group_offload+int8", cpu).name == "group_offload+int8"


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
    with pytest.raises(ValueError, match="no guidance"):
        GenerationRequest("a cat", model="schnell", guidance=3.5)
    with pytest.raises(ValueError, match="num_images"):
        GenerationRequest("a cat", num_images=0)
    assert GenerationRequest("a cat", model="dev", lora=b"x").adapter_id.startswith("sha256-")


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
