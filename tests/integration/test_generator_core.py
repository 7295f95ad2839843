"""The generation core on tiny FLUX pipelines (schnell without, dev with a guidance
embedding), real diffusers, peft and quanto on the CPU: seeds, LoRAs and the adapter cache,
memory profiles, hot swaps, cancellation, PNGs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("optimum.quanto")

from generator_service.adapters import AdapterCache, LoraRef
from generator_service.memory import MemoryProfile
from generator_service.pipelines import (
    Cancelled,
    FluxGenerator,
    GenerationRequest,
)
from generator_service.render import png_parameters
from tests.unit.test_trainer_loop import CONFIG, tiny_examples
from trainer_service.flux import build_tiny_flux
from trainer_service.training import LoraTrainer, encode_examples

CPU = torch.device("cpu")
SOURCES = {"schnell": None, "dev": None}
SMALL = {"width": 64, "height": 64, "steps": 3}


def trained_lora(seed: int) -> bytes:
    """A few LoRA steps with a high learning rate: visibly different output."""
    pipeline = build_tiny_flux()
    encoded = encode_examples(pipeline, tiny_examples(), device=CPU, dtype=torch.float32,
                              max_sequence_length=32)
    config = dataclasses.replace(CONFIG, seed=seed, learning_rate=1e-2, steps=3)
    trainer = LoraTrainer(pipeline.transformer, encoded, config, device=CPU,
                          dtype=torch.float32)
    for _ in range(config.steps):
        trainer.train_step()
    return trainer.lora_bytes()


@pytest.fixture(scope="module")
def loras() -> dict[str, bytes]:
    return {"anna": trained_lora(1), "ben": trained_lora(2), "cleo": trained_lora(3)}


def make_generator(profile="gpu", **options) -> FluxGenerator:
    return FluxGenerator.load(SOURCES, device=CPU, dtype=torch.float32, profile=profile,
                              **options)


@pytest.fixture(scope="module")
def generator() -> FluxGenerator:
    return make_generator(adapter_cache=AdapterCache(max_adapters=2))


def pixels(result) -> np.ndarray:
    assert not isinstance(result, Cancelled)
    return np.stack([np.asarray(image.image, dtype=np.int16) for image in result])


def request(model="dev", **fields) -> GenerationRequest:
    return GenerationRequest("a photo of sks person", model=model, **{"seed": 3, **SMALL,
                                                                        **fields})


def ref(loras, user: str) -> LoraRef:
    return LoraRef(f"model-{user}", lambda: loras[user])


@pytest.mark.parametrize("model", ["schnell", "dev"])
def test_same_seed_same_pixels_other_seed_other_pixels(generator, model):
    first = pixels(generator.generate(request(model, num_images=2)))
    assert first.shape == (2, 64, 64, 3)
    assert np.array_equal(first, pixels(generator.generate(request(model, num_images=2))))
    assert not np.array_equal(first[0], first[1])  # image i uses seed + i
    single = pixels(generator.generate(request(model, seed=4)))
    assert np.array_equal(single[0], first[1])  # the same seed, alone or in a batch
    assert not np.array_equal(single[0], first[0])


def test_schnell_has_no_guidance_embedding_and_dev_has_one(generator):
    assert not generator.pipelines["schnell"].transformer.config.guidance_embeds
    assert generator.pipelines["dev"].transformer.config.guidance_embeds
    (image,) = generator.generate(request("schnell", steps=None))
    assert (image.parameters["steps"], image.parameters["guidance"]) == (4, 0.0)
    (image,) = generator.generate(request("dev", steps=1))
    assert image.parameters["guidance"] == 3.5


def test_lora_changes_the_output_and_removing_it_restores_the_base(generator, loras):
    base = pixels(generator.generate(request()))
    with_lora = pixels(generator.generate(request(lora=ref(loras, "anna"))))
    assert np.abs(with_lora - base).mean() > 0.3  # pixels 0–255; the tiny VAE damps it
    half = pixels(generator.generate(request(lora=ref(loras, "anna"), lora_scale=0.5)))
    assert not np.array_equal(half, with_lora)
    assert np.array_equal(pixels(generator.generate(request())), base)


def test_a_returning_user_costs_no_reload_and_the_cache_evicts(loras):
    generator = make_generator(adapter_cache=AdapterCache(max_adapters=2))
    anna = pixels(generator.generate(request(lora=ref(loras, "anna"))))
    generator.generate(request(lora=ref(loras, "ben")))
    again = pixels(generator.generate(request(lora=ref(loras, "anna"))))
    assert np.array_equal(anna, again)
    assert (generator.cache.fetches, generator.adapter_loads) == (2, 2)

    generator.generate(request(lora=ref(loras, "cleo")))  # over the bound: ben goes
    assert "model-ben" not in generator.cache and generator.cache.evictions == 1
    resident = generator.pipelines["dev"].get_list_adapters()["transformer"]
    assert len(resident) == 2  # evicted from the pipeline too
    generator.generate(request(lora=ref(loras, "ben")))
    assert (generator.cache.fetches, generator.adapter_loads) == (4, 4)
    assert generator.forget_adapter("model-ben") and "model-ben" not in generator.cache


def test_hot_swap_slot_gives_the_resident_adapter_output(generator, loras):
    slot = make_generator(hotswap=True)
    for user in ("anna", "ben", "anna"):
        expected = generator.generate(request(lora=ref(loras, user), lora_scale=0.7))
        got = slot.generate(request(lora=ref(loras, user), lora_scale=0.7))
        assert np.abs(pixels(got) - pixels(expected)).max() <= 1, user
    assert slot.adapter_loads == 3 and slot.cache.fetches == 2
    slot.generate(request(lora=ref(loras, "anna"), lora_scale=0.7))
    assert slot.adapter_loads == 3  # the same LoRA and scale: nothing swapped
    assert np.array_equal(pixels(slot.generate(request())), pixels(generator.generate(request())))


@pytest.mark.parametrize("profile", ["model_offload", "group_offload", "gpu+float8", "gpu+int8",
                                     "model_offload+int8", "group_offload+int8"])
def test_memory_profiles_that_run_on_cpu_stay_close_to_the_plain_output(
        generator, loras, profile):
    other = make_generator(profile)
    assert other.profile.name == profile
    for lora in (None, ref(loras, "anna")):
        plain = pixels(generator.generate(request(lora=lora)))
        got = pixels(other.generate(request(lora=lora)))
        assert np.abs(got - plain).mean() < 2.0, (profile, lora)
    if other.profile.quantized:  # the LoRA still matters through the slot
        assert np.abs(got - pixels(other.generate(request()))).mean() > 0.3


def test_cancellation_stops_early(generator):
    seen: list[tuple[int, int]] = []
    outcome = generator.generate(request(steps=5, num_images=2), on_step=lambda s, t: seen.append((s, t)),
                                 should_stop=lambda: len(seen) >= 2)
    assert outcome == Cancelled(steps_done=2, total_steps=10, images_done=0)
    assert seen == [(1, 10), (2, 10)]
    assert generator.generate(request(), should_stop=lambda: True) == Cancelled(0, 3, 0)
    done: list[tuple[int, int]] = []
    generator.generate(request(num_images=2), on_step=lambda s, t: done.append((s, t)))
    assert done == [(s, 6) for s in range(1, 7)]


def decode_spy(monkeypatch, generator, model="dev", on_call=None) -> list[tuple]:
    """Every `vae.decode` call's latent shape; `on_call()` runs before each."""
    vae = generator.pipelines[model].vae
    decode, calls = vae.decode, []

    def spy(latents, *args, **kwargs):
        calls.append(tuple(latents.shape))
        if on_call is not None:
            on_call()
        return decode(latents, *args, **kwargs)

    monkeypatch.setattr(vae, "decode", spy)
    return calls


