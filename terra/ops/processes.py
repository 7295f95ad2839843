"""`terra up`'s children kept alive: one that dies is started again after a growing delay;
one that keeps dying stops the stack with its reason, instead of restarting forever.

`terra.backoff.RestartPolicy` is the pure rule (crash times in, a delay or "give up" out).
`ProcessSupervisor` applies it to anything shaped like `Child`: a service here
(`ServiceChild`) or an embedded server (`terra.ops.servers.EmbeddedNats` / `EmbeddedS3`).
`listening_pid_owns` tells whether a listener on a port is a given process's (Linux /proc).

A service's whole output goes to its log file; the terminal gets only what a person
needs to see (`worth_showing`: warnings, errors and the traceback that follows one), so
library chatter (progress bars, import warnings, access lines) stays in the file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TextIO

from terra.backoff import RestartPolicy

PROC = Path("/proc")
_TCP_LISTEN = "0A"  # the state column of /proc/net/tcp


class Child(Protocol):
    """What the supervisor needs of a process it keeps alive."""

    name: str
    kind: str  # "service" or "server": said in messages; services stop before servers

    def restart(self) -> None:
        """Start it again (same ports, same data); raises when it cannot."""

    def exit_code(self) -> int | None:
        """None while it runs."""

    def output_tail(self) -> str: ...

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM), without waiting."""

    def wait_or_kill(self, timeout_s: float) -> None: ...


# A text log line (`terra.runtime.logs`): "<date> <time> <service> <LEVEL> <logger>: …".
_TEXT_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \S+ \S+ (?P<level>[A-Z]+) ")
_SHOWN_LEVELS = frozenset({"WARNING", "ERROR", "CRITICAL"})


def record_level(line: str) -> str | None:
    """The level of a log record line (text or JSON format); None for any other output."""
    if match := _TEXT_RECORD.match(line):
        return match["level"]
    if line.startswith("{"):
        try:
            level = json.loads(line).get("level")
        except (ValueError, AttributeError):
            return None
        return str(level).upper() if level else None
    return None


class OutputFilter:
    """Which lines of a service's output reach the terminal: records at WARNING or above,
    and the lines that follow one until the next record (its traceback)."""

    def __init__(self) -> None:
        self._in_shown_record = False

    def worth_showing(self, line: str) -> bool:
        level = record_level(line)
        if level is not None:
            self._in_shown_record = level in _SHOWN_LEVELS
            return self._in_shown_record
        if line.startswith(("Traceback", "Fatal Python error")):  # a crash outside logging
            self._in_shown_record = True
        return self._in_shown_record


