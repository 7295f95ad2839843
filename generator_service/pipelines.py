"""Image generation on resident FLUX pipelines: schnell by default, dev with a user's LoRA.

One path: `FluxGenerator.generate_batch(requests)` runs compatible requests (the same
`batch_key`) in one denoising loop, and `generate(request)` is a batch of one. Both are
synchronous and blocking (the service runs them in a thread) and serialised by a lock,
so one loop runs at a time. A loop:

1. checks the requests (sizes multiple of 16, a known model) and takes the lock;
2. puts the LoRA on (from the adapter cache; see `adapters.py`) or takes it off;
3. tiles the VAE for images over the profile's threshold;
4. encodes each request's prompt once for all its images;
5. denoises every image of every request together, image i of a request from a CPU
   generator seeded `seed + i` (the same seed gives the same pixels on every run; alone
   or beside other images it differs only by batched rounding), reporting every step and
   stopping early when `should_stop()` says so (a `Cancelled` outcome): whatever the
   number of images, a cancel waits for at most the step in progress;
6. decodes only when not cancelled: the pipeline stops at latents and `_decode` does what
   it would have done, so a cancel never waits for a decode (`should_stop()` is also
   asked before the LoRA and after the prompts).

Per-model defaults (steps, guidance) are the contracts' (`MODEL_DEFAULTS`); a model whose
default guidance is None (schnell) takes none: nothing is passed to the pipeline and none
is written into the PNG. The memory profile (`fluxkit.placements`) is applied once when the
generator is built: a LoRA slot first when the transformer will be compiled or quantized,
then quantization, then placement, then compilation.
"""

from __future__ import annotations

import functools
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import FluxPipeline
from diffusers.utils.torch_utils import get_module_execution_device
from PIL import Image

from contracts.generation import MODEL_DEFAULTS, SIDE_MULTIPLE, BaseModelName
from fluxkit.errors import out_of_memory_as
from fluxkit.loading import MAX_SEQUENCE_LENGTH, base_model_name, load_flux_pipelines
from fluxkit.lora import MAX_RANK, TARGET_MODULES
from fluxkit.placements import MemoryProfile, hooks_lifted, resolve_profile
from fluxkit.quantize import quantize_pipeline
from generator_service.adapters import AdapterCache, AdapterSlot, LoraRef, ResidentAdapters
from generator_service.render import png_bytes

MODELS = tuple(model.value for model in BaseModelName)


def default_steps(model: str) -> int:
    return int(MODEL_DEFAULTS[BaseModelName(model)]["steps"])


def default_guidance(model: str) -> float | None:
    """The model's guidance; None: it takes none (schnell has no guidance embedding)."""
    return MODEL_DEFAULTS[BaseModelName(model)]["guidance"]


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    model: str = "schnell"
    lora: LoraRef | bytes | None = None
    lora_scale: float = 1.0
    width: int = 1024
    height: int = 1024
    steps: int | None = None  # None: the model's default (contracts' MODEL_DEFAULTS)
    guidance: float | None = None  # None: the model's default; schnell takes none
    seed: int | None = None  # None: a random one, reported with each image
    num_images: int = 1
    max_sequence_length: int | None = None  # None: the model's T5 window

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}: one of {', '.join(MODELS)}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value <= 0 or value % SIDE_MULTIPLE:
                raise ValueError(f"{name} must be a positive multiple of {SIDE_MULTIPLE}, "
                                 f"got {value}")
        if not self.prompt:
            raise ValueError("the prompt is empty")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.num_images < 1:
            raise ValueError(f"num_images must be at least 1, got {self.num_images}")
        if self.seed is not None and not 0 <= self.seed <= 2**63 - 1 - self.num_images:
            raise ValueError(f"seed out of range: {self.seed}")
        if default_guidance(self.model) is None and self.guidance not in (None, 0, 0.0):
            raise ValueError(f"FLUX.1-{self.model} takes no guidance")

    @property
    def adapter_id(self) -> str | None:
        return None if self.lora is None else self.lora_ref().adapter_id

    @property
    def resolved_steps(self) -> int:
        return self.steps or default_steps(self.model)

    @property
    def resolved_guidance(self) -> float | None:
        default = default_guidance(self.model)
        if default is None:
            return None  # the model takes none (a 0 given for schnell means the same)
        return default if self.guidance is None else self.guidance

    def lora_ref(self) -> LoraRef:
        if self.lora is None:
            raise ValueError("the request has no LoRA")
        return self.lora if isinstance(self.lora, LoraRef) else LoraRef.of_bytes(self.lora)


