"""Users' LoRAs on resident base pipelines: a bounded cache and two ways to apply them.

- `AdapterCache`: LoRA files by adapter id, least recently used first out, bounded by a
  count and by bytes; a returning user's LoRA is not fetched again. Evicting an entry
  tells every pipeline to drop its copy.
- `ResidentAdapters` (plain transformers): each cached LoRA stays loaded in the pipeline as
  a named peft adapter; a job switches with `set_adapters` (no load), no LoRA is
  `disable_lora` (exactly the base output).
- `AdapterSlot` (compiled or quantized transformers): one adapter of the contract's
  largest rank (`MAX_LORA_RANK`) added before quantizing and compiling; a job's LoRA is
  hot-swapped into it in place (`fluxkit.lora.load_lora(..., hotswap=True)`, after
  `prepare_model_for_compiled_hotswap` padded the slot to that rank), so torch.compile's
  graphs stay valid and quanto's layers are never touched. Every LoRA the trainer may
  write fits the slot; a larger one is refused rather than reshaping the slot (which
  would recompile). Loading a new adapter onto a quantized transformer fails (FACTS.md),
  the hot swap does not. The job's `lora_scale` is folded into `lora_B` before the swap so
  the compiled graph never sees a new scale. Cost per switch: a copy of the LoRA's
  tensors, no re-quantization, no recompilation.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch
from diffusers import FluxPipeline
from peft import LoraConfig

from fluxkit.lora import (
    MAX_RANK,
    TARGET_MODULES,
    LoraFormatError,
    LoraWeights,
    load_lora,
    read_lora,
)
from terra.errors import TerraError

SLOT_ADAPTER = "terra_slot"


class AdapterError(TerraError, ValueError):
    """A LoRA that cannot be applied: unreadable, too large, or not fitting the slot."""


@dataclass(frozen=True)
class LoraRef:
    """A user's LoRA: a stable id (the cache key) and how to fetch its bytes on a miss."""

    adapter_id: str
    load: Callable[[], bytes] = field(repr=False, compare=False)

    @classmethod
    def of_bytes(cls, data: bytes, adapter_id: str | None = None) -> LoraRef:
        name = adapter_id or "sha256-" + hashlib.sha256(data).hexdigest()[:32]
        return cls(name, lambda: data)


@dataclass
class CachedLora:
    adapter_id: str
    data: bytes = field(repr=False)
    _parsed: LoraWeights | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return len(self.data)

    def parsed(self) -> LoraWeights:
        """The LoRA's tensors and adapter config (alpha, targets), read once."""
        if self._parsed is None:
            try:
                self._parsed = read_lora(self.data)
            except LoraFormatError as exc:
                raise AdapterError(f"LoRA {self.adapter_id}: {exc}") from exc
        return self._parsed


class AdapterCache:
    """LoRA files by adapter id, bounded by count and bytes, least recently used out."""

    def __init__(self, max_adapters: int = 16, max_bytes: int = 2 * 2**30) -> None:
        if max_adapters < 1 or max_bytes < 1:
            raise ValueError("the adapter cache needs room for at least one adapter")
        self.max_adapters = max_adapters
        self.max_bytes = max_bytes
        self.fetches = 0  # how often a LoRA's bytes were fetched (cache misses)
        self.evictions = 0
        self._entries: OrderedDict[str, CachedLora] = OrderedDict()
        self._evict_listeners: list[Callable[[str], None]] = []

    def __contains__(self, adapter_id: str) -> bool:
        return adapter_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self._entries.values())

    def on_evict(self, listener: Callable[[str], None]) -> None:
        self._evict_listeners.append(listener)

    def get(self, ref: LoraRef) -> CachedLora:
        entry = self._entries.get(ref.adapter_id)
        if entry is not None:
            self._entries.move_to_end(ref.adapter_id)
            return entry
        data = ref.load()
        self.fetches += 1
        if len(data) > self.max_bytes:
            raise AdapterError(f"LoRA {ref.adapter_id} is {len(data)} bytes, over the adapter "
                               f"cache's bound of {self.max_bytes}")
        entry = CachedLora(ref.adapter_id, data)
        self._entries[ref.adapter_id] = entry
        while (len(self._entries) > self.max_adapters or self.total_bytes > self.max_bytes):
            self.evict(next(iter(self._entries)))
        return entry

    def evict(self, adapter_id: str) -> bool:
        """Drop an adapter (also when its model is deleted); False if it was not cached."""
        if self._entries.pop(adapter_id, None) is None:
            return False
        self.evictions += 1
        for listener in self._evict_listeners:
            listener(adapter_id)
        return True


