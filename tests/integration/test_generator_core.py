"""The generation core on tiny FLUX pipelines (schnell without, dev with a guidance
embedding), real diffusers, peft and quanto on the CPU: seeds, LoRAs and the adapter cache,
memory profiles, hot swaps, cancellation, PNGs. One path: a job is a batch of one."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("optimum.quanto")

from fluxkit.placements import MemoryProfile
from fluxkit.tiny import random_lora_bytes
from generator_service.adapters import AdapterCache, AdapterError, LoraRef
from generator_service.pipelines import (
    Cancelled,
    FluxGenerator,
    GenerationRequest,
)
from generator_service.render import png_parameters

pytestmark = pytest.mark.integration
CPU = torch.device("cpu")
SOURCES = {"schnell": None, "dev": None}
SMALL = {"width": 64, "height": 64, "steps": 3}


@pytest.fixture(scope="module")
def loras() -> dict[str, bytes]:
    """Random LoRAs of three ranks for the tiny dev (the trainer's own are tested with it:
    tests/integration/test_trainer_training.py, test_training_learns.py)."""
    return {"anna": random_lora_bytes(4, seed=1), "ben": random_lora_bytes(8, seed=2),
            "cleo": random_lora_bytes(16, seed=3)}


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
    # The same seed alone or beside another image: the same picture, up to batched rounding.
    assert np.abs(single[0] - first[1]).mean() < 0.5
    assert np.abs(single[0] - first[0]).mean() > 5


def test_schnell_has_no_guidance_embedding_and_dev_has_one(generator):
    assert not generator.pipelines["schnell"].transformer.config.guidance_embeds
    assert generator.pipelines["dev"].transformer.config.guidance_embeds
    (image,) = generator.generate(request("schnell", steps=None))
    # The contracts' defaults: schnell 4 steps and no guidance (none written in the PNG).
    assert (image.parameters["steps"], image.parameters["guidance"]) == (4, None)
    assert "guidance" not in png_parameters(image.png())
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


def test_a_lora_over_the_slots_rank_is_refused_not_reshaped(loras):
    slot = make_generator(hotswap=True, slot_rank=8)
    slot.generate(request(lora=ref(loras, "ben")))  # rank 8: fits
    shapes = {n: p.shape for n, p in slot.pipelines["dev"].transformer.named_parameters()
              if "lora_" in n}
    with pytest.raises(AdapterError, match="rank 16, over the hot-swap slot's 8"):
        slot.generate(request(lora=ref(loras, "cleo")))
    assert shapes == {n: p.shape for n, p in slot.pipelines["dev"].transformer.named_parameters()
                      if "lora_" in n}


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
    """All of a job's images share one loop: steps count once, whatever the images."""
    seen: list[tuple[int, int]] = []
    outcome = generator.generate(request(steps=5, num_images=2), on_step=lambda s, t: seen.append((s, t)),
                                 should_stop=lambda: len(seen) >= 2)
    assert outcome == Cancelled(steps_done=2, total_steps=5)
    assert seen == [(1, 5), (2, 5)]
    assert generator.generate(request(), should_stop=lambda: True) == Cancelled(0, 3)
    done: list[tuple[int, int]] = []
    generator.generate(request(num_images=2), on_step=lambda s, t: done.append((s, t)))
    assert done == [(s, 3) for s in range(1, 4)]


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
    assert outcome == Cancelled(steps_done=1, total_steps=3)
    # Stopped at the last step: the images are not decoded either.
    seen.clear()
    outcome = generator.generate(request(num_images=2), on_step=lambda s, t: seen.append(s),
                                 should_stop=lambda: len(seen) >= 3)
    assert outcome == Cancelled(steps_done=3, total_steps=3)
    batch = [request(seed=1),
             dataclasses.replace(request(seed=5, num_images=2), prompt="a red fox")]
    seen.clear()
    outcome = generator.generate_batch(batch, on_step=lambda s, t: seen.append(s),
                                       should_stop=lambda: len(seen) >= 2)
    assert outcome == Cancelled(steps_done=2, total_steps=3)
    assert calls == []
    assert not isinstance(generator.generate(request(num_images=2)), Cancelled)
    assert not isinstance(generator.generate_batch(batch), Cancelled)
    assert calls == [(2, 16, 8, 8), (3, 16, 8, 8)]  # one decode per loop, all its images


def test_images_in_loops_of_one_decode_after_all_and_a_cancel_waits_one_image(
        generator, monkeypatch):
    """On a CPU each image gets a loop of its own (a cancel waits for one image's step, not
    four's); every image is denoised before any is decoded, so a cancel never waits for a
    decode either."""
    calls = decode_spy(monkeypatch, generator)
    monkeypatch.setattr(generator, "images_per_loop", 1)
    seen: list[tuple[int, int]] = []
    outcome = generator.generate(request(num_images=3), on_step=lambda s, t: seen.append((s, t)),
                                 should_stop=lambda: len(seen) >= 4)  # in the second loop
    assert outcome == Cancelled(steps_done=4, total_steps=9) and calls == []
    seen.clear()
    images = generator.generate(request(num_images=3), on_step=lambda s, t: seen.append((s, t)))
    assert [i.seed for i in images] == [request().seed + i for i in range(3)]
    assert seen[-1] == (9, 9)  # progress runs over every loop's steps
    assert calls == [(1, 16, 8, 8)] * 3  # decoded after the three loops, one by one
    monkeypatch.setattr(generator, "images_per_loop", None)
    together = generator.generate(request(num_images=3))
    for alone, batched in zip(images, together, strict=True):  # same seeds, same pictures
        difference = np.abs(np.asarray(alone.image, dtype=int) - np.asarray(batched.image, dtype=int))
        assert difference.max() <= 2


def test_a_cancel_during_the_prompt_starts_no_step(generator, monkeypatch):
    stop = False
    seen: list[int] = []

    def run(job, requests):
        nonlocal stop
        stop = False
        seen.clear()
        return job(requests, on_step=lambda s, t: seen.append(s), should_stop=lambda: stop)

    calls = decode_spy(monkeypatch, generator)
    pipeline = generator.pipelines["dev"]
    encode = pipeline.encode_prompt

    def encode_then_cancel(*args, **kwargs):
        nonlocal stop
        stop = True
        return encode(*args, **kwargs)

    monkeypatch.setattr(pipeline, "encode_prompt", encode_then_cancel)
    assert run(generator.generate, request(num_images=2)) == Cancelled(0, 3)
    assert run(generator.generate_batch, [request(seed=1), request(seed=7)]) == Cancelled(0, 3)
    assert seen == [] and calls == []


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

    expected = own([requests[0].prompt] * 2, [11, 12])
    assert len(single) == len(expected) == 2
    for image, picture in zip(single, expected, strict=True):
        assert np.array_equal(np.asarray(image.image), np.asarray(picture))
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
