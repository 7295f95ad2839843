"""Cancel latency of the largest allowed generation on the tiny random FLUX (CPU).

    python -m bench.cancel_latency [--side 2048] [--steps 100] [--images 4] [--model dev]
                                   [--images-per-loop 1] [--with-decode]

The job the API allows at most: 2048×2048, 100 steps, 4 images. Measured from the moment
`should_stop()` turns true to `generate` / `generate_batch` returning:

- at a step boundary: `should_stop` turns true inside `on_step` after step 4 (the best
  case: the callback that reports a step asks `should_stop` right after);
- mid-step: a timer thread turns it true half a step after step 1 reports (the loop
  notices at the end of the step in progress; the expected case for a user's cancel);
- just after a step starts: the same 10 ms after step 1 reports (the worst case: nearly
  the whole step in progress is waited for).

One path: `generate` is a batch of one; `generate_batch` runs two compatible requests of
images/2 each, the same path. A loop carries at most `--images-per-loop` images (the
service's `TERRA_BATCH_MAX_IMAGES`: unset, 1 on a CPU and 4 on CUDA, so the default here is
what the service does on this machine); a cancel waits for at most the step in progress of
the loop running, so a loop of fewer images answers sooner. `--images-per-loop 4` measures
one loop of all four. Per-step times:
the median interval between the boundary run's `on_step` reports (the first step, which
includes the set-up, left out). Other work on the machine slows the
steps a lot (torch's threads contend): the 1-minute load average is printed.
With --with-decode it also times the VAE decode that a cancel used to wait for (one image,
and the whole batch) on latents from a 1-step run. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable

import torch

from generator_service.pipelines import Cancelled, FluxGenerator, GenerationRequest

PROMPT = "a photo of sks person in a red coat"


@dataclasses.dataclass
class Run:
    outcome: object
    flipped_at: float
    returned_at: float
    step_times: list[float]  # perf_counter at each on_step report

    @property
    def latency(self) -> float:
        return self.returned_at - self.flipped_at

    @property
    def per_step(self) -> float | None:
        gaps = [b - a for a, b in zip(self.step_times, self.step_times[1:])]
        return statistics.median(gaps) if gaps else None


def cancelled_run(job: Callable[..., object], *, after_steps: int = 4,
                  mid_step: float | None = None) -> Run:
    """`job(on_step=…, should_stop=…)` with a stop that turns true after `after_steps`
    reported steps, or `mid_step` seconds after the first step reports (from a thread)."""
    flipped = threading.Event()
    flipped_at = [0.0]
    steps: list[float] = []

    def flip() -> None:
        if not flipped.is_set():
            flipped_at[0] = time.perf_counter()
            flipped.set()

    def on_step(step: int, total: int) -> None:
        steps.append(time.perf_counter())
        if mid_step is None and len(steps) >= after_steps:
            flip()
        elif mid_step is not None and len(steps) == 1:
            threading.Timer(mid_step, flip).start()

    outcome = job(on_step=on_step, should_stop=flipped.is_set)
    returned_at = time.perf_counter()
    if not flipped.is_set():
        raise RuntimeError(f"the job ended before the stop turned true: {outcome!r}")
    return Run(outcome, flipped_at[0], returned_at, steps)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--model", default="dev", choices=("schnell", "dev"))
    parser.add_argument("--images-per-loop", type=int, default=1,
                        help="images one denoising loop carries (the service: 1 on a CPU)")
    parser.add_argument("--with-decode", action="store_true",
                        help="also time the decode a cancel no longer waits for")
    args = parser.parse_args(argv)

    generator = FluxGenerator.load(None, device="cpu", dtype=torch.float32, profile="gpu",
                                   images_per_loop=args.images_per_loop)
    size = {"width": args.side, "height": args.side}
    one = GenerationRequest(PROMPT, model=args.model, steps=args.steps, seed=1,
                            num_images=args.images, **size)
    half = max(1, args.images // 2)
    pair = [dataclasses.replace(one, num_images=half),
            dataclasses.replace(one, prompt="a red fox", seed=100, num_images=args.images - half)]

    def generate(**kw):
        return generator.generate(one, **kw)

    def generate_batch(**kw):
        return generator.generate_batch(pair, **kw)

    generator.generate(dataclasses.replace(one, steps=1, num_images=1, width=64, height=64))
    print(f"tiny FLUX {args.model}, {args.side}×{args.side}, {args.steps} steps, "
          f"{args.images} images, {args.images_per_loop} per loop, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    loops = -(-args.images // args.images_per_loop)
    for name, job, shape in (("generate", generate, f"{loops} loop(s), {args.images} images"),
                             ("generate_batch", generate_batch,
                              (f"{loops} loop(s), {args.images} images "
                               f"({half} + {args.images - half})"))):
        boundary = cancelled_run(job)
        step = boundary.per_step or 1.0
        middle = cancelled_run(job, mid_step=step / 2)
        worst = cancelled_run(job, mid_step=0.01)
        for label, run in (("at a step boundary (after step 4)", boundary),
                           (f"mid-step ({step / 2:.2f} s after step 1)", middle),
                           ("just after a step starts (0.01 s after step 1)", worst)):
            if not isinstance(run.outcome, Cancelled):
                sys.exit(f"{name}, stop {label}: ended {run.outcome!r}, not cancelled")
            print(f"{name} [{shape}], stop {label}: returned in "
                  f"{run.latency * 1e3:.1f} ms, {run.outcome}")
        print(f"{name} [{shape}], per denoising step: {step:.3f} s")

    if args.with_decode:
        from generator_service.pipelines import _decode

        pipeline = generator.pipelines[args.model]
        for label, images in (("1 image", 1), (f"{args.images} images in one decode", args.images)):
            latents = pipeline(prompt=PROMPT, num_inference_steps=1, output_type="latent",
                               num_images_per_prompt=images, guidance_scale=3.5,
                               generator=torch.Generator().manual_seed(0), **size).images
            started = time.perf_counter()
            _decode(pipeline, latents, args.side, args.side)
            print(f"VAE decode (tiled: {pipeline.vae.use_tiling}), {label}: "
                  f"{time.perf_counter() - started:.2f} s")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
