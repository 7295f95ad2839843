"""`terra up`: the whole system from one command, stopped cleanly, restarted on its data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from terra.local import free_port
from tests.e2e.client import PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def start_terra_up(data_dir: Path, port: int, log_path: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERRA_")}
    env["TERRA_PORT"] = str(port)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "terra.cli", "up", "--data-dir", str(data_dir)],
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


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)
    return proc.wait(60)


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


def test_a_crashed_service_is_reported(tmp_path):
    port, log_path = free_port(), tmp_path / "terra-up.log"
    proc = start_terra_up(tmp_path / "data", port, log_path)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, log_path)
        auth_pids = subprocess.run(
            ["pgrep", "-f", "-P", str(proc.pid), "auth_service"],
            capture_output=True, text=True, check=False,
        ).stdout.split()
        assert auth_pids, log_path.read_text()
        os.kill(int(auth_pids[0]), signal.SIGKILL)
        assert proc.wait(60) == 1
    finally:
        if proc.poll() is None:
            stop(proc)
    assert "service auth exited with code -9" in log_path.read_text()
