"""Bare LoRA training loop speed on the tiny random FLUX (CPU).

    python -m bench.training_loop [--steps 200] [--resolution 64] [--rank 4]

Times `LoraTrainer.train_step()` called in a plain loop, then `LoraTrainer.run()` with
no-op callbacks (on_step, should_stop, on_checkpoint every 50 steps), and prints steps
per second for each. Everything before the loop (tiny model, encoding) is set-up and not
timed. `tiny_trainer` and `time_steps` are here for other benches to reuse (the service
overhead comparison). Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time

import torch
from PIL import Image

from fluxkit.tiny import build_tiny_flux
from trainer_service.preprocess import prepare_examples
from trainer_service.training import (
    LoraTrainer,
    TrainingCallbacks,
    TrainingConfig,
    encode_examples,
)

CPU = torch.device("cpu")


def tiny_trainer(config: TrainingConfig, images: int = 4) -> LoraTrainer:
    """A LoRA trainer on the tiny FLUX over `images` random images, ready to step."""
    generator = torch.Generator().manual_seed(0)
    side = config.resolution
    pictures = [
        Image.fromarray(torch.randint(0, 256, (side, side, 3), generator=generator,
                                      dtype=torch.uint8).numpy())
        for _ in range(images)
    ]
    examples = prepare_examples(pictures, config.trigger_word, config.resolution)
    pipeline = build_tiny_flux()
    encoded = encode_examples(pipeline, examples, device=CPU, dtype=torch.float32,
                              max_sequence_length=config.max_sequence_length)
    return LoraTrainer(pipeline.transformer, encoded, config, device=CPU, dtype=torch.float32,
                       scheduler_config=pipeline.scheduler.config)


def time_steps(trainer: LoraTrainer, steps: int,
               callbacks: TrainingCallbacks | None = None) -> float:
    """Steps per second over `steps` more steps, bare or through `run()` with callbacks."""
    started = time.perf_counter()
    if callbacks is None:
        for _ in range(steps):
            trainer.train_step()
    else:
        trainer.config = dataclasses.replace(trainer.config, steps=trainer.step + steps)
        trainer.run(callbacks)
    return steps / (time.perf_counter() - started)


def noop_callbacks() -> TrainingCallbacks:
    return TrainingCallbacks(
        on_step=lambda step, total, loss: None,
        should_stop=lambda: False,
        on_checkpoint=lambda step, blob: None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--max-sequence-length", type=int, default=512)
    args = parser.parse_args()
    config = TrainingConfig(
        trigger_word="sks", steps=args.steps, rank=args.rank, resolution=args.resolution,
        max_sequence_length=args.max_sequence_length, checkpoint_every=50,
    )
    trainer = tiny_trainer(config)
    time_steps(trainer, 10)  # warm-up: first-call allocations, kernels
    bare = time_steps(trainer, args.steps)
    with_callbacks = time_steps(trainer, args.steps, noop_callbacks())
    print(f"tiny FLUX LoRA loop, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"Python {platform.python_version()}, {platform.processor() or platform.machine()}")
    print(f"{args.resolution} px, rank {args.rank}, T5 length {args.max_sequence_length}, "
          f"{args.steps} steps each")
    print(f"bare train_step loop:            {bare:8.1f} steps/s  ({1e3 / bare:.2f} ms/step)")
    print(f"run() with no-op callbacks:      {with_callbacks:8.1f} steps/s  "
          f"({1e3 / with_callbacks:.2f} ms/step; one checkpoint every 50 steps)")


if __name__ == "__main__":
    main()