def test_a_cancelled_job_never_decodes(generator, monkeypatch):
    calls = decode_spy(monkeypatch, generator)
    seen: list[int] = []
    outcome = generator.generate(request(num_images=2), on_step=lambda s, t: seen.append(s),
                                 should_stop=lambda: len(seen) >= 1)
    assert outcome == Cancelled(steps_done=1, total_steps=6, images_done=0)
    # Stopped at the last step of the first image: that image is not decoded either.
    seen.clear()
    outcome = generator.generate(request(num_images=2), on_step=lambda s, t: seen.append(s),
                                 should_stop=lambda: len(seen) >= 3)
    assert outcome == Cancelled(steps_done=3, total_steps=6, images_done=0)
    batch = [request(seed=1),
             dataclasses.replace(request(seed=5, num_images=2), prompt="a red fox")]
    seen.clear()
    outcome = generator.generate_batch(batch, on_step=lambda s, t: seen.append(s),
                                       should_stop=lambda: len(seen) >= 2)
    assert outcome == Cancelled(steps_done=2, total_steps=3, images_done=0)
    assert calls == []
    assert not isinstance(generator.generate_batch(batch), Cancelled)
    assert calls == [(3, 16, 8, 8)]  # the spy sees decodes: one for the whole batch


def test_a_cancel_during_a_decode_or_the_prompt_starts_no_more_steps(generator, monkeypatch):
    stop = False
    seen: list[int] = []

    def cancel() -> None:
        nonlocal stop
        stop = True

    def run(job, requests):
        nonlocal stop
        stop = False
        seen.clear()
        return job(requests, on_step=lambda s, t: seen.append(s), should_stop=lambda: stop)

    calls = decode_spy(monkeypatch, generator, on_call=cancel)  # cancelled while decoding
    outcome = run(generator.generate, request(num_images=3))
    assert outcome == Cancelled(steps_done=3, total_steps=9, images_done=1)
    assert seen == [1, 2, 3] and len(calls) == 1  # the second image never started

    pipeline = generator.pipelines["dev"]
    encode = pipeline.encode_prompt

    def encode_then_cancel(*args, **kwargs):
        cancel()
        return encode(*args, **kwargs)

    monkeypatch.setattr(pipeline, "encode_prompt", encode_then_cancel)
    assert run(generator.generate, request(num_images=2)) == Cancelled(0, 6, 0)
    assert run(generator.generate_batch, [request(seed=1), request(seed=7)]) == Cancelled(0, 3, 0)
    assert seen == [] and len(calls) == 1


