"""`terra status`: what an operator asks first — which workers are alive, what each
holds, and how many commands wait on each queue.

Read from NATS alone (the workers' heartbeats and the work-queue streams), so it answers
for a whole deployment, whichever gateway or host it runs from.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from nats.js import JetStreamContext

from contracts.base import utcnow
from contracts.jobs import JobKind
from contracts.topology import ConsumerSpec
from contracts.workers import WorkerHeartbeat
from terra.nats.queues import commands_waiting
from terra.ops.services import SERVICES
from terra.runtime.liveness import domains_served, live_workers

# The consumers whose depth is a queue of work (the others are control and clean-up).
WORK_QUEUES: tuple[ConsumerSpec, ...] = tuple(
    queue for service in SERVICES for queue in service.queues)


@dataclass(frozen=True)
class QueueDepth:
    consumer: str
    waiting: int  # in the stream, not yet acked: queued, held or running
    in_hand: int  # delivered to a worker and not yet acked
    redelivered: int


@dataclass(frozen=True)
class Status:
    workers: list[WorkerHeartbeat]
    queues: list[QueueDepth]
    served: dict[str, int]

    def as_json(self) -> str:
        return json.dumps({
            "workers": [w.model_dump(mode="json") for w in self.workers],
            "queues": [asdict(q) for q in self.queues],
            "live_workers": {d: self.served.get(d, 0) for d in JobKind},
        }, indent=2)

    def as_text(self) -> str:
        now = utcnow()
        lines = ["WORKERS"]
        if not self.workers:
            lines.append("  none alive")
        for w in sorted(self.workers, key=lambda w: (w.service, w.started_at)):
            up = int((now - w.started_at).total_seconds())
            lines.append(
                f"  {w.service:<18} {w.worker_id:<16} {w.host}:{w.pid:<7} up {up // 60}m{up % 60:02d}s"
                f"  {'pulling' if w.pulling else 'NOT PULLING'}"
                f"  holding {len(w.holding)}  running {', '.join(w.running) or '-'}")
            down = [name for name, running in w.loops.items() if not running]
            if down:
                lines.append(f"  {'':<18} loops down: {', '.join(down)}")
        lines += ["", "QUEUES", f"  {'consumer':<22} {'waiting':>8} {'in hand':>8} {'redelivered':>12}"]
        for q in self.queues:
            lines.append(f"  {q.consumer:<22} {q.waiting:>8} {q.in_hand:>8} {q.redelivered:>12}")
        lines += ["", "DOMAINS"]
        for domain in JobKind:
            count = self.served.get(domain, 0)
            served_by = ", ".join(s.name for s in SERVICES if domain in s.works)
            lines.append(f"  {domain:<11} {count} live worker{'s' if count != 1 else ''}"
                         + ("" if count else f"  <- jobs of this kind wait (start {served_by})"))
        return "\n".join(lines)


async def gather(js: JetStreamContext) -> Status:
    workers = await live_workers(js)
    queues = []
    for spec in WORK_QUEUES:
        info = await js.consumer_info(spec.stream, spec.durable)
        queues.append(QueueDepth(spec.durable, await commands_waiting(js, spec),
                                 info.num_ack_pending, info.num_redelivered))
    return Status(workers, queues, domains_served(workers))
