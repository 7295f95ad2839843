"""Training learns its photos: a contrast on the tiny FLUX.

Two LoRAs are trained with the service's recipe (`train_lora`, on the saved tiny dev) on
two solid colours, four photos each, then sampled through the generator's own path from
the same seeds. Whatever the random base makes of the prompt, the difference between the
two LoRAs' samples must point toward the difference between their training latents: the
mean cosine between the two, over the samples, clearly above zero.

Measured here (8 samples, training seeds 0–4): 0.095–0.112 for the recipe, 0.001–0.020
with the latents packed another way for training, -0.099 to -0.122 with the target flipped.
The broken recipes are run too, so the threshold is shown to tell them apart.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffusers import FluxPipeline
from PIL import Image

from fluxkit.loading import load_flux_pipeline
from generator_service.pipelines import FluxGenerator, GenerationRequest
from tests.unit.test_trainer_convention import other_packing, other_unpacking
from trainer_service import training
from trainer_service.preprocess import prepare_examples
from trainer_service.training import TrainingConfig, encode_examples, train_lora

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CPU = torch.device("cpu")
COLOURS = {"red": (220, 40, 40), "blue": (40, 70, 220)}
PROMPT = "a photo of sks person"
TOKENS = 32  # T5 tokens, in training and sampling alike (512 gives the same figures, slower)
CONFIG = TrainingConfig(trigger_word="sks", steps=200, rank=8, resolution=64,
                        learning_rate=1e-2, max_sequence_length=TOKENS)
SAMPLES = 8
THRESHOLD = 0.05  # the recipe ≈ 0.10; another packing ≤ 0.02; a flipped target < 0


def photos(rgb: tuple[int, int, int], seed: int, count: int = 4) -> list[Image.Image]:
    """Solid photos of one colour, each shade a little off (as photos of one thing are)."""
    rng = np.random.default_rng(seed)
    shades = [np.clip(np.array(rgb) + rng.integers(-8, 9, 3), 0, 255) for _ in range(count)]
    return [Image.fromarray(np.full((64, 64, 3), shade, dtype=np.uint8)) for shade in shades]


def contrast(monkeypatch, recipe: str, seed: int = 0) -> float:
    """Mean cosine between sample differences and the training latents' difference."""
    loras, latents = {}, {}
    for colour, rgb in COLOURS.items():
        examples = prepare_examples(photos(rgb, seed), "sks", 64)
        encoded = encode_examples(load_flux_pipeline(None), examples, device=CPU,
                                  dtype=torch.float32, max_sequence_length=TOKENS)
        latents[colour] = torch.cat([e.latents for e in encoded]).mean(0)
        with monkeypatch.context() as broken:
            if recipe == "other packing":
                broken.setattr(FluxPipeline, "_pack_latents", staticmethod(other_packing))
                broken.setattr(FluxPipeline, "_unpack_latents", staticmethod(other_unpacking))
            elif recipe == "flipped target":
                broken.setattr(training, "velocity_target", lambda x0, noise: x0 - noise)
            loras[colour] = train_lora(load_flux_pipeline(None), examples,
                                       dataclasses.replace(CONFIG, seed=seed),
                                       device=CPU, dtype=torch.float32).lora

    generator = FluxGenerator.load(None, device=CPU, dtype=torch.float32, profile="gpu")
    vae = generator.pipelines["dev"].vae
    decode, decoded = vae.decode, []

    def keep_latents(z, *args, **kwargs):  # what the generator decodes, before the VAE
        decoded.append(z.detach().clone())
        return decode(z, *args, **kwargs)

    monkeypatch.setattr(vae, "decode", keep_latents)
    for colour in COLOURS:
        generator.generate(GenerationRequest(PROMPT, model="dev", lora=loras[colour], width=64,
                                             height=64, seed=1000, num_images=SAMPLES,
                                             max_sequence_length=TOKENS))
    red, blue = decoded
    toward = (latents["red"] - latents["blue"]).flatten()
    cosines = torch.nn.functional.cosine_similarity((red - blue).flatten(1), toward[None])
    return float(cosines.mean())


def test_a_lora_learns_its_photos(monkeypatch):
    assert contrast(monkeypatch, "the recipe") > THRESHOLD


@pytest.mark.parametrize("recipe", ["other packing", "flipped target"])
def test_a_broken_recipe_fails_the_same_threshold(monkeypatch, recipe):
    assert contrast(monkeypatch, recipe) < THRESHOLD
