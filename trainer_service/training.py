"""LoRA training on a FLUX transformer, after diffusers' `train_dreambooth_lora_flux.py`.

1. Encode once: every image to VAE latents and every distinct caption to CLIP + T5
   embeddings, then drop the text encoders and the VAE from the pipeline (they are not
   needed again).
2. Add a peft LoRA to the frozen transformer (`fluxkit.lora`'s target modules, rank at
   most `MAX_RANK`); with a quantized base, quanto quantizes the base layers *after*
   the LoRA is in place and leaves the LoRA layers alone (FACTS.md: the other order fails).
3. Each step: one example, a flow-matching sigma, noisy packed latents, the FLUX
   guidance embedding when the transformer has one, loss against `noise - latents`,
   AdamW on the LoRA parameters only. The convention is the one `FluxPipeline` samples
   with: `x_t = (1 - t)·x_0 + t·noise`, the transformer told `timestep = t` (the
   scheduler's timestep / 1000) and predicting the velocity `noise - x_0`
   (tests/unit/test_trainer_convention.py holds both to it).

All randomness after set-up comes from one CPU generator seeded from the config, so a
run resumed from a checkpoint ends with the same LoRA as an uninterrupted one.
"""

from __future__ import annotations

import gc
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import safetensors.torch
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from fluxkit.errors import out_of_memory_as
from fluxkit.loading import MAX_SEQUENCE_LENGTH
from fluxkit.lora import MAX_RANK, TARGET_MODULES, transformer_lora_bytes
from fluxkit.quantize import quantize_module, weights_of
from trainer_service.errors import CheckpointError, StopRequested
from trainer_service.preprocess import TrainingExample

CHECKPOINT_FORMAT = 1
QuantizedBase = Literal["qint8", "qfloat8"]


@dataclass(frozen=True)
class TrainingConfig:
    trigger_word: str
    steps: int = 1000
    rank: int = 16
    alpha: float | None = None  # None: same as rank (scale 1)
    learning_rate: float = 1e-4
    resolution: int = 1024
    seed: int = 0
    guidance_scale: float = 1.0  # FLUX.1-dev's guidance embedding during training
    gradient_checkpointing: bool = False
    quantize_base: QuantizedBase | None = None
    checkpoint_every: int = 0  # 0: never call on_checkpoint
    target_modules: tuple[str, ...] = TARGET_MODULES
    max_sequence_length: int = MAX_SEQUENCE_LENGTH["dev"]  # T5 tokens
    max_grad_norm: float = 1.0
    weight_decay: float = 1e-4
    base_model: str = "black-forest-labs/FLUX.1-dev"
    loss_curve_points: int = 100

    def __post_init__(self) -> None:
        if not 1 <= self.rank <= MAX_RANK:
            raise ValueError(f"rank must be between 1 and {MAX_RANK}, got {self.rank}")

    @property
    def lora_alpha(self) -> float:
        return float(self.rank if self.alpha is None else self.alpha)


@dataclass
class TrainingCallbacks:
    """What the service hooks into the loop; every one is optional."""

    on_step: Callable[[int, int, float], None] | None = None  # (step, total, loss)
    should_stop: Callable[[], bool] | None = None  # checked before every step
    on_checkpoint: Callable[[int, bytes], None] | None = None  # (step, checkpoint bytes)


@dataclass
class TrainingResult:
    lora: bytes  # diffusers' LoRA safetensors, loadable with `load_lora_weights`
    metadata: dict[str, Any]  # JSON-serialisable
    losses: list[float] = field(repr=False)  # every step's loss


@dataclass(frozen=True)
class EncodedExample:
    latents: torch.Tensor  # (1, 16, h/8, w/8), shifted and scaled as the transformer sees them
    prompt_embeds: torch.Tensor  # (1, seq, joint_attention_dim), T5
    pooled_prompt_embeds: torch.Tensor  # (1, pooled_projection_dim), CLIP
    text_ids: torch.Tensor  # (seq, 3)


