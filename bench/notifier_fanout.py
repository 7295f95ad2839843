"""Event to webhook: one notifier_service fanning endings out to signed webhooks.

    python -m bench.notifier_fanout [--events 1000] [--targets 10] [--rate 40] [--slow-s 5]

Starts its own stack (embedded nats-server and S3, auth_service, one notifier_service, one
gateway) and a local webhook receiver. One user registers `--targets` webhooks through the
gateway; the bench then publishes `--events` generation endings on the events stream, as
the generator would, and measures, for every delivery, the time from publishing the event
to the webhook request arriving: p50/p99 and deliveries per second.

Three runs: the events all at once (what one notifier delivers a second); at `--rate` a
second with every target answering at once; the same with one target answering after
`--slow-s` seconds. The target: the other targets' p99 in the third run stays within 20%
of the second (one slow receiver delays only itself). Not a test: the figures are printed.
Answers are counted: every set-up call must succeed and every fast target must receive
each event exactly once (one `webhook-id` per event and target), or no figure is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from bench.common import (
    Stack,
    check_answers,
    percentile,
    print_machine,
    raise_fd_limit,
    register_users,
    verdict,
)
from contracts.generation import GeneratedImage, ImageGenerated
from contracts.ids import new_id
from terra.nats.events import EventPublisher
from testing.push_standins import Reply, WebhookReceiver

TARGET_SLOW_RATIO = 1.2  # the others' p99 with one slow target, over their p99 without it


async def add_webhooks(base_url: str, token: str, receiver: WebhookReceiver, names: list[str],
                       run: str) -> None:
    statuses: Counter[int] = Counter()
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        headers = {"Authorization": f"Bearer {token}"}
        for webhook in (await http.get("/api/webhooks", headers=headers)).json()["webhooks"]:
            statuses[(await http.delete(f"/api/webhooks/{webhook['id']}",
                                        headers=headers)).status_code] += 1
        for name in names:
            response = await http.post("/api/webhooks", headers=headers, json={
                "url": receiver.hook_url(name), "events": ["generation.completed"]})
            statuses[response.status_code] += 1
    check_answers(f"webhooks replaced ({run}: DELETE 204, POST 201)", statuses, {201, 204})


async def one_run(stack: Stack, user_id: str, token: str, args: argparse.Namespace,
                  run: str, *, slow: bool = False, rate: float | None = None) -> dict:
    """Publish the events (at `rate` a second; None: all at once); the deliveries each
    fast target received."""
    names = [f"{run.split()[0]}-{i}" for i in range(args.targets)]
    async with WebhookReceiver() as receiver:
        if slow:
            receiver.always(receiver.path(names[0]), Reply(200, delay_s=args.slow_s))
        await add_webhooks(stack.gateway_url, token, receiver, names, run)
        fast = names[1:] if slow else names
        nc = await stack.connect()
        published: dict[str, float] = {}
        try:
            events = EventPublisher(nc.jetstream())
            started = time.time()
            for i in range(args.events):
                if rate:  # paced against the clock: a slow publish is caught up, not added up
                    await asyncio.sleep(max(0.0, started + i / rate - time.time()))
                job_id = new_id()
                published[job_id] = time.time()
                await events.publish(ImageGenerated(user_id=user_id, job_id=job_id, images=[
                    GeneratedImage(image_id=f"{job_id}-0", key="images/bench.png",
                                   width=1024, height=1024, seed=i)]))
            expected = args.events * len(fast)
            deadline = time.time() + args.timeout_s
            while time.time() < deadline and sum(
                    len(receiver.received(receiver.path(n))) for n in fast) < expected:
                await asyncio.sleep(0.1)
        finally:
            await nc.drain()
        latencies, ids, outcomes = [], Counter(), Counter()
        last = started
        for name in fast:
            for request in receiver.received(receiver.path(name)):
                ids[request.headers["webhook-id"]] += 1
                job_id = json.loads(request.body)["data"]["job_id"]
                latencies.append((request.received_at - published[job_id]) * 1000)
                last = max(last, request.received_at)
        outcomes["delivered"] = len(ids)
        outcomes["repeated webhook-id"] = sum(n - 1 for n in ids.values())
        outcomes["missing"] = expected - len(ids)
        check_answers(f"{args.events} events to {len(fast)} fast targets ({run})", outcomes,
                      {"delivered"})
        return {"run": run, "latencies": latencies, "seconds": last - started,
                "deliveries": len(latencies)}


async def measure(stack: Stack, args: argparse.Namespace) -> list[dict]:
    [account], _ = await register_users(stack.gateway_url, 1)
    user, token = account.user_id, account.access_token
    return [await one_run(stack, user, token, args, "burst (all at once)"),
            await one_run(stack, user, token, args, "paced, all fast", rate=args.rate),
            await one_run(stack, user, token, args, "paced, one slow", rate=args.rate,
                          slow=True)]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.notifier_fanout", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--targets", type=int, default=10)
    parser.add_argument("--rate", type=float, default=40.0,
                        help="events published a second in the paced runs")
    parser.add_argument("--slow-s", type=float, default=5.0,
                        help="how long the slow target takes to answer")
    parser.add_argument("--timeout-s", type=float, default=300.0,
                        help="longest wait for the fast targets' deliveries")
    args = parser.parse_args()
    print_machine(raise_fd_limit(4096))
    with tempfile.TemporaryDirectory(prefix="terra-bench-") as tmp:
        stack = Stack(Path(tmp))
        try:
            stack.start()
            stack.services.start_service("notifier", "notifier_service",
                                         TERRA_DATA_DIR=str(Path(tmp) / "notifier"))
            rows = asyncio.run(measure(stack, args))
        finally:
            stack.stop()
    print(f"\n{args.events} events x {args.targets} webhooks; paced runs at {args.rate:g} "
          f"events/s (one notifier_service; event published -> webhook request received):")
    print(f"  {'run':<20} {'deliveries':>10} {'p50':>9} {'p99':>9} {'per second':>11}")
    for row in rows:
        p50, p99 = (percentile(row["latencies"], q) for q in (50, 99))
        rate = row["deliveries"] / row["seconds"] if row["seconds"] else float("nan")
        print(f"  {row['run']:<20} {row['deliveries']:>10} {p50:>7.1f}ms {p99:>7.1f}ms "
              f"{rate:>11.0f}")
    fast_p99, slow_p99 = (percentile(row["latencies"], 99) for row in rows[1:])
    ratio = slow_p99 / fast_p99 if fast_p99 else float("nan")
    print(f"  the others' p99 with one target answering after {args.slow_s:g} s: "
          f"{ratio:.2f}x the run without it (target <= {TARGET_SLOW_RATIO:.2f}x) "
          f"{verdict(ratio <= TARGET_SLOW_RATIO)}")


if __name__ == "__main__":
    main()
