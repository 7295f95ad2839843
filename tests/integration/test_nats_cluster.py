"""A 3-node JetStream cluster (`testing.cluster`) losing the leader of what the services use:
nothing acked is lost, clients given every URL keep working, the node comes back current.

One node is made to lead TERRA_GENERATION_COMMANDS, TERRA_EVENTS, KV_terra_jobs and the
`generation_workers` / `generation_control` consumers, then goes: SIGKILL (a crash), or in
the second test a leader stepdown and a SIGTERM (planned changes). Meanwhile probes loop on
two clients given all three URLs, one connected to that node and one to a survivor: publish
with ack to both streams, KV put and get, `fetch` on the workers' consumer, a waiting pull on
the (empty) control consumer, `ack_sync` of a held command, `stream_info`, `consumer_info`.
They run from before the disruption, and a burst of them starts just before it, so calls in
flight at that moment are seen too (ops marked `*`).

Run with `-s` to see the figures: when a live node claims each leadership (monitor view),
when each operation first succeeds again, and every exception nats-py raised (by client,
operation, type and code, with when the failing calls began and how long they took).
Timings are printed, never asserted: this machine has two cores shared with other work.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import nats
import nats.errors
import nats.js.errors
import pytest

from contracts import topology
from terra.nats.provisioning import provision
from testing.cluster import EmbeddedNatsCluster

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

GEN = topology.GENERATION_COMMANDS.name
EVENTS = topology.EVENTS.name
JOBS = topology.GENERATION_JOBS_KV.bucket
JOBS_STREAM = f"KV_{JOBS}"
WORKERS = topology.GENERATION_WORKERS.durable
CONTROL = topology.GENERATION_CONTROL.durable  # never sees a message here: its pulls wait
GEN_SUBJECT = topology.command_subject("generation", "generate")
EVT_SUBJECT = topology.event_subject("cluster", "probed", "u1")
# Every JetStream call of the probes; it bounds how long a call to a dead leader hangs, so it
# is also the resolution of the "first success" figures.
CALL_TIMEOUT_S = 1.0
IDLE_FETCH_S = 2.0  # a pull that waits at the consumer leader through the disruption
DEADLINE_S = 30.0
QUEUED = 400
ACK_STOCK = 40  # commands each client holds, fetched at set-up, for its ack_sync probe
ASSETS = ((GEN, None), (EVENTS, None), (JOBS_STREAM, None), (GEN, WORKERS), (GEN, CONTROL))


def _asset_name(stream: str, consumer: str | None) -> str:
    return f"{stream}/{consumer}" if consumer else stream


# --- probes -------------------------------------------------------------------------------


@dataclass
class Clock:
    t0: float | None = None  # when the disruption began


@dataclass
class Probe:
    client: str
    op: str
    call: Callable[[], Awaitable[object]]
    # (began, took, exception type or None, what), times absolute (monotonic)
    outcomes: list[tuple[float, float, str | None, str]] = field(default_factory=list)

    def first_ok_after(self, t0: float) -> float | None:
        return next((b - t0 for b, _, kind, _ in self.outcomes if kind is None and b >= t0), None)


def _describe(exc: BaseException) -> tuple[str, str]:
    kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
    if isinstance(exc, nats.js.errors.APIError):
        return kind, f"code={exc.code} err_code={exc.err_code} {exc.description or ''}".strip()
    return kind, str(exc)[:60]


async def _run(probe: Probe, clock: Clock) -> None:
    """Call until a call started after the disruption has succeeded."""
    while True:
        began = time.monotonic()
        try:
            await probe.call()
        except Exception as exc:  # noqa: BLE001 - recording them is the point
            probe.outcomes.append((began, time.monotonic() - began, *_describe(exc)))
            pause = 0.05
        else:
            probe.outcomes.append((began, time.monotonic() - began, None, ""))
            if clock.t0 is not None and began >= clock.t0:
                return
            # Out of step, so that some calls are in flight at t0; slow enough not to drown
            # two cores (and the election) in probe traffic.
            pause = random.uniform(0.02, 0.12)
        if clock.t0 is not None and time.monotonic() - clock.t0 > DEADLINE_S:
            raise AssertionError(f"{probe.client} {probe.op}: no success in {DEADLINE_S}s")
        await asyncio.sleep(pause)


class Publisher:
    """One logical message at a time, retried under the same Nats-Msg-Id until acked: an
    attempt that timed out but was stored is deduplicated, so every id is stored once."""

    def __init__(self, js, subject: str, prefix: str) -> None:
        self.js, self.subject, self.prefix = js, subject, prefix
        self.acked: list[str] = []
        self.duplicates = 0

    async def __call__(self) -> None:
        msg_id = f"{self.prefix}-{len(self.acked)}"
        ack = await self.js.publish(self.subject, msg_id.encode(), headers={"Nats-Msg-Id": msg_id})
        self.acked.append(msg_id)
        self.duplicates += bool(ack.duplicate)


async def fetch_and_nak(sub, batch: int) -> None:
    """A worker's pull; what it gets goes back at once (nak), so the stream keeps it and the
    consumer's max_ack_pending (256) is not used up by the probes."""
    for msg in await sub.fetch(batch, timeout=CALL_TIMEOUT_S):
        await msg.nak()