def train_lora(
    pipeline: FluxPipeline,
    examples: Sequence[TrainingExample],
    config: TrainingConfig,
    *,
    device: torch.device | str,
    dtype: torch.dtype,
    callbacks: TrainingCallbacks | None = None,
    resume_from: bytes | None = None,
) -> TrainingResult:
    """Train a LoRA on `pipeline`'s transformer and return it with its metadata.

    The pipeline is consumed: its text encoders and VAE are dropped after encoding and
    its transformer keeps the LoRA. Raises `StopRequested` when `should_stop()` says
    so, `OutOfGpuMemory` with a readable reason, `CheckpointError` for a foreign checkpoint.
    """
    device = torch.device(device)
    hint = "try a lower resolution or rank" + ("" if config.quantize_base else
                                                ", or the quantized base")
    with out_of_memory_as(f"ran out of GPU memory at {config.resolution} px, "
                          f"rank {config.rank}; {hint}"):
        encoded = encode_examples(
            pipeline, examples, device=device, dtype=dtype,
            max_sequence_length=config.max_sequence_length,
        )
        free_encoders(pipeline)
        trainer = LoraTrainer(pipeline.transformer, encoded, config, device=device, dtype=dtype,
                              scheduler_config=pipeline.scheduler.config)
        if resume_from is not None:
            trainer.restore(resume_from)
        trainer.run(callbacks or TrainingCallbacks())
    return TrainingResult(trainer.lora_bytes(), trainer.metadata(), list(trainer.losses))


def encode_examples(
    pipeline: FluxPipeline,
    examples: Sequence[TrainingExample],
    *,
    device: torch.device,
    dtype: torch.dtype,
    max_sequence_length: int = 512,
) -> list[EncodedExample]:
    """VAE latents and text embeddings for every example, computed once, without grads.

    Each distinct caption is encoded once (the captions are usually all the same, and
    CLIP + T5 cost more than the VAE): examples with equal captions share the tensors.
    The encoders visit `device` only for this (the pipeline may be loaded on the CPU so
    that the full bf16 FLUX never has to fit on the card at once)."""
    vae = pipeline.vae
    for encoder in (vae, pipeline.text_encoder, pipeline.text_encoder_2):
        if encoder is not None:
            encoder.to(device)
    shift, scale = vae.config.shift_factor or 0.0, vae.config.scaling_factor
    texts: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    encoded = []
    with torch.no_grad():
        for example in examples:
            pixels = _to_pixels(example).to(device=device, dtype=vae.dtype)
            latents = vae.encode(pixels).latent_dist.mode()  # the mean: deterministic
            if example.caption not in texts:
                prompt_embeds, pooled, text_ids = pipeline.encode_prompt(
                    example.caption, prompt_2=None, device=device,
                    max_sequence_length=max_sequence_length,
                )
                texts[example.caption] = (prompt_embeds.to(device, dtype),
                                          pooled.to(device, dtype), text_ids.to(device, dtype))
            prompt_embeds, pooled, text_ids = texts[example.caption]
            encoded.append(EncodedExample(
                latents=((latents - shift) * scale).to(device, dtype),
                prompt_embeds=prompt_embeds,
                pooled_prompt_embeds=pooled,
                text_ids=text_ids,
            ))
    return encoded