class ServiceChild:
    """`python -m <module>` in its own session: its output to `log_path`, and what is worth
    showing (`OutputFilter`) to the terminal, prefixed with its name."""

    kind = "service"

    def __init__(
        self,
        name: str,
        module: str,
        env: dict[str, str],
        *,
        width: int,
        log_path: Path | None = None,
        pass_fds: Sequence[int] = (),
        out: TextIO | None = None,
        tail_lines: int = 20,
    ) -> None:
        self.name, self.module, self.env, self.log_path = name, module, env, log_path
        self.width, self.pass_fds, self.out = width, tuple(pass_fds), out or sys.stdout
        self._tail: deque[str] = deque(maxlen=tail_lines)
        self.proc: subprocess.Popen | None = None
        self._pump: threading.Thread | None = None

    def start(self) -> ServiceChild:
        self._tail.clear()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=self.pass_fds,
            # Own session: a Ctrl-C in the terminal reaches `terra up`, which stops us in order.
            start_new_session=True,
        )
        self._pump = threading.Thread(target=self._copy_output, args=(self.proc.stdout,),
                                      daemon=True)
        self._pump.start()
        return self

    def restart(self) -> None:
        self.start()

    def _copy_output(self, stream) -> None:
        shown = OutputFilter() if self.log_path else None  # no file: everything is shown
        log = None
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log = self.log_path.open("a", encoding="utf-8")
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode(errors="replace")
                self._tail.append(line)
                if log:
                    log.write(line)
                    log.flush()
                if shown is None or shown.worth_showing(line):
                    self.out.write(f"{self.name:<{self.width}} | {line}")
                    self.out.flush()
        finally:
            if log:
                log.close()

    def exit_code(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def output_tail(self) -> str:
        if self._pump:
            self._pump.join(2.0)  # the last lines of a dead process may still be in the pipe
        return "".join(self._tail)

    def terminate(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()

    def wait_or_kill(self, timeout_s: float) -> None:
        if not self.proc:
            return
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class _Watch:
    child: Child
    crash_times: deque[float]
    restarts: int = 0
    restart_at: float | None = None  # set while dead and waiting for its restart


@dataclass
class ProcessSupervisor:
    """Watches children from one thread: `run` until told to stop or a crash loop."""

    policy: RestartPolicy = field(default_factory=RestartPolicy)
    clock: Callable[[], float] = time.monotonic
    err: TextIO | None = None
    poll_s: float = 0.2
    _watches: list[_Watch] = field(default_factory=list, init=False)

    def watch(self, child: Child) -> None:
        """Supervise a child that is already running."""
        # Only the last max_restarts + 1 crash times can decide anything.
        self._watches.append(_Watch(child, deque(maxlen=self.policy.max_restarts + 1)))

    def run(self, stopping: threading.Event) -> int:
        """0 once `stopping` is set; 1 when a child crashed too often (the reason printed)."""
        while not stopping.wait(self.poll_s):
            reason = self.check()
            if reason:
                self._say(reason)
                return 1
        return 0

    def check(self) -> str | None:
        """One pass: note deaths, restart what is due. Returns why to stop, if it must."""
        for watch in self._watches:
            failure = self._failure(watch)
            if failure and (reason := self._crashed(watch, failure)):
                return reason
        return None

    def _failure(self, watch: _Watch) -> str | None:
        """How the child just failed (it died, or its due restart did not start), if it did."""
        if watch.restart_at is None:
            code = watch.child.exit_code()
            return None if code is None else f"exited with code {code}"
        if self.clock() < watch.restart_at:
            return None
        watch.restart_at = None
        try:
            watch.child.restart()
        except (OSError, RuntimeError, TimeoutError) as exc:
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return f"failed to start ({first_line})"
        return None

    def _crashed(self, watch: _Watch, what: str) -> str | None:
        now = self.clock()
        watch.crash_times.append(now)
        child = watch.child
        delay = self.policy.delay_s(watch.crash_times, now)
        if delay is None:
            crashes = self.policy.recent_failures(watch.crash_times, now)
            tail = child.output_tail().rstrip() or "(no output)"
            return (f"!! {child.kind} {child.name} crashed {crashes} times in "
                    f"{self.policy.window_s:g} s; stopping the stack: its last output:\n{tail}")
        watch.restarts += 1
        watch.restart_at = now + delay
        # Its last words: a reason printed outside logging (a settings error) is seen here.
        last = (child.output_tail().rstrip().splitlines() or ["(no output)"])[-1]
        self._say(f"!! {child.kind} {child.name} {what}; restarting in {delay:.1f} s "
                  f"(restart {watch.restarts}); its last line: {last}")
        return None

    def stop(self, grace_s: float, server_grace_s: float = 10.0) -> None:
        """Services first, together (they finish their work on the broker), then the
        servers they use, last started first."""
        services = [w.child for w in self._watches if w.child.kind == "service"]
        servers = [w.child for w in self._watches if w.child.kind != "service"]
        for child in services:
            child.terminate()
        deadline = self.clock() + grace_s
        for child in services:
            child.wait_or_kill(max(0.1, deadline - self.clock()))
        for child in reversed(servers):
            child.terminate()
            child.wait_or_kill(server_grace_s)

    def _say(self, line: str) -> None:
        err = self.err or sys.stderr
        err.write(line + "\n")
        err.flush()


def port_listener_inodes(port: int, proc: Path = PROC) -> set[int] | None:
    """Socket inodes LISTENing on TCP `port` (any address), or None without /proc/net."""
    tables = [proc / "net" / "tcp", proc / "net" / "tcp6"]
    if not tables[0].exists():
        return None
    inodes = set()
    for table in tables:
        if not table.exists():
            continue
        for row in table.read_text().splitlines()[1:]:
            # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
            fields = row.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == _TCP_LISTEN:
                inodes.add(int(fields[9]))
    return inodes


def socket_inodes(pid: int, proc: Path = PROC) -> set[int]:
    """Inodes of the sockets process `pid` holds open (empty once it is gone)."""
    inodes = set()
    try:
        fds = list((proc / str(pid) / "fd").iterdir())
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed while we looked
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:["):-1]))
    return inodes


def listening_pid_owns(pid: int, port: int, proc: Path = PROC) -> bool | None:
    """Whether the listener on `port` is process `pid`'s own socket; None without /proc."""
    listeners = port_listener_inodes(port, proc)
    if listeners is None:
        return None
    return bool(listeners & socket_inodes(pid, proc))
