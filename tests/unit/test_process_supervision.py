"""`terra up`'s supervision as pure logic: when a dead child is restarted, and when a crash
loop stops the stack (fake children, a fake clock: no processes); whose listener a port
is, read from a /proc laid out in a temporary folder."""

from __future__ import annotations

import io

import pytest

from terra.backoff import RestartPolicy
from terra.ops.processes import ProcessSupervisor, listening_pid_owns


def ceiling() -> float:
    """The random source at its top: every restart waits its step's full delay."""
    return 1.0


POLICY = RestartPolicy(base_delay_s=0.5, max_delay_s=10.0, max_restarts=5, window_s=60.0,
                       draw=ceiling)


def test_the_delay_doubles_with_each_recent_crash_up_to_its_cap():
    crashes: list[float] = []
    delays = []
    for at in range(5):
        crashes.append(float(at))
        delays.append(POLICY.delay_s(crashes, now=float(at)))
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0]
    capped = RestartPolicy(base_delay_s=0.5, max_delay_s=10.0, max_restarts=20, draw=ceiling)
    assert capped.delay_s([float(at) for at in range(8)], now=7.0) == 10.0


def test_one_crash_too_many_within_the_window_gives_up():
    assert POLICY.delay_s([1, 2, 3, 4, 5], now=5) == 8.0
    assert POLICY.delay_s([1, 2, 3, 4, 5, 6], now=6) is None


def test_crashes_older_than_the_window_are_forgotten():
    old = [0.0, 1.0, 2.0, 3.0, 4.0]
    assert POLICY.delay_s([*old, 100.0], now=100.0) == 0.5  # a fresh start: shortest delay
    assert POLICY.recent_failures([*old, 61.5], now=61.5) == 4  # 2.0, 3.0, 4.0 and 61.5


def test_the_default_policy_is_the_documented_one_and_jitters_below_each_step():
    policy = RestartPolicy()
    assert (policy.base_delay_s, policy.max_delay_s, policy.max_restarts, policy.window_s) == (
        0.5, 10.0, 5, 60.0)
    assert all(0.25 <= policy.delay_s([0.0], now=0.0) <= 0.5 for _ in range(100))


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeChild:
    """A process that dies when told to; `restart` may be told to fail."""

    def __init__(self, name: str, kind: str = "service") -> None:
        self.name, self.kind = name, kind
        self.code: int | None = None
        self.starts = 0
        self.fail_next_start: Exception | None = None
        self.events: list[str] = []

    def die(self, code: int = -9) -> None:
        self.code = code

    def restart(self) -> None:
        self.starts += 1
        if self.fail_next_start:
            error, self.fail_next_start = self.fail_next_start, None
            raise error
        self.code = None

    def exit_code(self) -> int | None:
        return self.code

    def output_tail(self) -> str:
        return "Traceback: boom"

    def terminate(self) -> None:
        self.events.append("terminate")

    def wait_or_kill(self, timeout_s: float) -> None:
        self.events.append("wait")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def supervisor_of(clock: FakeClock, *children: FakeChild) -> tuple[ProcessSupervisor, io.StringIO]:
    err = io.StringIO()
    supervisor = ProcessSupervisor(POLICY, clock=clock, err=err)
    for child in children:
        supervisor.watch(child)
    return supervisor, err


def test_a_dead_child_is_restarted_after_its_delay_and_the_restart_is_said(clock):
    trainer = FakeChild("trainer")
    supervisor, err = supervisor_of(clock, trainer)
    trainer.die(-9)
    assert supervisor.check() is None
    assert err.getvalue() == ("!! service trainer exited with code -9; "
                              "restarting in 0.5 s (restart 1); its last line: Traceback: boom\n")
    clock.now = 0.4
    supervisor.check()
    assert trainer.starts == 0  # not before its delay
    clock.now = 0.5
    supervisor.check()
    assert trainer.starts == 1 and trainer.exit_code() is None

    clock.now = 3.0
    trainer.die(1)
    supervisor.check()
    assert err.getvalue().splitlines()[-1] == (
        "!! service trainer exited with code 1; restarting in 1.0 s (restart 2); "
        "its last line: Traceback: boom")


def test_a_failed_start_counts_as_a_crash_and_is_tried_again(clock):
    nats = FakeChild("nats", kind="server")
    supervisor, err = supervisor_of(clock, nats)
    nats.die(-9)
    supervisor.check()
    nats.fail_next_start = RuntimeError("nats exited with code 1 during start-up:\nbind: in use")
    clock.now = 0.5
    supervisor.check()
    assert err.getvalue().splitlines()[-1] == (
        "!! server nats failed to start (nats exited with code 1 during start-up:); "
        "restarting in 1.0 s (restart 2); its last line: Traceback: boom")
    clock.now = 1.5
    supervisor.check()
    assert nats.starts == 2 and nats.exit_code() is None


def test_a_crash_loop_stops_with_the_reason_and_the_last_output(clock):
    prompt, auth = FakeChild("prompt"), FakeChild("auth")
    supervisor, _ = supervisor_of(clock, auth, prompt)
    reason = None
    for _ in range(6):
        prompt.die(1)
        reason = supervisor.check()
        clock.now += 10.0  # past every delay: the restart happens on the next pass
        if reason is None:
            supervisor.check()
    assert reason == ("!! service prompt crashed 6 times in 60 s; stopping the stack: "
                      "its last output:\nTraceback: boom")
    assert prompt.starts == 5 and auth.starts == 0


