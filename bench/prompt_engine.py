"""Offline prompt optimiser throughput on one core.

    python -m bench.prompt_engine [--seconds 3] [--variants 1]

Runs `OfflineEngine.optimize` (token counting included) in this one process and thread
over the quality corpus of `bench/prompt_corpus.py` (65 prompts: one word to
over 512 T5 tokens, French, tag soup, quotes, trigger words, emoji), cycling through it,
and prints prompts per second with the target. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from bench.prompt_corpus import CORPUS
from prompt_service.engine import OfflineEngine, PromptRequest

TARGET_PER_SECOND = 1_000


def run(seconds: float, variants: int) -> tuple[float, list[float]]:
    engine = OfflineEngine()
    requests = [PromptRequest(prompt, style, trigger, variants)
                for prompt, style, trigger in CORPUS]
    for request in requests:  # warm-up: tokenizer load, regex caches
        engine.optimize(request)
    per_prompt: list[float] = []
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for request in requests:
            before = time.perf_counter()
            engine.optimize(request)
            per_prompt.append(time.perf_counter() - before)
        done += len(requests)
    return done / (time.perf_counter() - started), per_prompt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--variants", type=int, default=1)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):  # one core, whatever the machine has
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    rate, times = run(args.seconds, args.variants)
    times.sort()
    p50 = statistics.median(times) * 1e3
    p99 = times[int(len(times) * 0.99)] * 1e3
    print(f"offline prompt engine, one core, Python {platform.python_version()}, "
          f"{platform.processor() or platform.machine()}")
    print(f"corpus: {len(CORPUS)} prompts, variants={args.variants}, {len(times)} runs")
    print(f"throughput: {rate:,.0f} prompts/s (target >= {TARGET_PER_SECOND:,} prompts/s "
          f"per core: {'met' if rate >= TARGET_PER_SECOND else 'NOT met'})")
    print(f"latency per prompt: p50 {p50:.3f} ms, p99 {p99:.3f} ms, max {times[-1] * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
