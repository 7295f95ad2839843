"""Where a FLUX pipeline comes from: a hub id, a local folder, or the tiny offline FLUX.

`source=None` is the tiny random FLUX (`make run` and the tests), dev or schnell; it is
built once per process and loaded from its folder like a real checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from diffusers import FluxPipeline

from fluxkit.tiny import tiny_flux_folder

MODELS = ("schnell", "dev")
TINY_FLUX = "tiny-random-flux"  # how metadata names the tiny base models (+ "-dev"/"-schnell")
# T5 tokens each model was trained with: schnell's window is the shorter one.
MAX_SEQUENCE_LENGTH = {"schnell": 256, "dev": 512}
SHARED_COMPONENTS = ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "vae")


def load_flux_pipeline(source: str | None, device: torch.device | str = "cpu",
                       dtype: torch.dtype = torch.float32, *, model: str = "dev",
                       **components: Any) -> FluxPipeline:
    """A FLUX pipeline on `device` in `dtype`, progress bars off.

    `source` is a hub id or a local folder for `FluxPipeline.from_pretrained`; None is the
    tiny FLUX `model`. `components` replace the folder's own (shared encoders)."""
    _check_model(model)
    folder = str(tiny_flux_folder(model)) if source is None else source
    pipeline = FluxPipeline.from_pretrained(folder, dtype=dtype, **components)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(torch.device(device))


def load_flux_pipelines(sources: Mapping[str, str | None], *, dtype: torch.dtype,
                        share_encoders: bool = False) -> dict[str, FluxPipeline]:
    """One pipeline per model (`schnell`, `dev`) on the CPU, for a placement to place.

    With `share_encoders` (a placement that hooks nothing), real schnell and dev share one
    T5, CLIP and VAE: the weights are the same. Tiny pipelines never share (each is its
    own folder)."""
    pipelines: dict[str, FluxPipeline] = {}
    shared: dict[str, Any] = {}
    for model, source in sources.items():
        pipelines[model] = load_flux_pipeline(source, "cpu", dtype, model=model,
                                              **(shared if source is not None else {}))
        if share_encoders and source is not None and not shared:
            shared = {name: getattr(pipelines[model], name) for name in SHARED_COMPONENTS}
    return pipelines


def base_model_name(source: str | None, model: str = "dev") -> str:
    """What metadata calls the base model: the hub id or folder, or the tiny FLUX's name."""
    _check_model(model)
    return f"{TINY_FLUX}-{model}" if source is None else source


def _check_model(model: str) -> None:
    if model not in MODELS:
        raise ValueError(f"unknown FLUX model {model!r}: one of {', '.join(MODELS)}")
