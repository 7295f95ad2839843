"""Memory profiles: where FLUX's weights live while generating, and in what precision.

A profile is a placement plus a weight format, written `placement` or `placement+weights`
in settings (`model_offload+int8`), or `auto`, or the alias `8gb`.

Placements:
- `gpu`: every component on the execution device (on a CPU device: everything on the CPU).
- `model_offload`: `enable_model_cpu_offload(device=…)`; one whole component on the device
  at a time (runs with a CPU device too, so the wiring is tested).
- `sequential_offload`: accelerate's leaf-level offload; needs CUDA.
- `group_offload`: diffusers group offloading, one transformer/T5 block per group, CUDA
  streams prefetching the next group on a GPU; CPU onload runs without streams.

Weights: `none` (the pipeline dtype), `float8` or `int8` (optimum-quanto weight-only
quantization of the transformer and T5; CLIP and the VAE stay as they are).

Expected peak VRAM at 1024², from the published component sizes (transformer 23.8 GB in
bf16, 11.9 GB 8-bit; T5 9.5 / 4.75 GB; CLIP 0.25 GB; VAE 0.17 GB), both base models
(schnell and dev) resident, sharing T5, CLIP and the VAE, plus ~2 GB of activations
(an estimate, scaled by megapixels; VAE tiling keeps the decode small above 1024 px). Computed
by `expected_peak_vram_gb`, not measured:

    profile                  GB    why
    gpu                      59.5  2 × 23.8 + 9.5 + 0.25 + 0.17 + 2
    gpu+float8|int8          31.0  2 × 11.9 + 4.75 + 0.42 + 2
    model_offload            25.8  the transformer alone + 2
    model_offload+8-bit      13.9  11.9 + 2
    group_offload             3.5  two double blocks (0.68 GB each, one prefetched) + embedders + 2
    group_offload+8-bit       2.8  the same at 8 bits
    sequential_offload        2.1  the largest linear layer (~75 MB) + 2

An 8 GB card therefore cannot hold the 8-bit transformer whole (11.9 GB): the `8gb`
alias is 8-bit weights with *group* offload (int8: RTX 30xx cards have no fp8 units).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from diffusers import FluxPipeline

Placement = Literal["gpu", "model_offload", "sequential_offload", "group_offload"]
Weights = Literal["none", "float8", "int8"]

# Published sizes in GB (FACTS.md, "Reference figures").
TRANSFORMER_GB = 23.8
T5_GB = 9.5
CLIP_GB = 0.25
VAE_GB = 0.17
DOUBLE_BLOCK_GB = 0.68  # 19 double blocks of ~340 M parameters, bf16: the largest group
EMBEDDERS_GB = 0.1  # x/context/time embedders, norm_out, proj_out: always onloaded
LARGEST_LINEAR_GB = 0.075  # 3072 × 12288 in bf16, a single block's MLP
ACTIVATIONS_GB_PER_MEGAPIXEL = 2.0  # an estimate, not measured
SAFETY_MARGIN_GB = 1.5  # what `auto` keeps free for the CUDA context and fragmentation


class MemoryProfileError(ValueError):
    """A profile that is malformed, or that this device cannot run."""


@dataclass(frozen=True)
class MemoryProfile:
    placement: Placement = "gpu"
    weights: Weights = "none"
    vae_tiling_above: int = 1024  # px: tile the VAE when width or height is larger

    def __post_init__(self) -> None:
        if self.placement not in get_args(Placement):
            raise MemoryProfileError(
                f"unknown placement {self.placement!r}: one of {', '.join(get_args(Placement))}")
        if self.weights not in get_args(Weights):
            raise MemoryProfileError(
                f"unknown weights {self.weights!r}: one of {', '.join(get_args(Weights))}")

    @property
    def name(self) -> str:
        return self.placement if self.weights == "none" else f"{self.placement}+{self.weights}"

    @property
    def quantized(self) -> bool:
        return self.weights != "none"


EIGHT_GB = MemoryProfile("group_offload", "int8")


def parse_profile(setting: str) -> MemoryProfile | None:
    """`placement[+weights]`, or `8gb`; None for `auto` (see `choose_profile`)."""
    text = setting.strip().lower()
    if text == "auto":
        return None
    if text == "8gb":
        return EIGHT_GB
    placement, _, weights = text.partition("+")
    return MemoryProfile(placement, weights or "none")  # type: ignore[arg-type]


def resolve_profile(setting: str | MemoryProfile, device: torch.device | str) -> MemoryProfile:
    """The profile a setting names, `auto` chosen from free memory, checked against `device`."""
    device = torch.device(device)
    profile = setting if isinstance(setting, MemoryProfile) else parse_profile(setting)
    if profile is None:
        if device.type != "cuda":
            profile = MemoryProfile("gpu")  # on a CPU device: everything where it already is
        else:
            free, _ = torch.cuda.mem_get_info(device)
            profile = choose_profile(free / 1e9, eight_bit=_eight_bit_format(device))
    check_profile(profile, device)
    return profile


def choose_profile(free_gb: float, *, eight_bit: Weights = "int8",
                   megapixels: float = 1.0) -> MemoryProfile:
    """The fastest profile whose expected peak fits `free_gb` with a margin."""
    candidates = [
        MemoryProfile("gpu"),
        MemoryProfile("gpu", eight_bit),
        MemoryProfile("model_offload"),
        MemoryProfile("model_offload", eight_bit),
        MemoryProfile("group_offload"),
        MemoryProfile("group_offload", eight_bit),
    ]
    for profile in candidates:
        if expected_peak_vram_gb(profile, megapixels=megapixels) + SAFETY_MARGIN_GB <= free_gb:
            return profile
    return MemoryProfile("sequential_offload", eight_bit)


def check_profile(profile: MemoryProfile, device: torch.device) -> None:
    if device.type != "cuda" and profile.placement == "sequential_offload":
        raise MemoryProfileError(
            f"memory profile {profile.name!r} needs a CUDA device (accelerate's sequential "
            f"offload moves weights to an accelerator); the device is {device}: use "
            "'gpu', 'model_offload' or 'group_offload'")


def expected_peak_vram_gb(profile: MemoryProfile, *, resident_models: int = 2,
                          megapixels: float = 1.0) -> float:
    """Peak accelerator memory for `profile`, from component sizes (see the module table).

    `resident_models` base transformers share one T5, CLIP and VAE (schnell and dev: 2).
    """
    scale = 0.5 if profile.quantized else 1.0
    activations = ACTIVATIONS_GB_PER_MEGAPIXEL * megapixels
    if profile.placement == "gpu":
        weights = (resident_models * TRANSFORMER_GB + T5_GB) * scale + CLIP_GB + VAE_GB
    elif profile.placement == "model_offload":
        weights = max(TRANSFORMER_GB * scale, T5_GB * scale, CLIP_GB, VAE_GB)
    elif profile.placement == "group_offload":
        weights = 2 * DOUBLE_BLOCK_GB * scale + EMBEDDERS_GB
    else:
        weights = LARGEST_LINEAR_GB
    return round(weights + activations, 1)


def quantize_components(pipeline: FluxPipeline, weights: Weights,
                        done: set[int] | None = None) -> None:
    """Weight-only quanto quantization of the transformer and T5, LoRA layers excluded.

    A LoRA slot must already be in the transformer: loading a LoRA onto a quantized
    transformer through the pipeline fails (FACTS.md). `done` holds ids of modules
    already quantized (T5 shared between the schnell and dev pipelines).
    """
    if weights == "none":
        return
    from optimum.quanto import freeze, qfloat8, qint8, quantize

    qtype = {"float8": qfloat8, "int8": qint8}[weights]
    done = set() if done is None else done
    for module in (pipeline.transformer, pipeline.text_encoder_2):
        if module is None or id(module) in done:
            continue
        quantize(module, weights=qtype, exclude=["*lora_A*", "*lora_B*", "*lora_dropout*"])
        freeze(module)
        done.add(id(module))


def place(pipeline: FluxPipeline, profile: MemoryProfile, device: torch.device) -> None:
    """Move or hook the pipeline's components as the profile says."""
    check_profile(profile, device)
    if profile.placement == "gpu":
        pipeline.to(device)
    elif profile.placement == "model_offload":
        pipeline.enable_model_cpu_offload(device=device)
    elif profile.placement == "sequential_offload":
        pipeline.enable_sequential_cpu_offload(device=device)
    else:
        cuda = device.type == "cuda"
        pipeline.enable_group_offload(
            onload_device=device, offload_device=torch.device("cpu"),
            offload_type="block_level", num_blocks_per_group=1,
            use_stream=cuda, non_blocking=cuda,
        )


@contextmanager
def hooks_lifted(pipeline: FluxPipeline, profile: MemoryProfile,
                 device: torch.device) -> Iterator[None]:
    """Accelerate's offload hooks off while LoRA layers are added or removed, then back.

    diffusers lifts them itself but puts them back for the default accelerator, losing an
    explicit device (and failing outright with a CPU device); group offloading it
    re-applies with its own settings, so that is left to it.
    """
    if profile.placement not in ("model_offload", "sequential_offload"):
        yield
        return
    pipeline.remove_all_hooks()
    try:
        yield
    finally:
        place(pipeline, profile, device)


def configure_vae(pipeline: FluxPipeline, profile: MemoryProfile, width: int, height: int) -> None:
    """Tile the VAE decode for images larger than the profile's threshold."""
    if max(width, height) > profile.vae_tiling_above:
        pipeline.vae.enable_tiling()
    else:
        pipeline.vae.disable_tiling()


def _eight_bit_format(device: torch.device) -> Weights:
    """float8 where the card has fp8 units (compute capability 8.9+), else int8."""
    return "float8" if torch.cuda.get_device_capability(device) >= (8, 9) else "int8"
