"""Hot swaps on a compiled transformer (tiny FLUX dev, torch.compile with inductor on the
CPU): the slot is sized to the contract's maximum rank, so any LoRA the trainer may write
swaps in place, with no new graph, and gives the resident path's output."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from torch._dynamo.utils import counters

from contracts.training import MAX_LORA_RANK
from fluxkit.tiny import random_lora_bytes
from generator_service.adapters import LoraRef
from generator_service.pipelines import FluxGenerator, GenerationRequest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CPU = torch.device("cpu")


def request(rank: int, loras: dict[int, bytes]) -> GenerationRequest:
    return GenerationRequest("a photo of sks person", model="dev",
                             lora=LoraRef(f"rank-{rank}", lambda: loras[rank]),
                             width=64, height=64, steps=2, seed=3)


def pixels(images) -> np.ndarray:
    return np.stack([np.asarray(image.image, dtype=np.int16) for image in images])


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process (a recompile is one more)."""
    return counters["stats"]["unique_graphs"]


def test_a_maximum_rank_lora_swaps_into_a_compiled_transformer_without_a_new_graph():
    torch._dynamo.reset()
    counters.clear()
    loras = {16: random_lora_bytes(16, seed=1), MAX_LORA_RANK: random_lora_bytes(
        MAX_LORA_RANK, seed=2)}
    compiled = FluxGenerator.load(None, device=CPU, dtype=torch.float32, profile="gpu",
                                  compile=True)
    resident = FluxGenerator.load(None, device=CPU, dtype=torch.float32, profile="gpu")
    assert compiled.hotswap and not resident.hotswap
    assert compiled.adapters["dev"].rank == MAX_LORA_RANK

    outputs = {16: compiled.generate(request(16, loras))}
    graphs = compiled_graphs()
    assert graphs >= 1  # compiled, with the first LoRA in the slot
    outputs[MAX_LORA_RANK] = compiled.generate(request(MAX_LORA_RANK, loras))
    again = compiled.generate(request(16, loras))
    assert compiled_graphs() == graphs, "a swap into the slot compiled a new graph"
    assert not counters["recompiles"]
    assert compiled.adapter_loads == 3
    assert np.array_equal(pixels(again), pixels(outputs[16]))

    for rank in (16, MAX_LORA_RANK):
        expected = pixels(resident.generate(request(rank, loras)))
        got = pixels(outputs[rank])
        # Compiled kernels round differently from eager ones: a level or so, no more.
        assert np.abs(got - expected).mean() < 0.5 and np.abs(got - expected).max() <= 2, rank
    assert np.abs(pixels(outputs[16]) - pixels(outputs[MAX_LORA_RANK])).mean() > 0.3
