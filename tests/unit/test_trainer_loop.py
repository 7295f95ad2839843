"""The LoRA training loop on the tiny random FLUX, built in memory: loss, LoRA updates,
callbacks, cancellation, out-of-memory, checkpoints (real diffusers and peft, CPU)."""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("peft")

from PIL import Image

from fluxkit.errors import OutOfGpuMemory
from fluxkit.loading import base_model_name
from fluxkit.lora import MAX_RANK
from fluxkit.tiny import build_tiny_flux
from trainer_service.errors import CheckpointError, StopRequested
from trainer_service.preprocess import prepare_examples
from trainer_service.training import (
    LoraTrainer,
    TrainingCallbacks,
    TrainingConfig,
    downsample,
    encode_examples,
    train_lora,
)

CPU = torch.device("cpu")
CONFIG = TrainingConfig(
    trigger_word="sks", steps=6, rank=4, resolution=64, learning_rate=1e-3,
    max_sequence_length=32, base_model=base_model_name(None),
)


def noise_images(count: int = 3, seed: int = 0) -> list[Image.Image]:
    generator = torch.Generator().manual_seed(seed)
    sizes = [(64, 80), (100, 64), (70, 70), (64, 64)]
    return [
        Image.fromarray(
            torch.randint(0, 256, (h, w, 3), generator=generator, dtype=torch.uint8).numpy())
        for w, h in sizes[:count]
    ]


def tiny_examples(count: int = 3):
    return prepare_examples(noise_images(count), "sks", 64)


def tiny_trainer(config: TrainingConfig = CONFIG, dtype=torch.float32) -> LoraTrainer:
    pipeline = build_tiny_flux()
    encoded = encode_examples(pipeline, tiny_examples(), device=CPU, dtype=dtype,
                              max_sequence_length=config.max_sequence_length)
    return LoraTrainer(pipeline.transformer, encoded, config, device=CPU, dtype=dtype,
                       scheduler_config=pipeline.scheduler.config)


def lora_weights(trainer: LoraTrainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.lora_state_dict().items()}


def test_steps_have_finite_loss_and_change_only_the_lora():
    trainer = tiny_trainer()
    base = {k: v.clone() for k, v in trainer.transformer.state_dict().items() if "lora" not in k}
    before = lora_weights(trainer)
    losses = [trainer.train_step() for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
    after = lora_weights(trainer)
    assert before.keys() == after.keys() and len(after) > 0
    assert any("to_q" in k for k in after) and any("to_out.0" in k for k in after)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    for name, tensor in trainer.transformer.state_dict().items():
        if "lora" not in name:
            assert torch.equal(tensor, base[name]), name


def test_only_lora_parameters_reach_the_optimizer():
    trainer = tiny_trainer()
    assert trainer.parameters and all("lora_" in name for name in trainer.parameters)
    assert all(p.dtype == torch.float32 for p in trainer.parameters.values())
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in trainer.parameters.values()}


def test_each_distinct_caption_is_encoded_once_and_shared():
    pipeline = build_tiny_flux()
    encode_prompt, captions = pipeline.encode_prompt, []

    def counting(prompt, *args, **kwargs):
        captions.append(prompt)
        return encode_prompt(prompt, *args, **kwargs)

    pipeline.encode_prompt = counting
    examples = prepare_examples(noise_images(3), "sks", 64, captions=[None, "sks a cat", None])
    encoded = encode_examples(pipeline, examples, device=CPU, dtype=torch.float32,
                              max_sequence_length=32)

    assert sorted(captions) == sorted({example.caption for example in examples})
    assert encoded[0].prompt_embeds is encoded[2].prompt_embeds
    with torch.no_grad():
        alone, pooled, _ = encode_prompt(examples[1].caption, prompt_2=None, device=CPU,
                                         max_sequence_length=32)
    assert torch.equal(encoded[1].prompt_embeds, alone)
    assert torch.equal(encoded[1].pooled_prompt_embeds, pooled)


def test_position_ids_and_guidance_are_built_once_not_every_step(monkeypatch):
    from diffusers import FluxPipeline

    build, built = FluxPipeline._prepare_latent_image_ids, []

    def counting(*args):
        built.append(args)
        return build(*args)

    monkeypatch.setattr(FluxPipeline, "_prepare_latent_image_ids", staticmethod(counting))
    trainer = tiny_trainer()
    for _ in range(3):
        trainer.train_step()

    shapes = {example.latents.shape for example in trainer.encoded}
    assert len(built) == len(shapes)
    for image_ids, guidance in trainer.shape_inputs.values():
        assert (image_ids.device, image_ids.dtype) == (CPU, torch.float32)
        assert guidance is not None and guidance.tolist() == [CONFIG.guidance_scale]


def test_training_scheduler_is_not_the_pipelines_object():
    pipeline = build_tiny_flux()
    pipeline.scheduler.set_timesteps(2)  # what an inference call leaves behind
    encoded = encode_examples(pipeline, tiny_examples(1), device=CPU, dtype=torch.float32,
                              max_sequence_length=32)
    trainer = LoraTrainer(pipeline.transformer, encoded, CONFIG, device=CPU,
                          dtype=torch.float32, scheduler_config=pipeline.scheduler.config)
    assert trainer.scheduler is not pipeline.scheduler
    assert len(trainer.scheduler.timesteps) == trainer.scheduler.config.num_train_timesteps