@dataclass(frozen=True)
class GeneratedImage:
    image: Image.Image = field(repr=False)
    seed: int
    index: int  # the request's i-th image, generated from seed + i (`seed` here)
    parameters: dict[str, Any]  # what the PNG's text chunks say

    def png(self) -> bytes:
        return png_bytes(self.image, self.parameters)


@dataclass(frozen=True)
class Cancelled:
    """`should_stop()` said so: no images are returned (none was decoded)."""

    steps_done: int
    total_steps: int


OnStep = Callable[[int, int], None]  # (step, total) of the one denoising loop


def batch_key(request: GenerationRequest) -> tuple:
    """Requests with equal keys can share one denoising loop."""
    return (request.model, request.adapter_id, request.lora_scale, request.width,
            request.height, request.resolved_steps, request.resolved_guidance,
            request.max_sequence_length or MAX_SEQUENCE_LENGTH[request.model])


class FluxGenerator:
    """Resident FLUX pipelines by model name, a memory profile, an adapter cache, a lock."""

    def __init__(
        self,
        pipelines: Mapping[str, FluxPipeline],
        *,
        device: torch.device | str,
        dtype: torch.dtype,
        profile: MemoryProfile | str = "gpu",
        compile: bool = False,
        hotswap: bool | None = None,  # None: when compiled or quantized (required then)
        adapter_cache: AdapterCache | None = None,
        slot_rank: int = MAX_RANK,  # the contract's: every LoRA the trainer writes fits
        target_modules: tuple[str, ...] = TARGET_MODULES,
        base_models: Mapping[str, str] | None = None,  # model → name written in metadata
        images_per_loop: int | None = None,  # None: all of a batch's images in one loop
    ) -> None:
        if images_per_loop is not None and images_per_loop < 1:
            raise ValueError("images_per_loop must be at least 1")
        # A batch's images are denoised in loops of this many: a loop fills a GPU, and a
        # cancel waits at most one step of one loop (on a CPU, one image: a step of four
        # 2048² images there takes seconds).
        self.images_per_loop = images_per_loop
        unknown = set(pipelines) - set(MODELS)
        if unknown or not pipelines:
            raise ValueError(f"pipelines for {', '.join(MODELS)} expected, got {list(pipelines)}")
        self.device = torch.device(device)
        self.dtype = dtype
        self.profile = resolve_profile(profile, self.device)
        self.compiled = compile
        needs_slot = compile or self.profile.quantized
        if hotswap is False and needs_slot:
            raise ValueError("a compiled or quantized transformer takes LoRAs by hot swap only")
        self.hotswap = needs_slot if hotswap is None else hotswap
        self.cache = AdapterCache() if adapter_cache is None else adapter_cache
        self.pipelines = dict(pipelines)
        self.base_models = dict(base_models or {m: m for m in self.pipelines})
        self.adapters: dict[str, ResidentAdapters | AdapterSlot] = {}
        placement = self.profile.placement
        quantized: set[int] = set()
        for model, pipeline in self.pipelines.items():
            pipeline.set_progress_bar_config(disable=True)
            if pipeline.dtype != dtype:
                pipeline.to(dtype=dtype)
            if self.hotswap:
                self.adapters[model] = AdapterSlot(pipeline, rank=slot_rank,
                                                   target_modules=target_modules)
            else:
                self.adapters[model] = ResidentAdapters(pipeline, functools.partial(
                    hooks_lifted, pipeline, placement, self.device))
            quantize_pipeline(pipeline, self.profile.weights, quantized)
            for component in pipeline.components.values():
                if isinstance(component, torch.nn.Module):
                    component.requires_grad_(False)
            placement.apply(pipeline, self.device)
            if compile:
                pipeline.transformer.compile()
        self.cache.on_evict(self._forget)
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        sources: Mapping[str, str | None] | None = None,
        *,
        device: torch.device | str,
        dtype: torch.dtype,
        profile: MemoryProfile | str = "auto",
        **options: Any,
    ) -> FluxGenerator:
        """Both base models from hub ids or folders (None or missing: tiny random FLUX)."""
        device = torch.device(device)
        resolved = resolve_profile(profile, device)
        sources = {model: (sources or {}).get(model) for model in MODELS}
        pipelines = load_flux_pipelines(sources, dtype=dtype,
                                        share_encoders=resolved.placement.shares_encoders)
        names = {model: base_model_name(source, model) for model, source in sources.items()}
        return cls(pipelines, device=device, dtype=dtype, profile=resolved,
                   base_models=names, **options)

    # --- generation ----------------------------------------------------------------

    def generate(
        self,
        request: GenerationRequest,
        *,
        on_step: OnStep | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[GeneratedImage] | Cancelled:
        """One request's images: a batch of one."""
        outcome = self.generate_batch([request], on_step=on_step, should_stop=should_stop)
        return outcome if isinstance(outcome, Cancelled) else outcome[0]

    def generate_batch(
        self,
        requests: Sequence[GenerationRequest],
        *,
        on_step: OnStep | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[list[GeneratedImage]] | Cancelled:
        """Compatible requests (same `batch_key`) in one denoising loop: one batch of all
        their images, image i of a request from its seed + i. On a GPU this fills the
        card; on a CPU it saves little."""
        if not requests:
            raise ValueError("a batch takes at least one request")
        first = requests[0]
        if any(batch_key(r) != batch_key(first) for r in requests[1:]):
            raise ValueError("a batch takes requests with the same batch key")
        pipeline = self.pipelines.get(first.model)
        if pipeline is None:
            raise ValueError(f"model {first.model!r} is not loaded here")
        steps, guidance = first.resolved_steps, first.resolved_guidance
        if guidance is None and pipeline.transformer.config.guidance_embeds:
            raise ValueError(f"the {first.model} transformer has a guidance embedding: "
                             "its model defaults need a guidance")
        seeds = [secrets.randbelow(2**62) if r.seed is None else r.seed for r in requests]
        owners = [(index, image) for index, r in enumerate(requests)
                  for image in range(r.num_images)]
        stop = should_stop or (lambda: False)
        with self._lock, out_of_memory_as(
                f"ran out of GPU memory at {first.width}x{first.height}, {len(owners)} "
                "image(s); try a smaller size or a lower-memory profile"):
            if stop():
                return Cancelled(0, steps)
            self._apply_lora(first)
            self.profile.configure_vae(pipeline, first.width, first.height)
            embeds, pooled = self._encode(pipeline, requests)
            if stop():
                return Cancelled(0, steps)
            per_loop = self.images_per_loop or len(owners)
            loops = [owners[i:i + per_loop] for i in range(0, len(owners), per_loop)]
            progress = _Progress(steps * len(loops), on_step, stop)
            latents = []
            for loop in loops:  # every image denoised before any is decoded
                denoised = _denoise(
                    pipeline, progress,
                    prompt_embeds=torch.cat([embeds[index] for index, _ in loop]),
                    pooled_prompt_embeds=torch.cat([pooled[index] for index, _ in loop]),
                    height=first.height,
                    width=first.width,
                    num_inference_steps=steps,
                    generator=[torch.Generator(device="cpu").manual_seed(seeds[index] + image)
                               for index, image in loop],
                    **({} if guidance is None else {"guidance_scale": guidance}),
                )
                if denoised is None:
                    return Cancelled(progress.done, progress.total)
                latents.append(denoised)
            pictures = [picture for loop in latents
                        for picture in _decode(pipeline, loop, first.height, first.width)]
            results: list[list[GeneratedImage]] = [[] for _ in requests]
            for picture, (index, image) in zip(pictures, owners, strict=True):
                seed = seeds[index] + image
                results[index].append(GeneratedImage(
                    picture, seed, image, self._parameters(requests[index], seed)))
            return results

    def prepare(self, request: GenerationRequest) -> None:
        """Put the request's LoRA on (or off) now, e.g. while the job waits in the queue."""
        with self._lock:
            self._apply_lora(request)

    def forget_adapter(self, adapter_id: str) -> bool:
        """Drop a LoRA from the cache and the pipelines (model deleted, account erased)."""
        with self._lock:
            return self.cache.evict(adapter_id)

    @property
    def adapter_loads(self) -> int:
        """LoRA loads into pipelines (resident loads or slot swaps), over all models."""
        return sum(a.loads for a in self.adapters.values())

    def _apply_lora(self, request: GenerationRequest) -> None:
        adapters = self.adapters[request.model]
        if request.lora is None:
            adapters.deactivate()
            return
        adapters.activate(self.cache.get(request.lora_ref()), request.lora_scale)

    def _forget(self, adapter_id: str) -> None:
        for adapters in self.adapters.values():
            adapters.forget(adapter_id)

    @staticmethod
    @torch.no_grad()  # quanto's layers come back requiring grad
    def _encode(pipeline: FluxPipeline, requests: Sequence[GenerationRequest]
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Each request's T5 and pooled CLIP embeddings, once for all its images."""
        embeds, pooled = [], []
        for request in requests:
            prompt_embeds, pooled_embeds, _ = pipeline.encode_prompt(
                request.prompt, prompt_2=None, device=pipeline._execution_device,
                max_sequence_length=(request.max_sequence_length
                                     or MAX_SEQUENCE_LENGTH[request.model]))
            embeds.append(prompt_embeds)
            pooled.append(pooled_embeds)
        return embeds, pooled

    def _parameters(self, request: GenerationRequest, seed: int) -> dict[str, Any]:
        return {
            "prompt": request.prompt,
            "model": request.model,
            "base_model": self.base_models.get(request.model, request.model),
            "seed": seed,
            "steps": request.resolved_steps,
            "guidance": request.resolved_guidance,
            "lora_id": request.adapter_id,
            "lora_scale": request.lora_scale if request.lora is not None else None,
            "size": f"{request.width}x{request.height}",
        }


class _Progress:
    """`callback_on_step_end`: counts steps, reports them, interrupts when asked to stop."""

    def __init__(self, total: int, on_step: OnStep | None, should_stop: Callable[[], bool]):
        self.total, self.on_step, self.should_stop = total, on_step, should_stop
        self.done = 0
        self.stopped = False

    def callback(self, pipeline: FluxPipeline, step: int, timestep, kwargs: dict) -> dict:
        self.done += 1
        if self.on_step is not None:
            self.on_step(self.done, self.total)
        if self.should_stop():
            self.stopped = True
            pipeline._interrupt = True  # the loop skips the remaining steps
        return {}


def _denoise(pipeline: FluxPipeline, progress: _Progress, *, height: int, width: int,
             **call: Any) -> torch.Tensor | None:
    """One denoising loop, stopped at packed latents; None when `should_stop()` said so,
    during the loop or after it. A cancelled job never decodes (at 2048² the decode,
    tiled or not, costs more than many steps); `_decode` is what `FluxPipeline.__call__`
    does itself for `output_type="pil"` (diffusers 0.42), step for step, so the pixels
    are the same as letting the pipeline decode."""
    latents = pipeline(height=height, width=width, output_type="latent",
                       callback_on_step_end=progress.callback, **call).images
    if progress.stopped or progress.should_stop():
        return None
    return latents


@torch.no_grad()
def _decode(pipeline: FluxPipeline, latents: torch.Tensor, height: int,
            width: int) -> list[Image.Image]:
    """Packed latents to PIL images, as the end of `FluxPipeline.__call__` does it: on the
    VAE's execution device (its onload device when offloaded; the offload hook moves the
    weights), tiled if the profile said so, then every component offloaded again."""
    vae = pipeline.vae
    latents = pipeline._unpack_latents(latents, height, width, pipeline.vae_scale_factor)
    latents = (latents / vae.config.scaling_factor) + vae.config.shift_factor
    latents = latents.to(get_module_execution_device(vae))
    image = vae.decode(latents, return_dict=False)[0]
    images = pipeline.image_processor.postprocess(image, output_type="pil")
    pipeline.maybe_free_model_hooks()  # model offload: the VAE back off the device
    return images
