"""Image generation on resident FLUX pipelines: schnell by default, dev with a user's LoRA.

`FluxGenerator.generate(request)` is synchronous and blocking (the service runs it in a
thread) and serialised by a lock, so one job runs at a time. A job:

1. checks the request (sizes multiple of 16, a known model) and takes the lock;
2. puts the user's LoRA on (from the adapter cache; see `adapters.py`) or takes it off;
3. tiles the VAE for images over the profile's threshold;
4. encodes the prompt once for all its images;
5. denoises image i from a CPU generator seeded `seed + i`, so a seed gives the same
   pixels whatever the device and however many images were asked for, reporting every
   step and stopping early when `should_stop()` says so (a `Cancelled` outcome);
6. decodes each image with the VAE only when not cancelled: the pipeline stops at latents
   and `_decode` does what it would have done, so a cancel never waits for a decode
   (`should_stop()` is also asked before denoising and between images).

The memory profile (`memory.py`) is applied once when the generator is built: a LoRA
slot first when the transformer will be compiled or quantized, then quantization, then
placement, then compilation.
"""

from __future__ import annotations

import functools
import secrets
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import FluxPipeline, FluxTransformer2DModel
from diffusers.utils.torch_utils import get_module_execution_device
from PIL import Image

from generator_service.adapters import (
    DEFAULT_SLOT_RANK,
    DEFAULT_TARGET_MODULES,
    AdapterCache,
    AdapterSlot,
    LoraRef,
    ResidentAdapters,
)
from generator_service.memory import (
    MemoryProfile,
    configure_vae,
    hooks_lifted,
    place,
    quantize_components,
    resolve_profile,
)
from generator_service.render import png_bytes
from trainer_service.flux import (
    TINY_FLUX,
    TINY_SEED,
    base_model_name,
    build_tiny_flux,
    load_flux_pipeline,
)

MODELS = ("schnell", "dev")
SIZE_MULTIPLE = 16  # FLUX: 8× VAE downscale, then 2×2 latent packing


@dataclass(frozen=True)
class ModelDefaults:
    steps: int
    guidance: float
    max_sequence_length: int  # T5 tokens


DEFAULTS = {
    "schnell": ModelDefaults(steps=4, guidance=0.0, max_sequence_length=256),
    "dev": ModelDefaults(steps=28, guidance=3.5, max_sequence_length=512),
}


class GenerationError(RuntimeError):
    """A job that could not run (the request itself was fine)."""


class OutOfGpuMemory(GenerationError):
    pass


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    model: str = "schnell"
    lora: LoraRef | bytes | None = None
    lora_scale: float = 1.0
    width: int = 1024
    height: int = 1024
    steps: int | None = None  # None: the model's default (4 schnell, 28 dev)
    guidance: float | None = None  # None: the model's default (0 schnell, 3.5 dev)
    seed: int | None = None  # None: a random one, reported with each image
    num_images: int = 1
    max_sequence_length: int | None = None

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}: one of {', '.join(MODELS)}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value <= 0 or value % SIZE_MULTIPLE:
                raise ValueError(f"{name} must be a positive multiple of {SIZE_MULTIPLE}, "
                                 f"got {value}")
        if not self.prompt:
            raise ValueError("the prompt is empty")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.num_images < 1:
            raise ValueError(f"num_images must be at least 1, got {self.num_images}")
        if self.seed is not None and not 0 <= self.seed <= 2**63 - 1 - self.num_images:
            raise ValueError(f"seed out of range: {self.seed}")
        if self.model == "schnell" and self.guidance not in (None, 0, 0.0):
            raise ValueError("FLUX.1-schnell takes no guidance (guidance 0)")

    @property
    def adapter_id(self) -> str | None:
        return None if self.lora is None else self.lora_ref().adapter_id

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
    """`should_stop()` said so: no images are returned."""

    steps_done: int
    total_steps: int
    images_done: int