async def idle_fetch(sub, batch: int) -> None:
    """A pull on a consumer with nothing to deliver: expiring after its full timeout is the
    normal outcome (success here); any other exception, or a timeout that comes early, is
    what the disruption did to it."""
    began = time.monotonic()
    try:
        msgs = await sub.fetch(batch, timeout=IDLE_FETCH_S)
    except TimeoutError:  # nats.errors.TimeoutError, FetchTimeoutError, asyncio.TimeoutError
        if time.monotonic() - began >= 0.9 * IDLE_FETCH_S:
            return
        raise
    raise AssertionError(f"the control consumer delivered {msgs}")


class KvPutter:
    """`put` of a growing value under one key; `last_acked` is what the bucket must hold."""

    def __init__(self, kv, key: str) -> None:
        self.kv, self.key, self.last_acked = kv, key, None
        self.n = 0

    async def __call__(self) -> None:
        self.n += 1
        value = str(self.n).encode()
        await self.kv.put(self.key, value)
        self.last_acked = value


class Acker:
    """`ack_sync` of the next held command, retried on the same one until it is acked."""

    def __init__(self, stock: list) -> None:
        self.stock = stock
        self.acked: list[str] = []

    async def __call__(self) -> None:
        msg = self.stock[len(self.acked)]
        await msg.ack_sync(timeout=CALL_TIMEOUT_S)
        self.acked.append(msg.data.decode())


@dataclass
class Side:
    """One client and the probes it runs."""

    label: str
    nc: object
    js: object
    kv: object
    sub: object
    control: object
    acker: Acker
    publishers: dict[str, list[Publisher]] = field(
        default_factory=lambda: {GEN: [], EVENTS: []})
    putters: list[KvPutter] = field(default_factory=list)

    def _writers(self, prefix: str) -> tuple[Publisher, Publisher, KvPutter]:
        gen = Publisher(self.js, GEN_SUBJECT, f"gen-{prefix}-{self.label}")
        evt = Publisher(self.js, EVT_SUBJECT, f"evt-{prefix}-{self.label}")
        putter = KvPutter(self.kv, f"job-{prefix}-{self.label}")
        self.publishers[GEN].append(gen)
        self.publishers[EVENTS].append(evt)
        self.putters.append(putter)
        return gen, evt, putter

    def acked(self, stream: str) -> list[str]:
        return [msg_id for publisher in self.publishers[stream] for msg_id in publisher.acked]

    def burst(self, round_: str) -> list[Probe]:
        """Probes started together just before the disruption: calls certainly in flight."""
        gen, evt, putter = self._writers(f"{round_}-burst")
        return [
            Probe(self.label, "publish GEN*", gen),
            Probe(self.label, "publish EVENTS*", evt),
            Probe(self.label, "kv put*", putter),
            Probe(self.label, "kv get*", lambda: self.kv.get("job-before")),
            Probe(self.label, "fetch(1)*", lambda: fetch_and_nak(self.sub, 1)),
        ]

    def probes(self, round_: str) -> list[Probe]:
        gen, evt, putter = self._writers(round_)
        return [
            Probe(self.label, "publish GEN", gen),
            Probe(self.label, "publish EVENTS", evt),
            Probe(self.label, "kv put", putter),
            Probe(self.label, "kv get", lambda: self.kv.get("job-before")),
            Probe(self.label, "fetch(1)", lambda: fetch_and_nak(self.sub, 1)),
            Probe(self.label, "fetch(4)", lambda: fetch_and_nak(self.sub, 4)),
            Probe(self.label, "idle fetch(1)", lambda: idle_fetch(self.control, 1)),
            Probe(self.label, "idle fetch(4)", lambda: idle_fetch(self.control, 4)),
            Probe(self.label, "ack_sync", self.acker),
            Probe(self.label, "stream_info", lambda: self.js.stream_info(GEN)),
            Probe(self.label, "consumer_info", lambda: self.js.consumer_info(GEN, WORKERS)),
        ]


