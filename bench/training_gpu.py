"""LoRA training speed and peak memory on the full-size FLUX.1-dev transformer (GPU).

    python -m bench.training_gpu [--resolutions 512,1024] [--modes bf16,qfloat8,qint8]
                                 [--rank 16] [--steps 5] [--warmup 2] [--no-checkpointing]

Builds `FluxTransformer2DModel` with FLUX.1-dev's architecture (19 double and 38 single
blocks, 24 heads × 128, guidance embedding) and RANDOM weights directly on the GPU, so
nothing is downloaded; feeds the trainer random latents and text embeddings of the real
shapes (16×res/8×res/8 latents, 512 T5 tokens × 4096, pooled 768), so neither the VAE nor
the text encoders are needed. For each resolution and mode it prints seconds per step
(after warm-up, synchronised) and peak memory (`torch.cuda.max_memory_allocated`).
Modes: `bf16` is the base in bfloat16; `qint8` / `qfloat8` quantize the frozen base with
optimum-quanto after the LoRA is added (as the service does). The loss is meaningless
with random weights. `--tiny --device cpu` runs the same code on the tiny architecture
to check it without a GPU. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import gc
import time
from dataclasses import dataclass

import torch

from trainer_service.training import EncodedExample, LoraTrainer, TrainingConfig

FLUX_DEV_TRANSFORMER = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}
TINY_TRANSFORMER = {
    **FLUX_DEV_TRANSFORMER,
    "num_layers": 1, "num_single_layers": 1, "attention_head_dim": 16,
    "num_attention_heads": 2, "joint_attention_dim": 32, "pooled_projection_dim": 32,
    "axes_dims_rope": (4, 6, 6),
}
T5_TOKENS = 512


@dataclass
class Measurement:
    resolution: int
    mode: str
    seconds_per_step: float
    peak_gib: float | None
    loss: float


def build_transformer(architecture: dict, device: torch.device, dtype: torch.dtype):
    """Random weights, created on the device in `dtype` (no 48 GB float32 copy on the host)."""
    from diffusers import FluxTransformer2DModel

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            return FluxTransformer2DModel(**architecture)
    finally:
        torch.set_default_dtype(previous)


def random_example(architecture: dict, resolution: int, device: torch.device,
                   dtype: torch.dtype) -> EncodedExample:
    latent = resolution // 8
    channels = architecture["in_channels"] // 4
    return EncodedExample(
        latents=torch.randn(1, channels, latent, latent, device=device, dtype=dtype),
        prompt_embeds=torch.randn(1, T5_TOKENS, architecture["joint_attention_dim"],
                                  device=device, dtype=dtype),
        pooled_prompt_embeds=torch.randn(1, architecture["pooled_projection_dim"],
                                         device=device, dtype=dtype),
        text_ids=torch.zeros(T5_TOKENS, 3, device=device, dtype=dtype),
    )


def measure(architecture: dict, resolution: int, mode: str, args, device: torch.device,
            dtype: torch.dtype) -> Measurement:
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    transformer = build_transformer(architecture, device, dtype)
    config = TrainingConfig(
        trigger_word="sks", steps=args.warmup + args.steps, rank=args.rank,
        resolution=resolution, gradient_checkpointing=not args.no_checkpointing,
        quantize_base=None if mode == "bf16" else mode, max_sequence_length=T5_TOKENS,
    )
    trainer = LoraTrainer(transformer, [random_example(architecture, resolution, device, dtype)],
                          config, device=device, dtype=dtype)
    for _ in range(args.warmup):
        trainer.train_step()
    if cuda:
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(args.steps):
        loss = trainer.train_step()
    if cuda:
        torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - started) / args.steps
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
    del trainer, transformer
    gc.collect()
    return Measurement(resolution, mode, seconds, peak, loss)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", default="512,1024")
    parser.add_argument("--modes", default="bf16,qfloat8")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-checkpointing", action="store_true",
                        help="turn gradient checkpointing off (more memory, faster)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true",
                        help="the tiny architecture instead of FLUX.1-dev (a check, not a bench)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.exit(2, "bench.training_gpu needs a CUDA GPU and this machine has none "
                    f"(torch {torch.__version__}); use --tiny --device cpu to check the code "
                    "path\n")
    architecture = TINY_TRANSFORMER if args.tiny else FLUX_DEV_TRANSFORMER
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for mode in modes:
        if mode not in ("bf16", "qint8", "qfloat8"):
            parser.error(f"unknown mode {mode!r}: bf16, qint8 or qfloat8")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{'tiny' if args.tiny else 'FLUX.1-dev'} transformer (random weights), LoRA rank "
          f"{args.rank}, {name}, torch {torch.__version__}, gradient checkpointing "
          f"{'off' if args.no_checkpointing else 'on'}, {args.steps} timed steps")
    print(f"base dtype {dtype}")
    print(f"{'px':>6} {'mode':>8} {'s/step':>9} {'peak GiB':>9} {'loss':>10}")
    for resolution in (int(r) for r in args.resolutions.split(",")):
        for mode in modes:
            try:
                m = measure(architecture, resolution, mode, args, device, dtype)
            except torch.OutOfMemoryError:
                print(f"{resolution:>6} {mode:>8} {'out of memory':>20}")
                gc.collect()
                continue
            peak = f"{m.peak_gib:9.2f}" if m.peak_gib is not None else f"{'n/a':>9}"
            print(f"{m.resolution:>6} {m.mode:>8} {m.seconds_per_step:9.3f} {peak} {m.loss:10.4f}")


if __name__ == "__main__":
    main()