def test_services_stop_before_the_servers_they_use(clock):
    nats, s3 = FakeChild("nats", "server"), FakeChild("s3", "server")
    auth, gateway = FakeChild("auth"), FakeChild("gateway")
    supervisor, _ = supervisor_of(clock, nats, s3, auth, gateway)
    order: list[str] = []
    for child in (nats, s3, auth, gateway):
        child.terminate = lambda child=child: order.append(f"terminate {child.name}")
        child.wait_or_kill = lambda timeout_s, child=child: order.append(f"wait {child.name}")
    supervisor.stop(grace_s=5)
    assert order == ["terminate auth", "terminate gateway", "wait auth", "wait gateway",
                     "terminate s3", "wait s3", "terminate nats", "wait nats"]


TCP_HEADER = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
              "   uid  timeout inode\n")


def tcp_row(port: int, state: str, inode: int) -> str:
    return (f"   0: 0100007F:{port:04X} 00000000:0000 {state} 00000000:00000000 00:00000000 "
            f"00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n")


@pytest.fixture
def proc(tmp_path):
    """A /proc where port 8333 is listened on through socket 555, held by process 42;
    process 43 holds a connection (socket 556) on that port, not the listener."""
    root = tmp_path / "proc"
    (root / "net").mkdir(parents=True)
    (root / "net" / "tcp").write_text(
        TCP_HEADER + tcp_row(8333, "0A", 555) + tcp_row(8333, "01", 556))
    (root / "net" / "tcp6").write_text(TCP_HEADER)
    for pid, inode in ((42, 555), (43, 556)):
        fds = root / str(pid) / "fd"
        fds.mkdir(parents=True)
        (fds / "3").symlink_to(f"socket:[{inode}]")
        (fds / "1").symlink_to("/dev/null")
    return root


def test_the_listener_is_owned_only_by_the_process_holding_its_socket(proc):
    assert listening_pid_owns(42, 8333, proc) is True
    assert listening_pid_owns(43, 8333, proc) is False  # a connection is not the listener
    assert listening_pid_owns(42, 4222, proc) is False  # nobody listens there
    assert listening_pid_owns(99, 8333, proc) is False  # gone


def test_without_proc_ownership_is_unknown(tmp_path):
    assert listening_pid_owns(42, 8333, tmp_path / "no-proc") is None


def test_the_terminal_gets_warnings_errors_and_their_tracebacks_only():
    from terra.ops.processes import OutputFilter

    shown = OutputFilter()
    lines = {
        "2026-12-07 09:00:00,001 trainer INFO faststream: started\n": False,
        "Loading weights: 100%|##########| 12/12\n": False,  # a library's progress bar
        "/venv/transformers/utils.py:1: UserWarning: torchvision is not available\n": False,
        "2026-12-07 09:00:01,002 gateway WARNING terra.runtime.supervise: restarting loop\n":
            True,
        "2026-12-07 09:00:02,003 gateway ERROR terra.runtime.supervise: loop failed\n": True,
        "Traceback (most recent call last):\n": True,  # the record's traceback follows it
        '  File "x.py", line 1, in <module>\n': True,
        "ValueError: boom\n": True,
        "2026-12-07 09:00:03,004 gateway INFO uvicorn.access: GET /api/jobs 200\n": False,
        '{"level": "error", "message": "json format too"}\n': True,
        '{"level": "info", "message": "quiet"}\n': False,
    }
    assert [shown.worth_showing(line) for line in lines] == list(lines.values())


def test_a_crash_outside_logging_is_shown():
    from terra.ops.processes import OutputFilter

    shown = OutputFilter()
    assert not shown.worth_showing("Writing model shards: 50%\n")
    assert shown.worth_showing("Traceback (most recent call last):\n")
    assert shown.worth_showing("ImportError: no module named x\n")


def test_a_service_output_goes_whole_to_its_log_and_the_worth_showing_to_the_terminal(
        tmp_path):
    import io
    import subprocess
    import sys

    from terra.ops.processes import ServiceChild

    out, log = io.StringIO(), tmp_path / "logs" / "demo.log"
    script = ("import sys; print('2026-12-07 09:00:00,001 demo INFO x: hello'); "
              "print('progress 50%'); "
              "print('2026-12-07 09:00:00,002 demo ERROR x: bad', flush=True)")
    child = ServiceChild("demo", "demo", {}, width=5, log_path=log, out=out)
    # What `start` pumps, from a one-liner rather than `python -m <module>`:
    child.proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT)
    child._copy_output(child.proc.stdout)
    child.proc.wait(10)
    assert log.read_text().splitlines() == [
        "2026-12-07 09:00:00,001 demo INFO x: hello", "progress 50%",
        "2026-12-07 09:00:00,002 demo ERROR x: bad"]
    assert out.getvalue() == "demo  | 2026-12-07 09:00:00,002 demo ERROR x: bad\n"


def test_readiness_is_said_when_first_ready_and_at_each_change_after(tmp_path):
    import http.server
    import io
    import json
    import threading

    from terra.ops.cli import report_readiness

    answers = [503, 200, 200, 503, 200]  # starting, ready, ready, a worker lost, back
    served = threading.Event()
    stopping = threading.Event()

    class Ready(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            status = answers.pop(0) if answers else 200
            if not answers:
                served.set()
            body = json.dumps({"reasons": ["no live training worker"]} if status != 200
                              else {}).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    out = io.StringIO()
    url = f"http://127.0.0.1:{server.server_port}/ready"
    watcher = threading.Thread(target=report_readiness, args=(url, stopping),
                               kwargs={"poll_s": 0.01, "out": out})
    watcher.start()
    assert served.wait(10)
    stopping.set()
    watcher.join(10)
    server.shutdown()
    said = out.getvalue().splitlines()
    assert [line.split()[0] for line in said] == ["ready", "NOT", "ready"]
    assert " in " in said[0] and " in " not in said[2]  # the first says how long it took
    assert said[1] == "NOT READY  no live training worker"