async def _watch_leaders(cluster: EmbeddedNatsCluster, old: dict[str, str | None],
                         clock: Clock) -> dict[str, float]:
    """Seconds from the disruption until a live node other than the old leader claims each."""
    elected: dict[str, float] = {}
    while len(elected) < len(ASSETS) and time.monotonic() - clock.t0 < DEADLINE_S:
        for stream, consumer in ASSETS:
            name = _asset_name(stream, consumer)
            if name not in elected:
                leader = await asyncio.to_thread(cluster.stream_leader, stream, consumer)
                if leader is not None and leader != old[name]:
                    elected[name] = time.monotonic() - clock.t0
        await asyncio.sleep(0.05)
    return elected


async def _disrupt(title: str, cluster: EmbeddedNatsCluster, sides: list[Side],
                   action: Callable[[], Awaitable[None]]) -> list[Probe]:
    """Run every side's probes, start a burst of more just before doing `action` half a
    second in, wait for them all to succeed again, print what happened."""
    clock = Clock()
    round_ = title.split()[0]
    probes = [p for side in sides for p in side.probes(round_)]
    old = {_asset_name(s, c): await asyncio.to_thread(cluster.stream_leader, s, c)
           for s, c in ASSETS}
    tasks = [asyncio.create_task(_run(p, clock)) for p in probes]
    await asyncio.sleep(0.5)
    burst = [p for side in sides for p in side.burst(round_)]
    tasks += [asyncio.create_task(_run(p, clock)) for p in burst]
    probes += burst
    await asyncio.sleep(0)  # the burst's requests are written before the action
    clock.t0 = time.monotonic()
    try:
        await action()
        acted_s = time.monotonic() - clock.t0
        elected, *_ = await asyncio.gather(_watch_leaders(cluster, old, clock), *tasks)
    finally:
        for task in tasks:
            task.cancel()
    _report(title, probes, clock.t0, elected, acted_s)
    return probes


def _report(title: str, probes: list[Probe], t0: float, elected: dict[str, float],
            acted_s: float) -> None:
    print(f"\n=== {title} (action took {acted_s:.3f}s); times in s after it began")
    print("--- a live node claims leadership (monitor /jsz)")
    for asset, seconds in sorted(elected.items(), key=lambda item: item[1]):
        print(f"  {asset:45s} {seconds:6.2f}")
    print("--- first success of a call started after it; calls in all")
    for p in probes:
        print(f"  {p.client:11s} {p.op:15s} {p.first_ok_after(t0):6.2f}  {len(p.outcomes)}")
    duplicates = sum(getattr(p.call, "duplicates", 0) for p in probes)
    print(f"--- publishes acked as duplicates (a failed attempt had been stored): {duplicates}")
    print("--- exceptions: client, op, type [what] xcount, call began first..last, longest call")
    grouped: dict[tuple, list] = defaultdict(list)
    for p in probes:
        for began, took, kind, what in p.outcomes:
            if kind is not None:
                grouped[(p.client, p.op, kind, what)].append((began - t0, took))
    for (client, op, kind, what), hits in grouped.items():
        starts = [b for b, _ in hits]
        print(f"  {client:11s} {op:15s} {kind} [{what}] x{len(hits)} "
              f"{min(starts):+.2f}..{max(starts):+.2f} longest {max(t for _, t in hits):.2f}")


# --- helpers ------------------------------------------------------------------------------


async def _move_leader(nc, cluster: EmbeddedNatsCluster, target: str, stream: str,
                       consumer: str | None = None) -> None:
    """Make `target` lead `stream` (or its consumer): a stepdown naming a preferred node."""
    for _ in range(3):
        if await asyncio.to_thread(cluster.stream_leader, stream, consumer) == target:
            return
        await _step_down(nc, stream, consumer, target)
        for _ in range(100):
            if await asyncio.to_thread(cluster.stream_leader, stream, consumer) == target:
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"{_asset_name(stream, consumer)} did not move to {target}")


