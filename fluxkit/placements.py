"""Memory placements: where FLUX's weights live while it runs, as one table of objects.

A `Placement` says what it needs (CUDA or not), how to apply it to a pipeline, its
expected peak from component sizes, whether accelerate's hooks must be lifted while peft
adds or removes LoRA layers, and whether two pipelines may share their encoders. A
`MemoryProfile` is a placement plus a weight format (`quantize.py`), written
`placement` or `placement+weights` in settings (`model_offload+int8`), or `auto`, or `8gb`.

- `gpu`: every component on the execution device (on a CPU device: all on the CPU).
- `model_offload`: `enable_model_cpu_offload(device=…)`, one whole component on the device
  at a time (runs with a CPU device too, so the wiring is tested).
- `sequential_offload`: accelerate's leaf-level offload; needs CUDA.
- `group_offload`: diffusers group offloading, one transformer/T5 block per group, CUDA
  streams prefetching the next group on a GPU; CPU onload runs without streams.

Expected peak VRAM at 1024², from the published component sizes (transformer 23.8 GB in
bf16, 11.9 GB 8-bit; T5 9.5 / 4.75 GB; CLIP 0.25 GB; VAE 0.17 GB), both base models
(schnell and dev) resident, sharing T5, CLIP and the VAE, plus ~2 GB of activations per
megapixel in the loop (an estimate; VAE tiling keeps the decode small above 1024 px).
Computed by `expected_peak_gb`, not measured:

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

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from diffusers import FluxPipeline

from fluxkit.quantize import Weights, weights_of

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
class Placement:
    name: str
    needs_cuda: bool  # refused on any other device
    lifts_hooks: bool  # accelerate hooks off (and back) while peft changes LoRA layers
    shares_encoders: bool  # schnell and dev may share T5, CLIP and the VAE
    _apply: Callable[[FluxPipeline, torch.device], None] = field(repr=False, compare=False)
    # GB of weights on the device: (8-bit scale, resident base models) -> GB
    _weights_gb: Callable[[float, int], float] = field(repr=False, compare=False)

    def check(self, device: torch.device | str) -> None:
        device = torch.device(device)
        if self.needs_cuda and device.type != "cuda":
            usable = ", ".join(p.name for p in PLACEMENTS.values() if not p.needs_cuda)
            raise MemoryProfileError(
                f"placement {self.name!r} needs a CUDA device (accelerate moves weights to an "
                f"accelerator); the device is {device}: use one of {usable}")

    def apply(self, pipeline: FluxPipeline, device: torch.device | str) -> None:
        """Move or hook the pipeline's components onto `device` as this placement says."""
        device = torch.device(device)
        self.check(device)
        self._apply(pipeline, device)

    def expected_peak_gb(self, *, quantized: bool = False, resident_models: int = 2,
                         megapixels: float = 1.0) -> float:
        """Peak accelerator memory from component sizes (see the module's table).

        `resident_models` base transformers share one T5, CLIP and VAE (schnell and dev:
        2); `megapixels` is what one denoising loop carries (images × width × height)."""
        weights = self._weights_gb(0.5 if quantized else 1.0, resident_models)
        return round(weights + ACTIVATIONS_GB_PER_MEGAPIXEL * megapixels, 1)


def _group_offload(pipeline: FluxPipeline, device: torch.device) -> None:
    cuda = device.type == "cuda"
    pipeline.enable_group_offload(
        onload_device=device, offload_device=torch.device("cpu"), offload_type="block_level",
        num_blocks_per_group=1, use_stream=cuda, non_blocking=cuda)


GPU = Placement(
    "gpu", needs_cuda=False, lifts_hooks=False, shares_encoders=True,
    _apply=lambda pipeline, device: pipeline.to(device),
    _weights_gb=lambda scale, models: (models * TRANSFORMER_GB + T5_GB) * scale
    + CLIP_GB + VAE_GB)
MODEL_OFFLOAD = Placement(
    "model_offload", needs_cuda=False, lifts_hooks=True, shares_encoders=False,
    _apply=lambda pipeline, device: pipeline.enable_model_cpu_offload(device=device),
    _weights_gb=lambda scale, models: max(TRANSFORMER_GB * scale, T5_GB * scale, CLIP_GB,
                                          VAE_GB))
SEQUENTIAL_OFFLOAD = Placement(
    "sequential_offload", needs_cuda=True, lifts_hooks=True, shares_encoders=False,
    _apply=lambda pipeline, device: pipeline.enable_sequential_cpu_offload(device=device),
    _weights_gb=lambda scale, models: LARGEST_LINEAR_GB)
GROUP_OFFLOAD = Placement(
    # diffusers lifts and re-applies group offloading itself around LoRA changes.
    "group_offload", needs_cuda=False, lifts_hooks=False, shares_encoders=False,
    _apply=_group_offload,
    _weights_gb=lambda scale, models: 2 * DOUBLE_BLOCK_GB * scale + EMBEDDERS_GB)

