"""The training step feeds the transformer what `FluxPipeline` feeds it when sampling.

A spy stands in for the transformer's forward and answers with the velocity that is exactly
right under the pipeline's convention for a clean latent it knows: with
`x_t = (1 - t)·x_0 + t·noise` and the transformer told `timestep = t`, the velocity is
`noise - x_0 = (x_t - x_0) / t`, in packed latents. Sampling with that answer must land
on `x_0` (which shows the convention is the pipeline's), and a training step given that
answer must have no loss (which shows the trainer noises, packs, times and targets the same
way). A flipped target or another packing makes the loss large.
"""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("peft")

from diffusers import FluxPipeline

from fluxkit.tiny import build_tiny_flux
from tests.unit.test_trainer_loop import CONFIG, tiny_examples
from trainer_service import training
from trainer_service.training import LoraTrainer, encode_examples

CPU = torch.device("cpu")
SIDE = 64  # px: 8×8 latents, 4×4 packed tokens of 64 channels


PIPELINE_PACKING = FluxPipeline._pack_latents  # kept: a test below replaces it


def pack(latents: torch.Tensor) -> torch.Tensor:
    """Latents packed as the pipeline packs them."""
    batch, channels, height, width = latents.shape
    return PIPELINE_PACKING(latents, batch, channels, height, width)


class OracleSpy:
    """Replaces a transformer's `forward`: records its inputs and returns the pipeline
    convention's exact velocity for the clean (packed) latent `clean(kwargs)` names."""

    def __init__(self, transformer, clean) -> None:
        self.forward = transformer.forward
        self.clean = clean
        self.calls: list[dict] = []

    def __call__(self, *, hidden_states, timestep, **kwargs):
        self.calls.append({"hidden_states": hidden_states.detach().clone(),
                           "timestep": timestep.detach().clone(), **kwargs})
        real = self.forward(hidden_states=hidden_states, timestep=timestep, **kwargs)[0]
        x0 = self.clean(kwargs)
        velocity = (hidden_states - x0) / timestep.view(-1, 1, 1)
        # The real output times 0 keeps the graph, so the trainer's backward still runs.
        return (velocity.detach().to(real.dtype) + 0 * real,)


def test_the_pipeline_samples_with_that_convention(monkeypatch):
    pipeline = build_tiny_flux()
    x0 = pack(torch.randn(1, 16, SIDE // 8, SIDE // 8, generator=torch.Generator().manual_seed(1)))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
    spy = OracleSpy(pipeline.transformer, lambda kwargs: x0)
    monkeypatch.setattr(pipeline.transformer, "forward", spy)
    out = pipeline("a photo of sks person", height=SIDE, width=SIDE, num_inference_steps=5,
                   latents=noise, output_type="latent", max_sequence_length=32).images
    assert torch.allclose(out, x0, atol=1e-5)  # the oracle's velocity leads to x_0
    timesteps = [float(call["timestep"]) for call in spy.calls]
    assert timesteps[0] == 1.0 and timesteps == sorted(timesteps, reverse=True)
    for call in spy.calls:  # x_t = (1 - t)·x_0 + t·noise at every step
        t = call["timestep"].view(-1, 1, 1)
        assert torch.allclose(call["hidden_states"], (1 - t) * x0 + t * noise, atol=1e-5)


def oracle_trainer(monkeypatch) -> tuple[LoraTrainer, OracleSpy, OracleSpy]:
    """A trainer over three examples whose transformer answers like the oracle, and the
    pipeline's own calls for comparison."""
    pipeline = build_tiny_flux()
    # A caption each, so the oracle can tell the examples apart by their text tensors (one
    # caption shared by every photo is encoded once, and its tensors shared).
    examples = [dataclasses.replace(example, caption=f"{example.caption}, photo {number}")
                for number, example in enumerate(tiny_examples())]
    encoded = encode_examples(pipeline, examples, device=CPU, dtype=torch.float32,
                              max_sequence_length=CONFIG.max_sequence_length)
    trainer = LoraTrainer(pipeline.transformer, encoded, CONFIG, device=CPU,
                          dtype=torch.float32, scheduler_config=pipeline.scheduler.config)

    def clean(kwargs) -> torch.Tensor:  # which example: the trainer passes its own tensors
        (example,) = [e for e in encoded if e.pooled_prompt_embeds is kwargs["pooled_projections"]]
        return pack(example.latents)

    spy = OracleSpy(trainer.transformer, clean)
    monkeypatch.setattr(trainer.transformer, "forward", spy)
    sampler = build_tiny_flux()
    sampling = OracleSpy(sampler.transformer, lambda kwargs: 0)
    monkeypatch.setattr(sampler.transformer, "forward", sampling)
    sampler("a photo of sks person", height=SIDE, width=SIDE, num_inference_steps=1,
            guidance_scale=CONFIG.guidance_scale, output_type="latent", max_sequence_length=32)
    return trainer, spy, sampling


def test_a_training_step_follows_the_pipelines_convention(monkeypatch):
    trainer, spy, sampling = oracle_trainer(monkeypatch)
    losses = [trainer.train_step() for _ in range(6)]
    assert max(losses) < 1e-8, losses  # the oracle's answer is the trainer's target
    assert len({float(call["timestep"]) for call in spy.calls}) == 6  # sigmas vary
    assert all(0 < float(call["timestep"]) <= 1 for call in spy.calls)
    (sampled,) = sampling.calls
    for call in spy.calls:  # the same positions, guidance and shapes as when sampling
        assert call["hidden_states"].shape == sampled["hidden_states"].shape
        assert torch.equal(call["img_ids"], sampled["img_ids"])
        assert torch.equal(call["guidance"], sampled["guidance"])
        assert call["txt_ids"].shape == sampled["txt_ids"].shape
        assert call["timestep"].shape == sampled["timestep"].shape


def other_packing(latents, batch, channels, height, width):
    """Channels last within each 2×2 patch: the same numbers, FLUX would read them wrong."""
    latents = latents.view(batch, channels, height // 2, 2, width // 2, 2)
    return latents.permute(0, 2, 4, 3, 5, 1).reshape(batch, (height // 2) * (width // 2),
                                                     channels * 4)


def other_unpacking(latents, height, width, vae_scale_factor):
    batch, _, channels = latents.shape
    h, w = 2 * (height // (vae_scale_factor * 2)), 2 * (width // (vae_scale_factor * 2))
    latents = latents.view(batch, h // 2, w // 2, 2, 2, channels // 4)
    return latents.permute(0, 5, 1, 3, 2, 4).reshape(batch, channels // 4, h, w)


@pytest.mark.parametrize("broken", ["flipped target", "other packing"])
def test_the_check_catches_another_convention(monkeypatch, broken):
    trainer, _, _ = oracle_trainer(monkeypatch)
    if broken == "flipped target":
        monkeypatch.setattr(training, "velocity_target", lambda latents, noise: latents - noise)
    else:
        monkeypatch.setattr(FluxPipeline, "_pack_latents", staticmethod(other_packing))
        monkeypatch.setattr(FluxPipeline, "_unpack_latents", staticmethod(other_unpacking))
    assert min(trainer.train_step() for _ in range(3)) > 0.1
