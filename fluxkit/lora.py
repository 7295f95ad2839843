"""The LoRA file format: what the trainer writes and the generator loads, as bytes.

A LoRA is diffusers' own file (what `FluxPipeline.save_lora_weights` writes): safetensors
with `transformer.<module>.lora_A.weight` / `lora_B.weight` tensors and the peft adapter
config (rank, alpha, target modules) as JSON under `lora_adapter_metadata` in the header,
its keys prefixed `transformer.`. Written and read here in memory, one way, with no
temporary folder; `tests/unit/test_fluxkit.py` checks these against diffusers' own writer
(the same header, the same tensor bytes) and reader (the same tensors and config).

The LoRA's numbers live here, with the model they describe: the attention projections
every LoRA adapts (`TARGET_MODULES`) and the largest rank (`MAX_RANK`), also the size of
the generator's hot-swap slot. The API's limits repeat them in the message schemas (which
import no ML code); tests/unit/test_fluxkit.py holds the two copies equal.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import safetensors.torch
import torch
from diffusers import FluxPipeline
from peft.utils import get_peft_model_state_dict

WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # diffusers' name when a LoRA is a file
METADATA_KEY = "lora_adapter_metadata"  # diffusers' header key for the adapter config
PREFIX = "transformer"  # FluxPipeline's LoRA-loadable component
# FLUX's attention projections: query, key, value and (joint blocks) output.
TARGET_MODULES: tuple[str, ...] = ("to_k", "to_q", "to_v", "to_out.0")
# The largest rank the trainer writes and the generator's slot holds (a compiled or
# quantized transformer hot-swaps every LoRA into one slot of exactly this rank).
MAX_RANK = 128


class LoraFormatError(ValueError):
    """Bytes that are not a LoRA this kit can read."""


@dataclass(frozen=True)
class LoraWeights:
    """A parsed LoRA: diffusers' state dict and the adapter config it was saved with."""

    state_dict: Mapping[str, torch.Tensor]  # `transformer.…lora_A.weight`, …
    metadata: Mapping[str, Any] | None  # `transformer.r`, `transformer.lora_alpha`, …
    network_alphas: Mapping[str, torch.Tensor] | None = None  # other trainers' files only

    @property
    def rank(self) -> int:
        return max(t.shape[0] for k, t in self.state_dict.items() if "lora_A" in k)

    def scaled(self, scale: float) -> LoraWeights:
        """The same LoRA with its effect multiplied by `scale` (folded into `lora_B`)."""
        if scale == 1.0:
            return self
        state = {k: v * scale if "lora_B" in k else v for k, v in self.state_dict.items()}
        return LoraWeights(state, self.metadata, self.network_alphas)


def lora_to_bytes(layers: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> bytes:
    """A transformer's LoRA layers (peft names, no adapter name) and its peft config
    (`LoraConfig.to_dict()`) as a LoRA file."""
    tensors = {f"{PREFIX}.{name}": tensor.detach().to("cpu").contiguous()
               for name, tensor in layers.items()}
    packed = {f"{PREFIX}.{key}": value for key, value in config.items()}
    header = json.dumps(packed, indent=2, sort_keys=True, default=_jsonable)
    return safetensors.torch.save(tensors, metadata={"format": "pt", METADATA_KEY: header})


def transformer_lora_bytes(transformer: torch.nn.Module, adapter_name: str = "default") -> bytes:
    """The LoRA adapter `adapter_name` of a peft-wrapped transformer as a LoRA file."""
    layers = get_peft_model_state_dict(transformer, adapter_name=adapter_name)
    return lora_to_bytes(layers, transformer.peft_config[adapter_name].to_dict())


def read_lora(data: bytes) -> LoraWeights:
    """A LoRA file's tensors and adapter config; `LoraFormatError` when it is not one."""
    try:
        tensors = safetensors.torch.load(data)
        state_dict, alphas = FluxPipeline.lora_state_dict(tensors, return_alphas=True)
        header = _header(data).get("__metadata__") or {}
        metadata = json.loads(header[METADATA_KEY]) if METADATA_KEY in header else None
    except Exception as exc:  # safetensors, json and diffusers raise many kinds
        raise LoraFormatError(f"not a readable LoRA file: {exc}") from exc
    if not any("lora_A" in key for key in state_dict):
        raise LoraFormatError("not a readable LoRA file: it has no LoRA layers")
    return LoraWeights(state_dict, metadata, alphas or None)


def load_lora(pipeline: FluxPipeline, lora: bytes | LoraWeights, *, adapter_name: str,
              hotswap: bool = False) -> None:
    """Put a LoRA into the pipeline's transformer as the peft adapter `adapter_name`.

    With `hotswap`, its weights are copied into that existing adapter in place (the slot
    of a compiled or quantized transformer; hooks and graphs are left as they are);
    otherwise a new adapter is added, diffusers lifting and re-applying its own offload
    hooks (group offloading) around it.
    """
    weights = read_lora(lora) if isinstance(lora, bytes) else lora
    pipeline.load_lora_into_transformer(
        dict(weights.state_dict), network_alphas=weights.network_alphas,
        transformer=pipeline.transformer, adapter_name=adapter_name,
        metadata=dict(weights.metadata) if weights.metadata else None,
        _pipeline=None if hotswap else pipeline, hotswap=hotswap)


def _header(data: bytes) -> dict[str, Any]:
    """The safetensors JSON header: an 8-byte little-endian length, then the JSON."""
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length])


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):  # target modules: sorted, so the bytes repeat
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