async def _step_down(nc, stream: str, consumer: str | None, preferred: str | None = None):
    subject = (f"$JS.API.CONSUMER.LEADER.STEPDOWN.{stream}.{consumer}" if consumer
               else f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}")
    body = json.dumps({"placement": {"preferred": preferred}}).encode() if preferred else b""
    answer = await nc.request(subject, body, timeout=5)
    assert json.loads(answer.data).get("success"), answer.data


async def _stream_payloads(js, stream: str) -> list[str]:
    """Every stored payload, in order; the gaps acks left in a work queue skipped."""
    info = await js.stream_info(stream)
    payloads = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            payloads.append((await js.get_msg(stream, seq)).data.decode())
        except nats.js.errors.NotFoundError:
            continue
    assert len(payloads) == info.state.messages
    return payloads


def _local_states(cluster: EmbeddedNatsCluster, streams: tuple[str, ...]) -> dict[str, dict]:
    """Each live node's own copy of each stream (count and sequence range), from its /jsz."""
    states: dict[str, dict] = {stream: {} for stream in streams}
    for name, node in cluster.nodes.items():
        if not node.alive:
            continue
        for account in cluster.jsz(name, streams=True).get("account_details") or []:
            for detail in account.get("stream_detail") or []:
                if detail["name"] in states:
                    state = detail["state"]
                    states[detail["name"]][name] = {
                        k: state[k] for k in ("messages", "first_seq", "last_seq")
                    }
    return states


async def _converged(cluster: EmbeddedNatsCluster, streams: tuple[str, ...],
                     timeout_s: float = 15.0) -> dict[str, dict]:
    deadline = time.monotonic() + timeout_s
    while True:
        states = await asyncio.to_thread(_local_states, cluster, streams)
        same = all(set(per_node) == set(cluster.nodes)
                   and len({json.dumps(v) for v in per_node.values()}) == 1
                   for per_node in states.values())
        if same or time.monotonic() > deadline:
            return states
        await asyncio.sleep(0.05)


@pytest.fixture
async def cluster(tmp_path):
    began = time.monotonic()
    running = await asyncio.to_thread(EmbeddedNatsCluster(tmp_path / "cluster").start)
    print(f"\ncluster formed in {time.monotonic() - began:.2f}s")
    yield running
    await asyncio.to_thread(running.stop)


@pytest.fixture
async def connect(cluster):
    """Clients given all three URLs (as services get TERRA_NATS_URL = cluster.url), first
    connected to the named node; closed at the end."""
    clients = []

    async def make(first: str):
        first_url = cluster.node(first).url
        servers = [first_url] + [url for url in cluster.urls if url != first_url]
        nc = await nats.connect(servers, dont_randomize=True, max_reconnect_attempts=-1)
        clients.append(nc)
        assert nc.connected_url.port == cluster.node(first).client_port
        return nc

    yield make
    for nc in clients:
        await nc.close()


async def _provisioned_with_one_leader(cluster, connect) -> tuple[str, list[Side], list[str]]:
    """Streams, buckets and consumers at R3; one node leading all the probed assets; a client
    on it and one on another node; commands queued for the fetch probes."""
    admin = await connect("n1")
    began = time.monotonic()
    await provision(admin, replicas=3, consumers=topology.CONSUMERS)
    print(f"provisioned at R3 in {time.monotonic() - began:.2f}s")
    leader = cluster.stream_leader(GEN)
    for stream, consumer in ASSETS:
        await _move_leader(admin, cluster, leader, stream, consumer)
    other = next(name for name in cluster.nodes if name != leader)
    sides = []
    for label, node in (("on-leader", leader), ("on-follower", other)):
        nc = await connect(node)
        js = nc.jetstream(timeout=CALL_TIMEOUT_S)
        kv = await js.key_value(JOBS)
        sub = await js.pull_subscribe_bind(WORKERS, stream=GEN)
        control = await js.pull_subscribe_bind(CONTROL, stream=GEN)
        sides.append(Side(label, nc, js, kv, sub, control, Acker([])))
    queued = Publisher(sides[0].js, GEN_SUBJECT, "gen-before")
    for _ in range(QUEUED):
        await queued()
    for side in sides:
        while len(side.acker.stock) < ACK_STOCK:
            side.acker.stock += await side.sub.fetch(ACK_STOCK - len(side.acker.stock))
    await sides[0].kv.put("job-before", b"queued")
    return leader, sides, queued.acked