OnStep = Callable[[int, int], None]  # (step, total) over all the request's images


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
        slot_rank: int = DEFAULT_SLOT_RANK,
        target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES,
        base_models: Mapping[str, str] | None = None,  # model → name written in metadata
    ) -> None:
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
                    hooks_lifted, pipeline, self.profile, self.device))
            quantize_components(pipeline, self.profile.weights, quantized)
            for component in pipeline.components.values():
                if isinstance(component, torch.nn.Module):
                    component.requires_grad_(False)
            place(pipeline, self.profile, self.device)
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
        pipelines = load_base_pipelines(sources, dtype=dtype,
                                        share_encoders=resolved.placement == "gpu")
        names = {m: _base_name(m, s) for m, s in sources.items()}
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
        pipeline = self.pipelines.get(request.model)
        if pipeline is None:
            raise ValueError(f"model {request.model!r} is not loaded here")
        defaults = DEFAULTS[request.model]
        steps = request.steps or defaults.steps
        guidance = defaults.guidance if request.guidance is None else request.guidance
        seed = secrets.randbelow(2**62) if request.seed is None else request.seed
        total = steps * request.num_images
        stop = should_stop or (lambda: False)
        with self._lock, _out_of_memory_as_domain_error(request):
            if stop():
                return Cancelled(0, total, 0)
            self._apply_lora(request)
            configure_vae(pipeline, self.profile, request.width, request.height)
            with torch.no_grad():  # quanto's layers come back requiring grad
                prompt_embeds, pooled, _ = pipeline.encode_prompt(
                    request.prompt, prompt_2=None, device=pipeline._execution_device,
                    max_sequence_length=(request.max_sequence_length
                                         or defaults.max_sequence_length),
                )
            progress = _Progress(total, on_step, stop)
            images = []
            for index in range(request.num_images):
                if stop():  # after the LoRA and the prompt, and between images
                    return Cancelled(progress.done, total, len(images))
                decoded = _denoise_and_decode(
                    pipeline, progress,
                    prompt_embeds=prompt_embeds,
                    pooled_prompt_embeds=pooled,
                    height=request.height,
                    width=request.width,
                    num_inference_steps=steps,
                    guidance_scale=guidance,
                    generator=torch.Generator(device="cpu").manual_seed(seed + index),
                )
                if decoded is None:
                    return Cancelled(progress.done, total, len(images))
                images.append(GeneratedImage(
                    decoded[0], seed + index, index,
                    self._parameters(request, seed + index, steps, guidance)))
            return images

    def generate_batch(
        self,
        requests: Sequence[GenerationRequest],
        *,
        on_step: OnStep | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[list[GeneratedImage]] | Cancelled:
        """Compatible requests (same `batch_key`) in one denoising loop: one batch of all
        their images, image i of a request from its seed + i as when run alone. On a GPU
        this fills the card; on a CPU it saves little."""
        if len(requests) == 1:
            outcome = self.generate(requests[0], on_step=on_step, should_stop=should_stop)
            return outcome if isinstance(outcome, Cancelled) else [outcome]
        first = requests[0]
        if any(batch_key(r) != batch_key(first) for r in requests) or any(
                r.seed is None for r in requests):
            raise ValueError("a batch takes requests with the same batch key and set seeds")
        pipeline = self.pipelines[first.model]
        defaults = DEFAULTS[first.model]
        steps = first.steps or defaults.steps
        guidance = defaults.guidance if first.guidance is None else first.guidance
        stop = should_stop or (lambda: False)
        with self._lock, _out_of_memory_as_domain_error(first):
            if stop():
                return Cancelled(0, steps, 0)
            self._apply_lora(first)
            configure_vae(pipeline, self.profile, first.width, first.height)
            embeds, pooled, seeds, owners = [], [], [], []
            for index, request in enumerate(requests):
                prompt_embeds, pooled_embeds, _ = pipeline.encode_prompt(
                    request.prompt, prompt_2=None, device=pipeline._execution_device,
                    max_sequence_length=(request.max_sequence_length
                                         or defaults.max_sequence_length))
                for image in range(request.num_images):
                    embeds.append(prompt_embeds)
                    pooled.append(pooled_embeds)
                    seeds.append(request.seed + image)
                    owners.append((index, image))
            if stop():
                return Cancelled(0, steps, 0)
            progress = _Progress(steps, on_step, stop)
            output = _denoise_and_decode(
                pipeline, progress,
                prompt_embeds=torch.cat(embeds),
                pooled_prompt_embeds=torch.cat(pooled),
                height=first.height,
                width=first.width,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=[torch.Generator(device="cpu").manual_seed(s) for s in seeds],
            )
            if output is None:
                return Cancelled(progress.done, steps, 0)
            results: list[list[GeneratedImage]] = [[] for _ in requests]
            for picture, seed, (index, image) in zip(output, seeds, owners, strict=True):
                results[index].append(GeneratedImage(
                    picture, seed, image,
                    self._parameters(requests[index], seed, steps, guidance)))
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

    def _parameters(self, request: GenerationRequest, seed: int, steps: int,
                    guidance: float) -> dict[str, Any]:
        return {
            "prompt": request.prompt,
            "model": request.model,
            "base_model": self.base_models.get(request.model, request.model),
            "seed": seed,
            "steps": steps,
            "guidance": guidance,
            "lora_id": request.adapter_id,
            "lora_scale": request.lora_scale if request.lora is not None else None,
            "size": f"{request.width}x{request.height}",
        }


def batch_key(request: GenerationRequest) -> tuple:
    """Requests with equal keys can share one denoising loop."""
    return (request.model, request.adapter_id, request.lora_scale, request.width,
            request.height, request.steps, request.guidance)


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


def _denoise_and_decode(pipeline: FluxPipeline, progress: _Progress, *, height: int,
                        width: int, **call: Any) -> list[Image.Image] | None:
    """One pipeline call that stops at latents, then the VAE decode unless cancelled.

    None when `should_stop()` said so, during the loop or after it: a cancelled job never
    decodes (at 2048² the decode, tiled or not, costs more than many steps). The decode is
    what `FluxPipeline.__call__` does itself for `output_type="pil"` (diffusers 0.42),
    step for step, so the pixels are the same as letting the pipeline decode.
    """
    latents = pipeline(height=height, width=width, output_type="latent",
                       callback_on_step_end=progress.callback, **call).images
    if progress.stopped or progress.should_stop():
        return None
    return _decode(pipeline, latents, height, width)


@torch.no_grad()
def _decode(pipeline: FluxPipeline, latents: torch.Tensor, height: int,
            width: int) -> list[Image.Image]:
    """Packed latents to PIL images, as the end of `FluxPipeline.__call__` does it: on the
    VAE's execution device (its onload device when offloaded; the offload hook moves the
    weights), tiled if `configure_vae` said so, then every component offloaded again."""
    vae = pipeline.vae
    latents = pipeline._unpack_latents(latents, height, width, pipeline.vae_scale_factor)
    latents = (latents / vae.config.scaling_factor) + vae.config.shift_factor
    latents = latents.to(get_module_execution_device(vae))
    image = vae.decode(latents, return_dict=False)[0]
    images = pipeline.image_processor.postprocess(image, output_type="pil")
    pipeline.maybe_free_model_hooks()  # model offload: the VAE back off the device
    return images


@contextmanager
def _out_of_memory_as_domain_error(request: GenerationRequest) -> Iterator[None]:
    try:
        yield
    except torch.OutOfMemoryError as exc:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise OutOfGpuMemory(
            f"ran out of GPU memory at {request.width}x{request.height}, "
            f"{request.num_images} image(s); try a smaller size or a lower-memory profile"
        ) from exc


# --- base pipelines ------------------------------------------------------------------


def load_base_pipelines(
    sources: Mapping[str, str | None],
    *,
    dtype: torch.dtype,
    share_encoders: bool = True,
) -> dict[str, FluxPipeline]:
    """Each model's pipeline on the CPU (the profile places it); None: tiny random FLUX.

    With `share_encoders`, real schnell and dev share one T5, CLIP and VAE (the weights
    are the same): only valid when nothing hooks them (the `gpu` placement), since the
    offload hooks belong to one pipeline.
    """
    pipelines: dict[str, FluxPipeline] = {}
    shared: dict[str, Any] = {}
    for model, source in sources.items():
        if source is None:
            pipelines[model] = (tiny_flux_schnell(dtype) if model == "schnell"
                                else load_flux_pipeline(None, "cpu", dtype))
        elif shared:
            pipelines[model] = FluxPipeline.from_pretrained(source, dtype=dtype, **shared)
        else:
            pipelines[model] = load_flux_pipeline(source, "cpu", dtype)
            if share_encoders:
                shared = {name: getattr(pipelines[model], name) for name in (
                    "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "vae")}
    return pipelines


def tiny_flux_schnell(dtype: torch.dtype) -> FluxPipeline:
    """The tiny schnell, loaded from its saved folder like a real one."""
    pipeline = FluxPipeline.from_pretrained(str(_tiny_schnell_folder()), dtype=dtype)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def build_tiny_flux_schnell(seed: int = TINY_SEED) -> FluxPipeline:
    """trainer_service's tiny FLUX with a schnell transformer: no guidance embedding."""
    pipeline = build_tiny_flux(seed)
    config = {k: v for k, v in pipeline.transformer.config.items() if not k.startswith("_")}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        transformer = FluxTransformer2DModel(**{**config, "guidance_embeds": False})
    transformer.eval()
    return FluxPipeline(**{**pipeline.components, "transformer": transformer})


@functools.cache
def _tiny_schnell_folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="terra-tiny-flux-schnell-"))
    build_tiny_flux_schnell().save_pretrained(folder)
    return folder


def _base_name(model: str, source: str | None) -> str:
    if source is None:
        return f"{TINY_FLUX}-{model}"
    return base_model_name(source)
