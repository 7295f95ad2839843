"""LoRA switching with the adapter cache against a fresh pipeline per LoRA (tiny FLUX, CPU).

    python -m bench.lora_switch [--users 4] [--rounds 5] [--steps 1] [--hotswap]

Users take turns (a, b, c, … a, b, c, …). "Cached": one resident FluxGenerator; after a
user's first job their LoRA stays loaded (or, with --hotswap, is swapped into the slot
from memory). "Fresh": the base pipeline is loaded and then the LoRA from bytes, as a
service without residency would. Two ratios: the switch alone (pipeline ready with the
user's LoRA: `FluxGenerator.prepare` against load + `load_lora_weights`), and a whole job
(switch plus one 64×64 image, which dilutes it). The first round (cache misses) is left
out of the cached side and reported apart. Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fluxkit.loading import load_flux_pipeline
from fluxkit.lora import load_lora
from fluxkit.tiny import random_lora_bytes
from generator_service.adapters import AdapterCache, LoraRef
from generator_service.pipelines import FluxGenerator, GenerationRequest

CPU = torch.device("cpu")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--hotswap", action="store_true", help="the slot path (compiled/quantized)")
    parser.add_argument("--rank", type=int, default=4, help="the users' LoRA rank")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    loras = {f"user{i}": random_lora_bytes(args.rank, seed=i) for i in range(args.users)}
    refs = {user: LoraRef(user, lambda user=user: loras[user]) for user in loras}

    def job(user: str) -> GenerationRequest:
        return GenerationRequest("a photo of sks person", model="dev", lora=refs[user],
                                 width=64, height=64, steps=args.steps, seed=0)

    generator = FluxGenerator.load(None, device=CPU, dtype=torch.float32, profile="gpu",
                                   hotswap=args.hotswap or None,
                                   adapter_cache=AdapterCache(max_adapters=args.users))
    first, switch, cached = [], [], []
    for round_ in range(args.rounds):
        for user in loras:
            started = time.perf_counter()
            generator.prepare(job(user))
            switched = time.perf_counter()
            generator.generate(job(user))
            done = time.perf_counter()
            if round_ == 0:
                first.append(switched - started)
            else:
                switch.append(switched - started)
                cached.append(done - started)

    fresh_switch, fresh = [], []
    for _ in range(args.rounds - 1):
        for data in loras.values():
            started = time.perf_counter()
            pipeline = load_flux_pipeline(None, CPU, torch.float32)
            load_lora(pipeline, data, adapter_name="user")
            switched = time.perf_counter()
            pipeline("a photo of sks person", height=64, width=64,
                     num_inference_steps=args.steps, guidance_scale=3.5,
                     generator=torch.Generator().manual_seed(0))
            fresh_switch.append(switched - started)
            fresh.append(time.perf_counter() - started)

    s, fs = statistics.median(switch), statistics.median(fresh_switch)
    c, f = statistics.median(cached), statistics.median(fresh)
    print(f"tiny FLUX dev, {args.users} users × {args.rounds} rounds, {args.steps} step(s), "
          f"64×64, rank-{args.rank} LoRAs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, "
          f"{'hot-swap slot' if args.hotswap else 'resident adapters'}")
    print(f"switch, first time per user (fetch + load): {statistics.median(first) * 1e3:8.2f} ms")
    print(f"switch, returning user (cache):             {s * 1e3:8.2f} ms "
          f"(fetches {generator.cache.fetches}, loads {generator.adapter_loads})")
    print(f"switch, fresh pipeline + LoRA:              {fs * 1e3:8.2f} ms")
    print(f"whole job, cached / fresh:                  {c * 1e3:8.2f} / {f * 1e3:.2f} ms")
    print(f"ratio fresh / cached: switch {fs / s:.0f}×, whole job {f / c:.1f}× (medians)")


if __name__ == "__main__":
    main()
