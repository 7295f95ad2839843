"""Sample images from a freshly trained LoRA, on the base pipeline, with fixed seeds."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import FluxPipeline
from PIL import Image

from contracts.generation import MODEL_DEFAULTS, BaseModelName
from fluxkit.loading import MAX_SEQUENCE_LENGTH
from fluxkit.lora import load_lora
from fluxkit.placements import GPU, Placement, hooks_lifted

SAMPLE_ADAPTER = "terra_sample"
SAMPLE_TEMPLATES = (
    "a photo of {trigger} person",
    "a portrait of {trigger} person, soft window light",
    "{trigger} person hiking in the mountains, wide shot",
    "a watercolour painting of {trigger} person",
)


def sample_prompts(trigger_word: str, count: int = 4) -> list[str]:
    """Up to four prompts that each name the trigger word once."""
    if not 1 <= count <= len(SAMPLE_TEMPLATES):
        raise ValueError(f"between 1 and {len(SAMPLE_TEMPLATES)} samples, got {count}")
    return [t.format(trigger=trigger_word) for t in SAMPLE_TEMPLATES[:count]]


_DEV = MODEL_DEFAULTS[BaseModelName.DEV]  # samples are made as the generator makes dev images

def generate_samples(
    pipeline: FluxPipeline,
    lora: bytes | None,
    prompts: Sequence[str],
    *,
    height: int,
    width: int,
    seeds: Sequence[int] | None = None,
    num_inference_steps: int = int(_DEV["steps"]),
    guidance_scale: float = float(_DEV["guidance"]),
    max_sequence_length: int = MAX_SEQUENCE_LENGTH["dev"],
    placement: Placement = GPU,
    device: torch.device | str = "cpu",
) -> list[Image.Image]:
    """One image per prompt with `lora` loaded (None: the base alone), seed i for prompt i.

    The pipeline is a complete base pipeline (the training one has lost its encoders),
    already placed on `device` by `placement` (the kit's table); its hooks are lifted
    while the LoRA goes on and comes off, so the pipeline can be reused afterwards.
    """
    seeds = list(range(len(prompts))) if seeds is None else list(seeds)
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
    if lora is not None:
        with hooks_lifted(pipeline, placement, device):
            load_lora(pipeline, lora, adapter_name=SAMPLE_ADAPTER)
    try:
        images = []
        for prompt, seed in zip(prompts, seeds, strict=True):
            images.append(pipeline(
                prompt,
                height=height,
                width=width,
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                max_sequence_length=max_sequence_length,
                generator=torch.Generator(device="cpu").manual_seed(seed),
            ).images[0])
        return images
    finally:
        if lora is not None:
            with hooks_lifted(pipeline, placement, device):
                pipeline.unload_lora_weights()