def free_encoders(pipeline: FluxPipeline) -> None:
    """Drop the text encoders and the VAE: training needs only the transformer now."""
    pipeline.text_encoder = None
    pipeline.text_encoder_2 = None
    pipeline.vae = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class LoraTrainer:
    """The bare loop over encoded examples: set-up, steps, checkpoints, the LoRA out.

    `run()` is the loop the service drives; `train_step()` is one step with no callbacks,
    so a bench can time the loop with and without them.
    """

    def __init__(
        self,
        transformer: FluxTransformer2DModel,
        encoded: Sequence[EncodedExample],
        config: TrainingConfig,
        *,
        device: torch.device | str,
        dtype: torch.dtype,
        scheduler_config: dict[str, Any] | None = None,
    ) -> None:
        if not encoded:
            raise ValueError("nothing to train on")
        self.config = config
        self.device = torch.device(device)
        self.dtype = dtype
        self.encoded = list(encoded)
        self.transformer = _add_lora(transformer, config, device=self.device, dtype=dtype)
        self.parameters = {
            name: p for name, p in self.transformer.named_parameters() if p.requires_grad
        }
        self.optimizer = torch.optim.AdamW(
            self.parameters.values(), lr=config.learning_rate, betas=(0.9, 0.999),
            weight_decay=config.weight_decay, eps=1e-8,
        )
        # A scheduler of our own from the config: the pipeline's may have been cut to
        # the step count of its last inference call.
        self.scheduler = FlowMatchEulerDiscreteScheduler.from_config(
            scheduler_config or FlowMatchEulerDiscreteScheduler().config
        )
        self.generator = torch.Generator(device="cpu").manual_seed(config.seed)
        self.step = 0
        self.losses: list[float] = []
        # The inputs fixed by an example's shape and the config, built once per distinct
        # latent shape (resolution buckets differ) on the device, in the step's dtype.
        self.shape_inputs = {
            shape: self._shape_inputs(shape)
            for shape in {example.latents.shape for example in self.encoded}
        }

    def run(self, callbacks: TrainingCallbacks) -> None:
        """Steps `step + 1 … config.steps`, with the callbacks around each one."""
        total = self.config.steps
        every = self.config.checkpoint_every
        while self.step < total:
            if callbacks.should_stop is not None and callbacks.should_stop():
                raise StopRequested(self.step)
            loss = self.train_step()
            if callbacks.on_step is not None:
                callbacks.on_step(self.step, total, loss)
            if (
                callbacks.on_checkpoint is not None and every > 0
                and self.step % every == 0 and self.step < total
            ):
                callbacks.on_checkpoint(self.step, self.checkpoint())

    def train_step(self) -> float:
        """One optimisation step; returns its loss."""
        example = self.encoded[
            int(torch.randint(len(self.encoded), (1,), generator=self.generator))
        ]
        latents = example.latents
        noise = torch.randn(latents.shape, generator=self.generator).to(latents)
        u = torch.rand((latents.shape[0],), generator=self.generator)
        indices = (u * self.scheduler.config.num_train_timesteps).long()
        sigmas = self.scheduler.sigmas[indices].to(self.device, self.dtype)
        timesteps = self.scheduler.timesteps[indices].to(self.device, self.dtype)
        noisy = noisy_latents(latents, noise, sigmas)

        batch, channels, height, width = latents.shape
        packed = FluxPipeline._pack_latents(noisy, batch, channels, height, width)
        image_ids, guidance = self.shape_inputs[latents.shape]
        prediction = self.transformer(
            hidden_states=packed,
            timestep=timesteps / 1000,
            guidance=guidance,
            pooled_projections=example.pooled_prompt_embeds,
            encoder_hidden_states=example.prompt_embeds,
            txt_ids=example.text_ids,
            img_ids=image_ids,
            return_dict=False,
        )[0]
        prediction = FluxPipeline._unpack_latents(  # takes pixel sizes: FLUX's VAE is 8×
            prediction, height * 8, width * 8, 8
        )
        target = velocity_target(latents, noise)
        loss = torch.mean((prediction.float() - target.float()) ** 2)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.parameters.values(), self.config.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        value = float(loss.detach())
        self.losses.append(value)
        return value

    def _shape_inputs(self, shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The packed latents' position ids (one per 2×2 patch) and, for a transformer
        with a guidance embedding, the guidance, for latents of `shape`."""
        batch, _, height, width = shape
        image_ids = FluxPipeline._prepare_latent_image_ids(
            batch, height // 2, width // 2, self.device, self.dtype
        )
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full((batch,), self.config.guidance_scale,
                                  device=self.device, dtype=self.dtype)
        return image_ids, guidance

    # --- checkpoints -------------------------------------------------------------

    def checkpoint(self) -> bytes:
        """Everything needed to continue at `step + 1`, as bytes for object storage."""
        weights = safetensors.torch.save(
            {name: p.detach().to("cpu").contiguous() for name, p in self.parameters.items()}
        )
        state = {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "fingerprint": self._fingerprint(),
            "lora": weights,
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": (torch.cuda.get_rng_state(self.device)
                         if self.device.type == "cuda" else None),
            "losses": list(self.losses),
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        return buffer.getvalue()

    def restore(self, checkpoint: bytes) -> None:
        try:
            state = torch.load(io.BytesIO(checkpoint), map_location="cpu", weights_only=True)
        except Exception as exc:  # any unreadable blob is the same failure
            raise CheckpointError(f"the checkpoint cannot be read: {exc}") from exc
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"unknown checkpoint format {state.get('format')!r}")
        if state["fingerprint"] != self._fingerprint():
            raise CheckpointError(
                "the checkpoint was written by a run with other settings "
                f"({state['fingerprint']} != {self._fingerprint()})"
            )
        weights = safetensors.torch.load(state["lora"])
        if weights.keys() != self.parameters.keys():
            raise CheckpointError("the checkpoint's LoRA layers do not match this transformer")
        with torch.no_grad():
            for name, parameter in self.parameters.items():
                parameter.copy_(weights[name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.step = int(state["step"])
        self.losses = [float(x) for x in state["losses"]]

    def _fingerprint(self) -> str:
        c = self.config
        return (f"rank={c.rank} alpha={c.lora_alpha} lr={c.learning_rate} seed={c.seed} "
                f"modules={','.join(c.target_modules)} examples={len(self.encoded)}")

    # --- the result --------------------------------------------------------------

    def lora_state_dict(self) -> dict[str, torch.Tensor]:
        """The LoRA in peft's naming (no adapter name), as `get_peft_model_state_dict`."""
        return {k: v.detach().to("cpu").contiguous()
                for k, v in get_peft_model_state_dict(self.transformer).items()}

    def lora_bytes(self) -> bytes:
        """The LoRA file (`fluxkit.lora`: what diffusers' `save_lora_weights` writes)."""
        return transformer_lora_bytes(self.transformer)

    def metadata(self) -> dict[str, Any]:
        c = self.config
        return {
            "trigger_word": c.trigger_word,
            "base_model": c.base_model,
            "rank": c.rank,
            "alpha": c.lora_alpha,
            "steps": self.step,
            "resolution": c.resolution,
            "learning_rate": c.learning_rate,
            "quantized_base": c.quantize_base,
            "target_modules": list(c.target_modules),
            "loss_curve": downsample(self.losses, c.loss_curve_points),
            "final_loss": self.losses[-1] if self.losses else None,
            "created": datetime.now(UTC).isoformat(),
        }


def downsample(values: Sequence[float], points: int) -> list[list[float]]:
    """[step, mean loss] pairs: `values` averaged over at most `points` equal windows."""
    if not values:
        return []
    windows = np.array_split(np.asarray(values, dtype=np.float64), min(points, len(values)))
    curve, step = [], 0
    for window in windows:
        step += len(window)
        curve.append([step, round(float(window.mean()), 6)])
    return curve


def noisy_latents(latents: torch.Tensor, noise: torch.Tensor,
                  sigmas: torch.Tensor) -> torch.Tensor:
    """Flow matching's straight path: `(1 - sigma)·latents + sigma·noise`, per example."""
    sigma = sigmas.view(-1, 1, 1, 1)
    return (1.0 - sigma) * latents + sigma * noise


def velocity_target(latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """What the transformer learns to predict: the path's velocity, `noise - latents`."""
    return noise - latents


def _add_lora(
    transformer: FluxTransformer2DModel,
    config: TrainingConfig,
    *,
    device: torch.device,
    dtype: torch.dtype,
) -> FluxTransformer2DModel:
    transformer.requires_grad_(False)
    if transformer.dtype != dtype:
        transformer.to(dtype=dtype)
    if config.quantize_base is None:
        transformer.to(device=device)
    # else: quantized where it is (the CPU, for a base that does not fit the card in
    # bf16), and only then moved to the device.
    with torch.random.fork_rng(devices=[]):  # the LoRA's initial weights, from the seed
        torch.manual_seed(config.seed)
        transformer.add_adapter(LoraConfig(
            r=config.rank,
            lora_alpha=config.lora_alpha,
            init_lora_weights="gaussian",
            target_modules=list(config.target_modules),
        ))
    if config.quantize_base is not None:
        quantize_module(transformer, weights_of(config.quantize_base))
        transformer.to(device=device)
    for name, parameter in transformer.named_parameters():
        # quanto's new layers come back trainable: only the LoRA may be.
        parameter.requires_grad_("lora_" in name)
        if parameter.requires_grad:  # the LoRA trains in float32 whatever the base's dtype
            parameter.data = parameter.data.to(torch.float32)
    if config.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    return transformer


def _to_pixels(example: TrainingExample) -> torch.Tensor:
    array = np.asarray(example.image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)


__all__ = [
    "EncodedExample",
    "LoraTrainer",
    "TrainingCallbacks",
    "TrainingConfig",
    "TrainingResult",
    "downsample",
    "encode_examples",
    "free_encoders",
    "noisy_latents",
    "train_lora",
    "velocity_target",
]
