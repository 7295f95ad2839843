"""One leaked key stays in its room: for every identity, its key is tried against
everything beyond what its code uses (`tests/attacks.py`), on a real nats-server with the
rendered accounts, and afterwards nothing has changed: no stream, message, consumer or
configuration, as the operator sees it. Reads of what it may not read get nothing.

The same battery runs on a 3-node cluster with the cluster's configuration. The check is
shown to catch an effect: the same messages sent with the operator's key (which may do
anything) change the snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import nats
import pytest

from contracts import topology as t
from contracts.ids import new_id
from contracts.permissions import OPERATOR, SERVICE_IDENTITIES, inbox_prefix
from terra.nats.accounts import Credentials
from terra.nats.provisioning import provision
from testing.cluster import EmbeddedNatsCluster
from tests import attacks
from tests.attacks import VICTIM, Attempt, Snapshot

pytestmark = pytest.mark.integration


class Server:
    """A NATS deployment under attack: its URL(s) and every identity's key."""

    def __init__(self, urls: list[str], credentials: Credentials) -> None:
        self.urls = urls
        self.credentials = credentials

    async def connect(self, identity: str, **options) -> nats.aio.client.Client:
        return await nats.connect(self.urls, inbox_prefix=inbox_prefix(identity),
                                  nkeys_seed=str(self.credentials.seed_file(identity)),
                                  **options)


async def seeded(server: Server, replicas: int = 1) -> None:
    """Provisioned as `terra provision` does, with a victim's account, jobs and models,
    and a command waiting in every work queue."""
    nc = await server.connect(OPERATOR)
    try:
        await provision(nc, replicas=replicas, consumers=t.CONSUMERS)
        js = nc.jetstream()
        values = {t.USERS_KV: VICTIM, t.MODELS_KV: f"{VICTIM}.m1",
                  t.IMAGES_KV: f"{VICTIM}.i1", t.REVOCATIONS_KV: f"user.{VICTIM}"}
        values |= {kv: f"{VICTIM}.{attacks.VICTIM_JOB}" for kv in t.JOBS_KVS.values()}
        for kv, key in values.items():
            await (await js.key_value(kv.bucket)).put(key, b'{"seeded": true}')
        for domain, verb in (("prompt", "optimize"), ("training", "start"),
                             ("generation", "generate")):
            await js.publish(t.command_subject(domain, verb), b'{"seeded": true}',
                             headers={"Nats-Msg-Id": new_id()})
        await js.publish(t.event_subject("account", "registered", VICTIM), b"{}")
    finally:
        await nc.drain()


async def snapshot(server: Server) -> Snapshot:
    nc = await server.connect(OPERATOR)
    try:
        return await Snapshot.of(nc.jetstream())
    finally:
        await nc.drain()


async def attack_with(server: Server, identity: str) -> tuple[list[str], dict]:
    """Every attempt of `identity`'s key; the snapshot differences it caused, and what
    its forbidden reads returned."""
    before = await snapshot(server)
    refused: list[str] = []

    async def on_error(error: Exception) -> None:
        refused.append(str(error))

    nc = await server.connect(identity, error_cb=on_error)
    try:
        await attacks.send(nc, attacks.attempts(identity))
        read = await attacks.answers(nc, attacks.reads(identity))
        await asyncio.sleep(1.0)  # anything the server does later (a delivery) is done
    finally:
        await nc.close()
    return before.differences(await snapshot(server)), read


@contextlib.asynccontextmanager
async def single_server(tmp_path) -> AsyncIterator[Server]:
    from terra.ops.servers import EmbeddedNats

    nats_server = EmbeddedNats(tmp_path / "attacked").start()
    try:
        server = Server([nats_server.url], nats_server.credentials)
        await seeded(server)
        yield server
    finally:
        nats_server.stop()


@pytest.fixture(scope="module")
async def attacked(tmp_path_factory) -> AsyncIterator[Server]:
    async with single_server(tmp_path_factory.mktemp("leaked")) as server:
        yield server


@pytest.mark.parametrize("identity", SERVICE_IDENTITIES)
async def test_a_leaked_key_changes_nothing_beyond_its_room(attacked, identity):
    differences, read = await attack_with(attacked, identity)
    assert differences == [], f"{identity}'s key changed:\n" + "\n".join(differences)
    leaked = {what: answer for what, answer in read.items() if attacks.leaked(answer)}
    assert leaked == {}, f"{identity}'s key read what it may not"
    assert len(read) > 50  # the battery is not empty


async def test_the_check_sees_what_the_operators_key_can_do(attacked):
    """A control: the attempts that change nothing when an identity sends them do change
    the account when the operator (all of TERRA) sends the same, so the check can fail."""
    before = await snapshot(attacked)
    nc = await attacked.connect(OPERATOR)
    try:
        victim = f"$KV.{t.USERS_KV.bucket}.{VICTIM}"
        await attacks.send(nc, [
            Attempt("answer onto a user record", f"$JS.API.STREAM.INFO.{t.EVENTS.name}",
                    reply=victim),
            Attempt("rewrite a durable", *_rewrite(t.account_cleanup_consumer("prompt")))])
        await asyncio.sleep(0.5)
    finally:
        await nc.drain()
    differences = before.differences(await snapshot(attacked))
    assert any(line.startswith(t.USERS_KV.stream) for line in differences), differences
    assert any("prompt_account_cleanup" in line for line in differences), differences
    nc = await attacked.connect(OPERATOR)  # put the durable back for the tests after this
    try:
        cleanup = t.account_cleanup_consumer("prompt")
        await nc.jetstream().delete_consumer(cleanup.stream, cleanup.durable)
    finally:
        await nc.drain()
    await seeded(attacked)


def _rewrite(spec: t.ConsumerSpec) -> tuple[str, bytes]:
    subject = f"$JS.API.CONSUMER.CREATE.{spec.stream}.{spec.durable}"
    return subject, json.dumps({"stream_name": spec.stream, "config": {
        "durable_name": spec.durable, "name": spec.durable, "ack_policy": "explicit",
        "filter_subject": "terra.evt.nothing.*.*"}}).encode()


@pytest.mark.cluster
@pytest.mark.slow
async def test_on_a_cluster_no_leaked_key_changes_anything(tmp_path):
    credentials = Credentials.ensure(tmp_path / "creds")
    cluster = await asyncio.to_thread(EmbeddedNatsCluster(
        tmp_path / "cluster", extra_config=credentials.accounts_file.read_text()).start)
    try:
        server = Server(cluster.urls, credentials)
        await seeded(server, replicas=3)
        for identity in SERVICE_IDENTITIES:
            differences, read = await attack_with(server, identity)
            assert differences == [], f"{identity} on the cluster:\n" + "\n".join(differences)
            assert not any(attacks.leaked(a) for a in read.values()), identity
    finally:
        await asyncio.to_thread(cluster.stop)