# Fastest first: `auto` takes the first that fits.
PLACEMENTS: dict[str, Placement] = {
    p.name: p for p in (GPU, MODEL_OFFLOAD, GROUP_OFFLOAD, SEQUENTIAL_OFFLOAD)}


@dataclass(frozen=True)
class MemoryProfile:
    placement: Placement | str = GPU
    weights: Weights = "none"
    vae_tiling_above: int = 1024  # px: tile the VAE decode when width or height is larger

    def __post_init__(self) -> None:
        if isinstance(self.placement, str):
            if self.placement not in PLACEMENTS:
                raise MemoryProfileError(f"unknown placement {self.placement!r}: one of "
                                         f"{', '.join(PLACEMENTS)}")
            object.__setattr__(self, "placement", PLACEMENTS[self.placement])
        try:
            object.__setattr__(self, "weights", weights_of(self.weights))
        except ValueError as exc:
            raise MemoryProfileError(str(exc)) from exc

    @property
    def name(self) -> str:
        name = self.placement.name
        return name if self.weights == "none" else f"{name}+{self.weights}"

    @property
    def quantized(self) -> bool:
        return self.weights != "none"

    def expected_peak_gb(self, *, resident_models: int = 2, megapixels: float = 1.0) -> float:
        return self.placement.expected_peak_gb(
            quantized=self.quantized, resident_models=resident_models, megapixels=megapixels)

    def configure_vae(self, pipeline: FluxPipeline, width: int, height: int) -> None:
        """Tile the VAE decode for images larger than this profile's threshold."""
        if max(width, height) > self.vae_tiling_above:
            pipeline.vae.enable_tiling()
        else:
            pipeline.vae.disable_tiling()


EIGHT_GB = MemoryProfile(GROUP_OFFLOAD, "int8")


def parse_profile(setting: str) -> MemoryProfile | None:
    """`placement[+weights]`, or `8gb`; None for `auto` (see `choose_profile`)."""
    text = setting.strip().lower()
    if text == "auto":
        return None
    if text == "8gb":
        return EIGHT_GB
    placement, _, weights = text.partition("+")
    return MemoryProfile(placement, weights or "none")  # type: ignore[arg-type]


def resolve_profile(setting: str | MemoryProfile, device: torch.device | str, *,
                    resident_models: int = 2, megapixels: float = 1.0,
                    quantize: bool = True) -> MemoryProfile:
    """The profile a setting names, `auto` chosen from free memory (see `choose_profile`),
    checked against `device`. `quantize=False` keeps `auto` to the pipeline's own dtype."""
    device = torch.device(device)
    profile = setting if isinstance(setting, MemoryProfile) else parse_profile(setting)
    if profile is None:
        if device.type != "cuda":
            profile = MemoryProfile(GPU)  # on a CPU device: everything where it already is
        else:
            free, _ = torch.cuda.mem_get_info(device)
            profile = choose_profile(free / 1e9, resident_models=resident_models,
                                     megapixels=megapixels,
                                     eight_bit=_eight_bit_format(device) if quantize else None)
    profile.placement.check(device)
    return profile


def choose_profile(free_gb: float, *, eight_bit: Weights | None = "int8",
                   resident_models: int = 2, megapixels: float = 1.0) -> MemoryProfile:
    """The fastest profile whose expected peak fits `free_gb` with a margin; with
    `eight_bit=None`, unquantized ones only."""
    formats: list[Weights] = ["none"] if eight_bit is None else ["none", eight_bit]
    candidates = [MemoryProfile(placement, weights)
                  for placement in (GPU, MODEL_OFFLOAD, GROUP_OFFLOAD) for weights in formats]
    for profile in candidates:
        peak = profile.expected_peak_gb(resident_models=resident_models, megapixels=megapixels)
        if peak + SAFETY_MARGIN_GB <= free_gb:
            return profile
    return MemoryProfile(SEQUENTIAL_OFFLOAD, formats[-1])


@contextmanager
def hooks_lifted(pipeline: FluxPipeline, placement: Placement,
                 device: torch.device | str) -> Iterator[None]:
    """Accelerate's offload hooks off while LoRA layers are added or removed, then back.

    diffusers lifts them itself but puts them back for the default accelerator, losing an
    explicit device (and failing outright with a CPU device); placements that do not
    lift hooks (group offloading: diffusers re-applies it with its own settings) pass.
    """
    if not placement.lifts_hooks:
        yield
        return
    pipeline.remove_all_hooks()
    try:
        yield
    finally:
        placement.apply(pipeline, device)


def _eight_bit_format(device: torch.device) -> Weights:
    """float8 where the card has fp8 units (compute capability 8.9+), else int8."""
    return "float8" if torch.cuda.get_device_capability(device) >= (8, 9) else "int8"