class ResidentAdapters:
    """Every cached LoRA loaded once as a named peft adapter; switching is `set_adapters`."""

    def __init__(self, pipeline: FluxPipeline,
                 lifted: Callable[[], AbstractContextManager[None]] = nullcontext) -> None:
        self.pipeline = pipeline
        self._lifted = lifted  # offload hooks off while peft adds or removes layers
        self.loads = 0  # `load_lora_weights` calls
        self._names: dict[str, str] = {}

    def activate(self, lora: CachedLora, scale: float) -> None:
        name = self._names.get(lora.adapter_id)
        if name is None:
            name = _adapter_name(lora.adapter_id)
            weights = lora.parsed()
            try:
                with self._lifted():
                    load_lora(self.pipeline, weights, adapter_name=name)
            except Exception as exc:  # diffusers raises many kinds for a bad file
                raise AdapterError(f"LoRA {lora.adapter_id} cannot be loaded: {exc}") from exc
            self._names[lora.adapter_id] = name
            self.loads += 1
        self.pipeline.enable_lora()
        self.pipeline.set_adapters([name], [scale])

    def deactivate(self) -> None:
        if self._names:
            self.pipeline.disable_lora()

    def forget(self, adapter_id: str) -> None:
        name = self._names.pop(adapter_id, None)
        if name is not None:
            with self._lifted():
                self.pipeline.delete_adapters(name)


class AdapterSlot:
    """One fixed-rank adapter in the transformer; each job's LoRA is hot-swapped into it."""

    def __init__(self, pipeline: FluxPipeline, *, rank: int = MAX_RANK,
                 target_modules: Sequence[str] = TARGET_MODULES) -> None:
        self.pipeline = pipeline
        self.rank = rank
        self.swaps = 0  # hot swaps into the slot
        self._current: tuple[str, float] | None = None
        add_slot(pipeline.transformer, rank=rank, target_modules=target_modules)
        pipeline.transformer.disable_lora()

    @property
    def loads(self) -> int:
        return self.swaps

    def activate(self, lora: CachedLora, scale: float) -> None:
        transformer = self.pipeline.transformer
        if self._current != (lora.adapter_id, scale):
            weights = lora.parsed()
            if weights.rank > self.rank:  # a swap would reshape the slot: a recompile
                raise AdapterError(f"LoRA {lora.adapter_id} has rank {weights.rank}, over the "
                                   f"hot-swap slot's {self.rank}")
            try:
                load_lora(self.pipeline, weights.scaled(scale), adapter_name=SLOT_ADAPTER,
                          hotswap=True)
            except Exception as exc:  # rank over the slot's, modules outside it, bad keys
                self._current = None  # a failed swap may have left part of the weights
                raise AdapterError(
                    f"LoRA {lora.adapter_id} does not fit the hot-swap slot (rank "
                    f"{self.rank}): {exc}") from exc
            self._current = (lora.adapter_id, scale)
            self.swaps += 1
        transformer.enable_lora()

    def deactivate(self) -> None:
        self.pipeline.transformer.disable_lora()

    def forget(self, adapter_id: str) -> None:
        # The slot keeps the weights until the next swap; it is disabled when not asked for.
        if self._current is not None and self._current[0] == adapter_id:
            self._current = None


def add_slot(transformer: torch.nn.Module, *, rank: int = MAX_RANK,
             target_modules: Sequence[str] = TARGET_MODULES) -> None:
    """A zero-effect adapter of `rank` on `target_modules`, ready for compiled hot swaps.

    Call before quantizing (quanto must not touch the LoRA layers) and before compiling.
    """
    from peft.utils.hotswap import prepare_model_for_compiled_hotswap

    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=list(target_modules),
                        init_lora_weights=True)  # lora_B = 0: no effect until a swap
    transformer.add_adapter(config, adapter_name=SLOT_ADAPTER)
    # Scalings become tensors, so a LoRA with another alpha/rank does not recompile.
    prepare_model_for_compiled_hotswap(transformer, target_rank=rank, config=config,
                                       check_compiled="ignore")


def _adapter_name(adapter_id: str) -> str:
    """peft adapter names become module keys: no dots, so a digest of the id."""
    return "terra_" + hashlib.sha1(adapter_id.encode()).hexdigest()[:16]
