"""Weight-only quantization with optimum-quanto that never touches LoRA layers.

A LoRA must be in place before its base is quantized: loading a LoRA onto a transformer
quanto has already quantized fails (FACTS.md). So a trainer adds its LoRA and then
quantizes, and a generator adds its hot-swap slot and then quantizes.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from diffusers import FluxPipeline

Weights = Literal["none", "float8", "int8"]
LORA_LAYERS = ("*lora_A*", "*lora_B*", "*lora_dropout*")


def weights_of(name: str | None) -> Weights:
    """A weight format from a setting: `int8`/`float8`, quanto's `qint8`/`qfloat8`, or
    None/`none` for the pipeline's own dtype."""
    text = "none" if name is None else name.strip().lower()
    text = text.removeprefix("q") if text in ("qint8", "qfloat8") else text
    if text not in get_args(Weights):
        raise ValueError(f"unknown weights {name!r}: one of {', '.join(get_args(Weights))}")
    return text  # type: ignore[return-value]


def quantize_module(module: torch.nn.Module, weights: Weights) -> None:
    """Quantize `module`'s weights in place (LoRA layers excluded) and freeze them."""
    if weights == "none":
        return
    from optimum.quanto import freeze, qfloat8, qint8, quantize

    quantize(module, weights={"float8": qfloat8, "int8": qint8}[weights],
             exclude=list(LORA_LAYERS))
    freeze(module)


def quantize_pipeline(pipeline: FluxPipeline, weights: Weights,
                      done: set[int] | None = None) -> None:
    """The transformer and T5 quantized (CLIP and the VAE are small and stay as they are).

    `done` holds ids of modules already quantized: a T5 shared by two pipelines once.
    """
    done = set() if done is None else done
    for module in (pipeline.transformer, pipeline.text_encoder_2):
        if module is None or id(module) in done:
            continue
        quantize_module(module, weights)
        done.add(id(module))
