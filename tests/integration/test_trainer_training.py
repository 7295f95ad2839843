"""Whole training cycle on the tiny FLUX saved and loaded like a real one: train, resume
from checkpoint bytes, load the LoRA into a fresh pipeline with diffusers, sample, unload."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

import safetensors.torch

from fluxkit.loading import load_flux_pipeline
from fluxkit.lora import read_lora
from fluxkit.tiny import build_tiny_flux, tiny_flux_folder
from tests.unit.test_trainer_loop import CONFIG, tiny_examples
from trainer_service.sampling import generate_samples, sample_prompts
from trainer_service.training import TrainingCallbacks, train_lora

pytestmark = pytest.mark.integration
CPU = torch.device("cpu")


def fresh_pipeline():
    return load_flux_pipeline(None, CPU, torch.float32)


def train(config=CONFIG, **kwargs):
    return train_lora(fresh_pipeline(), tiny_examples(), config, device=CPU,
                      dtype=torch.float32, **kwargs)


def pixels(images) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=np.int16) for image in images])


def test_tiny_flux_saves_as_a_diffusers_folder(tmp_path):
    build_tiny_flux().save_pretrained(tmp_path)
    assert (tmp_path / "model_index.json").exists()


def test_tiny_flux_is_built_once_per_process_and_loads_deterministically():
    assert tiny_flux_folder() is tiny_flux_folder()
    a, b = fresh_pipeline(), load_flux_pipeline(str(tiny_flux_folder()), CPU, torch.float32)
    assert a.transformer.config.guidance_embeds and a.vae_scale_factor == 8
    for name, tensor in a.transformer.state_dict().items():
        assert torch.equal(tensor, b.transformer.state_dict()[name])


def test_result_is_a_diffusers_lora_with_metadata():
    result = train()
    assert len(result.losses) == CONFIG.steps
    assert all(np.isfinite(result.losses))
    meta = json.loads(json.dumps(result.metadata))  # JSON-serialisable as it is
    assert meta["trigger_word"] == "sks" and meta["base_model"] == "tiny-random-flux-dev"
    assert (meta["rank"], meta["steps"], meta["resolution"]) == (4, 6, 64)
    assert [point[0] for point in meta["loss_curve"]] == [1, 2, 3, 4, 5, 6]
    assert meta["created"].endswith("+00:00")
    weights = safetensors.torch.load(result.lora)
    assert weights and all(k.startswith("transformer.") and "lora_" in k for k in weights)
    lora = read_lora(result.lora)
    assert lora.rank == 4 and lora.metadata["transformer.lora_alpha"] == 4
    assert sorted(lora.metadata["transformer.target_modules"]) == sorted(CONFIG.target_modules)


def test_resume_from_checkpoint_bytes_ends_with_the_same_lora():
    checkpoints: dict[int, bytes] = {}
    config = dataclasses.replace(CONFIG, checkpoint_every=3)
    whole = train(config, callbacks=TrainingCallbacks(
        on_checkpoint=lambda step, blob: checkpoints.setdefault(step, blob)))
    assert list(checkpoints) == [3]

    steps: list[int] = []
    resumed = train(config, resume_from=checkpoints[3],
                    callbacks=TrainingCallbacks(on_step=lambda s, t, loss: steps.append(s)))
    assert steps == [4, 5, 6]  # continues at step + 1
    # Tensor for tensor: safetensors writes its header's metadata in no fixed order.
    whole_weights, resumed_weights = (safetensors.torch.load(r.lora) for r in (whole, resumed))
    assert whole_weights.keys() == resumed_weights.keys()
    for name, tensor in whole_weights.items():
        assert torch.equal(tensor, resumed_weights[name]), name
    assert resumed.losses == whole.losses


def test_trained_lora_loads_changes_samples_and_unloads_to_the_base():
    result = train(dataclasses.replace(CONFIG, learning_rate=1e-2))
    pipeline = fresh_pipeline()
    prompts = sample_prompts("sks", 2)
    kwargs = {"height": 64, "width": 64, "num_inference_steps": 2, "seeds": [1, 2]}
    base = pixels(generate_samples(pipeline, None, prompts, **kwargs))
    with_lora = generate_samples(pipeline, result.lora, prompts, **kwargs)
    assert [image.size for image in with_lora] == [(64, 64), (64, 64)]
    assert np.abs(pixels(with_lora) - base).max() > 0
    assert not pipeline.get_list_adapters()  # unloaded again
    assert np.array_equal(pixels(generate_samples(pipeline, None, prompts, **kwargs)), base)


def test_samples_are_repeatable_for_the_same_seeds():
    pipeline = fresh_pipeline()
    kwargs = {"height": 64, "width": 64, "num_inference_steps": 2, "seeds": [7]}
    first = generate_samples(pipeline, None, ["a photo of sks person"], **kwargs)
    again = generate_samples(pipeline, None, ["a photo of sks person"], **kwargs)
    assert np.array_equal(pixels(first), pixels(again))
