"""Training through the service versus the bare loop, on the tiny FLUX, in one run.

    python -m bench.training_service [--steps 1500] [--bare-steps 300]

Starts its own stack (embedded NATS and S3, auth, trainer_service, gateway), uploads 10
photos, trains through `POST /api/training/start` and reads the steps' pace from the
progress events (every 2 s; checkpoints every 100 steps go to object storage; heartbeats
run). Times the bare `LoraTrainer.train_step()` loop on the same model, resolution (256 px,
what the tiny model trains at), rank and image count in this process, before and after
(stack idle), since the machine's pace drifts with whatever else runs on it. Prints both and the overhead; the target is under 5 %. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.common import (
    Stack,
    check_answers,
    print_machine,
    raise_fd_limit,
    register_users,
    verdict,
)
from bench.training_loop import time_steps, tiny_trainer
from trainer_service.handlers import TINY_RESOLUTION
from trainer_service.training import TrainingConfig

TARGET_OVERHEAD = 0.05
ENDINGS = ("training.completed.v1", "training.cancelled.v1", "job.failed.v1")
RANK = 16
IMAGES = 10


def photos() -> list[tuple[str, tuple[str, bytes, str]]]:
    files = []
    for seed in range(IMAGES):
        blocks = np.random.default_rng(seed).integers(0, 255, (8, 10, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(blocks).resize((320, 400), Image.NEAREST).save(buffer, "JPEG")
        files.append(("files", (f"{seed}.jpg", buffer.getvalue(), "image/jpeg")))
    return files


async def train_through_service(stack: Stack, steps: int) -> list[tuple[float, int]]:
    [account], _ = await register_users(stack.gateway_url, 1)
    headers = {"Authorization": f"Bearer {account.access_token}"}
    nc = await stack.connect()
    progress: list[tuple[float, int]] = []
    ended: list[str] = []
    done = asyncio.Event()

    async def on_event(msg) -> None:
        event = json.loads(msg.data)
        if event["type"] == "training.progressed.v1":
            progress.append((time.perf_counter(), event["step"]))
        elif event["type"] in ENDINGS:
            ended.append(event["type"])
            done.set()

    await nc.subscribe(f"terra.evt.training.*.{account.user_id}", cb=on_event)
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=headers,
                                 timeout=120) as client:
        upload = await client.post("/api/training/upload", files=photos())
        check_answers("POST /api/training/upload", {upload.status_code: 1}, {201})
        response = await client.post("/api/training/start", json={
            "dataset_id": upload.json()["dataset_id"], "steps": steps, "rank": RANK})
        check_answers("POST /api/training/start", {response.status_code: 1}, {202})
        await asyncio.wait_for(done.wait(), timeout=steps)
    await nc.drain()
    # A failed or cancelled run has no pace worth printing.
    check_answers("training outcome", {kind: ended.count(kind) for kind in ended},
                  {"training.completed.v1"})
    return progress


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.training_service",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--bare-steps", type=int, default=300)
    args = parser.parse_args()
    print_machine(raise_fd_limit(1024))
    trainer = tiny_trainer(TrainingConfig(trigger_word="sks", steps=args.bare_steps,
                                          rank=RANK, resolution=TINY_RESOLUTION), images=IMAGES)
    time_steps(trainer, 10)  # warm-up
    # The bare loop before and after the service run: the machine's pace drifts with
    # whatever else runs here, and the service run sits between the two.
    bare_runs = [time_steps(trainer, args.bare_steps)]
    with tempfile.TemporaryDirectory(prefix="terra-bench-") as tmp:
        stack = Stack(Path(tmp), workers=(("trainer", "trainer_service"),))
        try:
            stack.start()
            progress = asyncio.run(train_through_service(stack, args.steps))
            (first_t, first_step), (last_t, last_step) = progress[0], progress[-1]
            service = (last_step - first_step) / (last_t - first_t)
            bare_runs.append(time_steps(trainer, args.bare_steps))
        finally:
            stack.stop()
    bare = sum(bare_runs) / len(bare_runs)
    overhead = 1 - service / bare
    print(f"\ntiny FLUX, {TINY_RESOLUTION} px, rank {RANK}, {IMAGES} photos")
    print(f"    through trainer_service: {service:7.1f} steps/s  (steps {first_step}..{last_step}"
          f" from {len(progress)} progress events; progress every 2 s, checkpoint every 100"
          " steps to S3, heartbeats)")
    print(f"    bare train_step loop:    {bare:7.1f} steps/s  (mean of {bare_runs[0]:.1f} before "
          f"and {bare_runs[1]:.1f} after, {args.bare_steps} steps each, stack idle)")
    print(f"    overhead {overhead:+.1%}; target < {TARGET_OVERHEAD:.0%}: "
          f"{verdict(overhead < TARGET_OVERHEAD)}")


if __name__ == "__main__":
    main()