async def test_leader_killed_loses_nothing_and_clients_carry_on(cluster, connect):
    began = time.monotonic()
    victim, sides, gen_ids = await _provisioned_with_one_leader(cluster, connect)

    async def kill() -> None:
        await asyncio.to_thread(cluster.kill, victim)

    await _disrupt(f"kill SIGKILL of {victim}, leader of all probed assets", cluster, sides, kill)
    gen_ids += [i for side in sides for i in side.acked(GEN)]
    consumed = {i for side in sides for i in side.acker.acked}  # acked: gone from the queue
    evt_ids = [i for side in sides for i in side.acked(EVENTS)]
    kv_values = {p.key: p.last_acked for side in sides for p in side.putters}
    for side in sides:  # and after the election, through both clients
        for subject, ids in ((GEN_SUBJECT, gen_ids), (EVT_SUBJECT, evt_ids)):
            after = Publisher(side.js, subject, f"{subject}-after-{side.label}")
            for _ in range(10):
                await after()
            ids += after.acked
    assert len(set(gen_ids)) == len(gen_ids) and len(set(evt_ids)) == len(evt_ids)

    # The client that was on the victim failed over to a survivor and carries on.
    on_leader = sides[0]
    assert on_leader.nc.is_connected
    assert on_leader.nc.connected_url.port != cluster.node(victim).client_port

    restart_began = time.monotonic()
    await asyncio.to_thread(cluster.restart, victim)
    rejoined_s = time.monotonic() - restart_began
    states = await _converged(cluster, (GEN, EVENTS, JOBS_STREAM))
    print(f"restart of {victim}: healthy and routed in {rejoined_s:.2f}s, every replica "
          f"identical in {time.monotonic() - restart_began:.2f}s")
    for stream, per_node in states.items():
        assert set(per_node) == set(cluster.nodes), (stream, per_node)
        assert len({json.dumps(v) for v in per_node.values()}) == 1, (stream, per_node)
    assert states[GEN][victim]["messages"] == len(gen_ids) - len(consumed)
    assert states[EVENTS][victim]["messages"] == len(evt_ids)

    # Nothing acked was lost or doubled: every id once, read through either client.
    js = sides[1].js
    assert sorted(await _stream_payloads(js, GEN)) == sorted(set(gen_ids) - consumed)
    assert sorted(await _stream_payloads(js, EVENTS)) == sorted(evt_ids)
    for side in sides:
        for key, value in kv_values.items():
            assert (await side.kv.get(key)).value == value
        assert (await side.kv.get("job-before")).value == b"queued"

    # The restarted node serves clients again (its own connection, no other URL).
    direct = await connect(victim)
    djs = direct.jetstream(timeout=5)
    ack = await djs.publish(EVT_SUBJECT, b"via-restarted")
    assert ack.seq == len(evt_ids) + 1
    assert (await (await djs.key_value(JOBS)).get("job-before")).value == b"queued"
    print(f"test body {time.monotonic() - began:.1f}s")


async def test_graceful_leader_changes(cluster, connect):
    """The errors of a planned change: a leader stepdown (as lame-duck and upgrades do), and a
    SIGTERM of the node that leads everything."""
    leader, sides, _ = await _provisioned_with_one_leader(cluster, connect)
    admin = sides[1].nc

    async def step_down_all() -> None:
        for stream, consumer in ASSETS:
            await _step_down(admin, stream, consumer)

    await _disrupt(f"stepdown of every probed asset (all led by {leader})", cluster, sides,
                   step_down_all)

    # Everything back on the node the "on-leader" client is connected to.
    port = sides[0].nc.connected_url.port
    leader = next(name for name, node in cluster.nodes.items() if node.client_port == port)
    for stream, consumer in ASSETS:
        await _move_leader(admin, cluster, leader, stream, consumer)

    async def terminate() -> None:
        await asyncio.to_thread(cluster.stop_node, leader)

    await _disrupt(f"SIGTERM of {leader}, leader of all probed assets", cluster, sides, terminate)
    await asyncio.to_thread(cluster.restart, leader)
    states = await _converged(cluster, (GEN, EVENTS, JOBS_STREAM))
    for stream, per_node in states.items():
        assert len({json.dumps(v) for v in per_node.values()}) == 1, (stream, per_node)