def test_on_step_reports_every_step_and_checkpoints_every_n():
    steps, checkpoints = [], []
    callbacks = TrainingCallbacks(
        on_step=lambda step, total, loss: steps.append((step, total, loss)),
        on_checkpoint=lambda step, blob: checkpoints.append((step, len(blob))),
    )
    trainer = tiny_trainer(dataclasses.replace(CONFIG, checkpoint_every=2))
    trainer.run(callbacks)
    assert [(s, t) for s, t, _ in steps] == [(i, 6) for i in range(1, 7)]
    assert [s for s, _ in checkpoints] == [2, 4]  # the end is the result, not a checkpoint
    assert all(size > 0 for _, size in checkpoints)


def test_should_stop_cancels_within_one_step():
    stop = False
    done = []

    def on_step(step, total, loss):
        nonlocal stop
        done.append(step)
        stop = step == 2

    trainer = tiny_trainer()
    with pytest.raises(StopRequested) as cancelled:
        trainer.run(TrainingCallbacks(on_step=on_step, should_stop=lambda: stop))
    assert cancelled.value.step == 2
    assert done == [1, 2] and trainer.step == 2


def test_out_of_memory_becomes_a_readable_domain_error():
    def on_step(step, total, loss):
        if step == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    pipeline = build_tiny_flux()
    with pytest.raises(OutOfGpuMemory) as error:
        train_lora(pipeline, tiny_examples(), CONFIG, device=CPU, dtype=torch.float32,
                   callbacks=TrainingCallbacks(on_step=on_step))
    assert str(error.value) == (
        "ran out of GPU memory at 64 px, rank 4; "
        "try a lower resolution or rank, or the quantized base")
    assert isinstance(error.value.__cause__, torch.OutOfMemoryError)


def test_checkpoint_from_other_settings_is_refused():
    blob = tiny_trainer().checkpoint()
    with pytest.raises(CheckpointError, match="other settings"):
        tiny_trainer(dataclasses.replace(CONFIG, rank=8)).restore(blob)
    with pytest.raises(CheckpointError, match="cannot be read"):
        tiny_trainer().restore(b"not a checkpoint")


def test_checkpoint_round_trip_restores_weights_optimizer_and_rng():
    trainer = tiny_trainer()
    for _ in range(2):
        trainer.train_step()
    blob = trainer.checkpoint()
    expected = [trainer.train_step() for _ in range(2)]

    resumed = tiny_trainer()
    resumed.restore(blob)
    assert resumed.step == 2 and len(resumed.losses) == 2
    assert [resumed.train_step() for _ in range(2)] == expected
    final, resumed_final = lora_weights(trainer), lora_weights(resumed)
    assert all(torch.equal(final[k], resumed_final[k]) for k in final)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quantized_base_trains_the_lora_and_quantizes_only_the_base(dtype):
    from optimum.quanto import QLinear

    trainer = tiny_trainer(dataclasses.replace(CONFIG, quantize_base="qint8"), dtype)
    assert trainer.parameters and all("lora_" in name for name in trainer.parameters)
    before = lora_weights(trainer)
    losses = [trainer.train_step() for _ in range(2)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert all(p.dtype == torch.float32 for p in trainer.parameters.values())
    quantized = [n for n, m in trainer.transformer.named_modules() if isinstance(m, QLinear)]
    assert any(n.endswith("to_q.base_layer") for n in quantized)
    assert not any("lora_" in n for n in quantized)
    after = lora_weights(trainer)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_bfloat16_base_trains_a_float32_lora():
    trainer = tiny_trainer(dtype=torch.bfloat16)
    assert trainer.transformer.transformer_blocks[0].attn.to_q.base_layer.weight.dtype == (
        torch.bfloat16)
    assert all(p.dtype == torch.float32 for p in trainer.parameters.values())
    before = lora_weights(trainer)
    assert all(torch.isfinite(torch.tensor([trainer.train_step() for _ in range(2)])))
    after = lora_weights(trainer)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_gradient_checkpointing_gives_the_same_steps():
    plain = tiny_trainer()
    checkpointed = tiny_trainer(dataclasses.replace(CONFIG, gradient_checkpointing=True))
    assert checkpointed.transformer.is_gradient_checkpointing
    a = [plain.train_step() for _ in range(2)]
    b = [checkpointed.train_step() for _ in range(2)]
    assert a == pytest.approx(b, rel=1e-5)


def test_loss_curve_is_downsampled_to_step_and_mean_pairs():
    assert downsample([], 10) == []
    assert downsample([1.0, 3.0], 10) == [[1, 1.0], [2, 3.0]]
    curve = downsample([float(i) for i in range(1000)], 100)
    assert len(curve) == 100 and curve[0] == [10, 4.5] and curve[-1] == [1000, 994.5]


def test_rank_is_bounded_by_the_contract():
    assert dataclasses.replace(CONFIG, rank=MAX_RANK).rank == MAX_RANK
    with pytest.raises(ValueError, match=f"between 1 and {MAX_RANK}"):
        dataclasses.replace(CONFIG, rank=MAX_RANK + 1)
