"""`terra up`: the whole system from one command, stopped cleanly, restarted on its data;
kept up (a killed process comes back, a crash loop stops it with the reason); two at once,
each on its own servers."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from minio import Minio

from terra.ops.processes import listening_pid_owns
from terra.ops.servers import EmbeddedNats, EmbeddedS3, StartupFailed, free_port
from terra.ops.services import SERVICES
from terra.settings import LOCAL_S3_ACCESS_KEY, LOCAL_S3_SECRET_KEY
from tests.e2e.client import PASSWORD

pytestmark = [pytest.mark.e2e]
ROOT = Path(__file__).resolve().parents[2]


def start_terra_up(data_dir: Path, port: int | None, log_path: Path,
                   **extra_env: str) -> subprocess.Popen:
    """`terra up` with none of this shell's TERRA_ settings; `port` None: its own choice."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERRA_")}
    if port is not None:
        env["TERRA_PORT"] = str(port)
    env.update(extra_env)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "terra.ops.cli", "up", "--data-dir", str(data_dir)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )


def wait_ready(url: str, proc: subprocess.Popen, log_path: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, log_path.read_text()
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(log_path.read_text())


def output_of(log_path: Path) -> str:
    # Replaced, not refused: a line being written may end in half a character.
    return log_path.read_text(errors="replace")


def wait_for_output(log_path: Path, pattern: str, *, after: int = 0,
                    timeout_s: float = 60) -> re.Match:
    """Until `pattern` (a multi-line regex) is in the output past character `after`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = re.compile(pattern, re.MULTILINE).search(output_of(log_path), after)
        if found:
            return found
        time.sleep(0.1)
    raise TimeoutError(f"no {pattern!r} in:\n{output_of(log_path)[after:]}")


def printed_address(log_path: Path, what: str) -> str:
    """The address `terra up` printed for NATS, S3 or the gateway (scheme://host:port)."""
    return wait_for_output(log_path, rf"^{what} +(\w+://[\d.]+:\d+)").group(1)


def child_pids(parent: subprocess.Popen, cmdline: str) -> list[int]:
    """`terra up`'s children whose command line matches the regex `cmdline`."""
    found = subprocess.run(["pgrep", "-P", str(parent.pid), "-f", "--", cmdline],
                           capture_output=True, text=True, check=False).stdout.split()
    return [int(pid) for pid in found]


def child_pid(parent: subprocess.Popen, cmdline: str) -> int:
    found = child_pids(parent, cmdline)
    assert len(found) == 1, f"children matching {cmdline!r}: {found}"
    return found[0]


def service_cmdline(module: str) -> str:
    return rf" -m {module}$"


def register(url: str, email: str, timeout_s: float = 30) -> httpx.Response:
    """A client's registration, retried while the stack answers 5xx (a reconnect)."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = httpx.post(f"{url}/api/auth/register",
                              json={"email": email, "password": PASSWORD}, timeout=10)
        if response.status_code < 500 or time.monotonic() > deadline:
            return response
        time.sleep(0.5)


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)
    return proc.wait(60)


@pytest.mark.slow
def test_terra_up_serves_stops_cleanly_and_keeps_its_data(tmp_path):
    port, data_dir, log_path = free_port(), tmp_path / "data", tmp_path / "terra-up.log"
    url = f"http://127.0.0.1:{port}"
    email = "keeper@example.com"

    proc = start_terra_up(data_dir, port, log_path)
    try:
        wait_ready(url, proc, log_path)
        response = httpx.post(f"{url}/api/auth/register",
                              json={"email": email, "password": PASSWORD}, timeout=10)
        assert response.status_code == 201, response.text
    finally:
        code = stop(proc)
    output = log_path.read_text()
    assert code == 0, output
    assert "NATS" in output and "S3" in output and f"http://127.0.0.1:{port}" in output
    assert "stopped" in output

    # A second start reuses the data: the account is still there.
    proc = start_terra_up(data_dir, port, log_path)
    try:
        wait_ready(url, proc, log_path)
        login = httpx.post(f"{url}/api/auth/login",
                           json={"email": email, "password": PASSWORD}, timeout=10)
        assert login.status_code == 200, login.text
    finally:
        assert stop(proc) == 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_every_service_killed_comes_back(tmp_path):
    port, log_path = free_port(), tmp_path / "terra-up.log"
    url = f"http://127.0.0.1:{port}"
    proc = start_terra_up(tmp_path / "data", port, log_path)
    try:
        wait_ready(url, proc, log_path)
        owner = register(url, "in-flight@example.com").json()
        headers = {"Authorization": f"Bearer {owner['access_token']}"}
        for name, module in ((s.name, s.module) for s in SERVICES):
            pid = child_pid(proc, service_cmdline(module))
            in_flight = running_generation(url, headers) if name == "generator" else None
            # Its whole output is in its log file (the terminal shows warnings and worse).
            service_log = tmp_path / "data" / "logs" / f"{name}.log"
            offset, service_offset = len(output_of(log_path)), len(output_of(service_log))
            os.kill(pid, signal.SIGKILL)
            wait_for_output(
                log_path, rf"^!! service {name} exited with code -9; "
                rf"restarting in [\d.]+ s \(restart 1\); its last line: ", after=offset)
            wait_for_output(service_log, r"(started successfully|Application startup complete)",
                            after=service_offset)
            assert child_pid(proc, service_cmdline(module)) != pid
            wait_ready(url, proc, log_path)  # the gateway keeps its socket: the same URL
            if name == "auth":
                email = "after-the-crash@example.com"
                assert register(url, email).status_code == 201
                login = httpx.post(f"{url}/api/auth/login",
                                   json={"email": email, "password": PASSWORD}, timeout=10)
                assert login.status_code == 200, login.text
            if in_flight is not None:  # redelivered once ack_wait passes: it ends, once
                assert finished(url, headers, in_flight) == "succeeded"
                listed = httpx.get(f"{url}/api/generate/download/{owner['user']['id']}",
                                   headers=headers, timeout=10).json()
                assert [image["job_id"] for image in listed] == [in_flight]
        assert proc.poll() is None
    finally:
        assert stop(proc) == 0, log_path.read_text()


def running_generation(url: str, headers: dict) -> str:
    """A long generation, once its worker has started it."""
    response = httpx.post(f"{url}/api/generate/image", headers=headers, timeout=10, json={
        "prompt": "a long one", "width": 512, "height": 512, "steps": 100, "seed": 3})
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/api/jobs/{job_id}", headers=headers,
                    timeout=10).json()["status"] != "running":
        assert time.monotonic() < deadline, "the generation never started"
        time.sleep(0.2)
    return job_id


def finished(url: str, headers: dict, job_id: str, timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        status = httpx.get(f"{url}/api/jobs/{job_id}", headers=headers, timeout=10).json()["status"]
        if status in ("succeeded", "failed", "cancelled"):
            return status
        assert time.monotonic() < deadline, f"job {job_id} still {status}"
        time.sleep(0.5)


@pytest.mark.slow
def test_the_embedded_nats_killed_comes_back_on_its_port(tmp_path):
    port, log_path = free_port(), tmp_path / "terra-up.log"
    url = f"http://127.0.0.1:{port}"
    proc = start_terra_up(tmp_path / "data", port, log_path)
    try:
        wait_ready(url, proc, log_path)
        nats_port = int(printed_address(log_path, "NATS").rsplit(":", 1)[1])
        pid = child_pid(proc, "nats-server ")
        offset = len(output_of(log_path))
        os.kill(pid, signal.SIGKILL)
        wait_for_output(log_path, r"^!! server nats exited with code -9; restarting in "
                        r"[\d.]+ s \(restart 1\); its last line: ", after=offset)
        deadline = time.monotonic() + 30
        while child_pids(proc, "nats-server ") in ([], [pid]):
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        assert child_pids(proc, rf"nats-server .*-p {nats_port} "), "not on the same port"
        wait_ready(url, proc, log_path)
        response = register(url, "after-nats@example.com")
        assert response.status_code == 201, response.text
    finally:
        assert stop(proc) == 0, log_path.read_text()


@pytest.mark.slow
def test_a_service_that_keeps_crashing_stops_the_stack_with_the_reason(tmp_path):
    log_path = tmp_path / "terra-up.log"
    # Only prompt_service reads it, and refuses it at start: a deterministic crash loop.
    proc = start_terra_up(tmp_path / "data", free_port(), log_path, TERRA_PROMPT_CONCURRENCY="0")
    try:
        assert proc.wait(100) == 1
    finally:
        if proc.poll() is None:
            stop(proc)
    output = log_path.read_text()
    # Each wait is between half and all of its step (0.5 s doubling; jittered).
    waits = {int(n): float(s) for s, n in re.findall(
        r"^!! service prompt exited with code 1; restarting in ([\d.]+) s \(restart (\d)\); "
        r"its last line: ", output, re.MULTILINE)}
    assert sorted(waits) == [1, 2, 3, 4, 5], output
    for restart, wait in waits.items():
        step = 0.5 * 2 ** (restart - 1)
        assert step / 2 - 0.05 <= wait <= step + 0.05, (restart, wait)
    assert "!! service prompt crashed 6 times in 60 s; stopping the stack" in output
    reason = output[output.index("crashed 6 times"):]
    assert "prompt_concurrency" in reason  # its last output says why
    assert "restart 6" not in output and "stopped" in output
    assert not re.search(r"!! service (auth|trainer|generator|gateway)", output)


@pytest.mark.slow
def test_two_stacks_started_at_once_each_use_their_own_servers(tmp_path):
    stacks = {}
    for name in ("one", "two"):
        data_dir, log_path = tmp_path / name, tmp_path / f"{name}.log"
        # No TERRA_PORT, NATS or S3 settings: both want 8000, 4222 and 8333.
        stacks[name] = (data_dir, log_path, start_terra_up(data_dir, None, log_path))
    try:
        addresses = {}
        for name, (data_dir, log_path, proc) in stacks.items():
            addresses[name] = {what: printed_address(log_path, what)
                               for what in ("NATS", "S3", "gateway")}
            wait_ready(addresses[name]["gateway"], proc, log_path)
        for what in ("NATS", "S3", "gateway"):
            assert addresses["one"][what] != addresses["two"][what], addresses

        payloads = {}
        for name, (data_dir, log_path, proc) in stacks.items():
            response = register(addresses[name]["gateway"], "same@example.com")
            assert response.status_code == 201, response.text  # an account store of its own
            # Each stack's S3 is the weed it started, storing into its own data dir.
            endpoint = addresses[name]["S3"].removeprefix("http://")
            weed = child_pid(proc, r"weed mini ")
            assert listening_pid_owns(weed, int(endpoint.rsplit(":", 1)[1])) is not False
            payloads[name] = os.urandom(4096)
            s3 = Minio(endpoint, LOCAL_S3_ACCESS_KEY, LOCAL_S3_SECRET_KEY, secure=False)
            s3.make_bucket("probe")
            s3.put_object("probe", "payload", io.BytesIO(payloads[name]), 4096)
        for name, (data_dir, _, _) in stacks.items():
            other = payloads["two" if name == "one" else "one"]
            stored = [path.read_bytes() for path in (data_dir / "s3").rglob("*.dat")]
            assert any(payloads[name] in blob for blob in stored)
            assert not any(other in blob for blob in stored)
            streams = list((data_dir / "nats" / "jetstream").glob("*/streams/*"))
            assert streams, f"no JetStream streams stored in {data_dir}"
    finally:
        codes = {name: stop(proc) for name, (_, _, proc) in stacks.items()}
    assert codes == {"one": 0, "two": 0}, codes


def test_an_embedded_server_leaves_a_taken_default_port_but_never_a_chosen_one(tmp_path):
    with socket.socket() as squatter:  # another program, listening where we meant to
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]

        nats_server = EmbeddedNats(tmp_path / "moved", port=taken).start()
        try:
            assert nats_server.port != taken
            assert listening_pid_owns(nats_server.server.proc.pid, nats_server.port) is not False
        finally:
            nats_server.stop()
        with pytest.raises(StartupFailed, match="address already in use"):
            EmbeddedNats(tmp_path / "fixed", port=taken, fixed_port=True).start()


def test_embedded_s3_is_never_ready_on_another_programs_listener(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        with pytest.raises(StartupFailed):
            EmbeddedS3(tmp_path, "ak", "a-secret-key", port=taken, fixed_port=True).start()


def test_terra_up_refuses_a_gateway_port_that_is_taken(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        log_path = tmp_path / "terra-up.log"
        proc = start_terra_up(tmp_path / "data", taken, log_path)
        assert proc.wait(30) == 1
    output = log_path.read_text()
    assert "could not listen for the gateway" in output and "NATS" not in output