@pytest.mark.parametrize(("placement", "side"), [
    ("gpu", 64), ("gpu", 96), ("model_offload", 96), ("group_offload", 64)])
def test_decoding_the_latents_ourselves_gives_the_pipelines_own_pixels(placement, side):
    """The pipeline stops at latents and `_decode` finishes: bit for bit what
    `FluxPipeline(output_type="pil")` gives, tiled (96 px over a 64 px threshold; the tiny
    VAE tiles above 64 px) or not, with the VAE offloaded or not."""
    generator = make_generator(MemoryProfile(placement, vae_tiling_above=64))
    pipeline = generator.pipelines["dev"]
    size = {"width": side, "height": side}
    requests = [request(**size, seed=11, num_images=2),
                dataclasses.replace(request(**size, seed=20), prompt="a red fox")]
    single = generator.generate(requests[0])
    batched = generator.generate_batch(requests)
    assert pipeline.vae.use_tiling == (side > 64)

    def own(prompts, seeds):
        with torch.no_grad():
            encoded = [pipeline.encode_prompt(p, prompt_2=None, max_sequence_length=512,
                                              device=pipeline._execution_device) for p in prompts]
        return pipeline(prompt_embeds=torch.cat([e[0] for e in encoded]),
                        pooled_prompt_embeds=torch.cat([e[1] for e in encoded]),
                        **size, num_inference_steps=3, guidance_scale=3.5, output_type="pil",
                        generator=[torch.Generator(device="cpu").manual_seed(s) for s in seeds],
                        ).images

    for index, image in enumerate(single):
        (expected,) = own([requests[0].prompt], [11 + index])
        assert np.array_equal(np.asarray(image.image), np.asarray(expected))
    expected = own([requests[0].prompt] * 2 + [requests[1].prompt], [11, 12, 20])
    got = [image.image for images in batched for image in images]
    assert len(got) == len(expected) == 3
    for a, b in zip(got, expected, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_generated_png_carries_the_parameters(generator, loras):
    (image,) = generator.generate(request(lora=ref(loras, "anna"), lora_scale=0.8))
    text = png_parameters(image.png())
    assert text == {"prompt": "a photo of sks person", "model": "dev",
                    "base_model": "tiny-random-flux-dev", "seed": "3", "steps": "3",
                    "guidance": "3.5", "lora_id": "model-anna", "lora_scale": "0.8",
                    "size": "64x64", "Software": "terra"}


def test_large_images_tile_the_vae(generator):
    vae = generator.pipelines["schnell"].vae
    generator.generate(request("schnell", width=1040, height=64, steps=1))
    assert vae.use_tiling
    generator.generate(request("schnell", steps=1))
    assert not vae.use_tiling


def test_compiled_generator_needs_the_slot():
    with pytest.raises(ValueError, match="hot swap only"):
        make_generator("gpu+int8", hotswap=False)


def test_compatible_requests_batch_into_one_loop_like_separate_runs():
    import numpy as np
    import torch

    from generator_service.pipelines import FluxGenerator, GenerationRequest

    generator = FluxGenerator.load(None, device="cpu", dtype=torch.float32, profile="gpu")
    requests = [GenerationRequest(prompt="a red fox", width=64, height=64, steps=2, seed=3),
                GenerationRequest(prompt="a blue bird", width=64, height=64, steps=2, seed=9,
                                  num_images=2)]
    batched = generator.generate_batch(requests)
    alone = [generator.generate(r) for r in requests]
    assert [len(images) for images in batched] == [1, 2]
    for together, separate in zip(batched, alone, strict=True):
        for a, b in zip(together, separate, strict=True):
            assert a.seed == b.seed and a.parameters["prompt"] == b.parameters["prompt"]
            difference = np.abs(np.asarray(a.image, dtype=np.float32)
                                - np.asarray(b.image, dtype=np.float32)).mean()
            assert difference < 2.0  # batched matmuls round differently, nothing more
