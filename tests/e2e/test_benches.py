"""The benches that start a whole stack, run at their smallest size, so they cannot rot
unseen (two had: the sign-up throttle and the prompt rate answered their set-up and
load 429). Each bench counts its answers by status and prints no figure over an unexpected
one; the tests check those counts and that the figure lines are there, never a timing.
(The benches without a stack: tests/unit/test_benches_cpu.py, with the guard that every
bench is run by one of the two files.)"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def run_bench(*args: str, timeout_s: float) -> str:
    done = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout_s, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def answers(out: str) -> dict[str, dict]:
    """What a bench counted (`answers <what>: {status: count}` lines), by what."""
    return {what: ast.literal_eval(counts)
            for what, counts in re.findall(r"^answers (.+): (\{.*\})$", out, re.MULTILINE)}


def test_the_foundation_bench_measures_with_nothing_lost_and_no_error():
    out = run_bench("bench.foundation", "--sockets", "5", "--events", "20", "--seconds",
                    "0.3", "--argon2-rounds", "1", timeout_s=300)
    counted = answers(out)
    assert counted.pop("POST /api/auth/register (set-up)") == {201: 10}, out
    assert counted.pop("20 events to 5 WebSockets") == {"delivered": 20}, out
    assert counted.pop("20 events to the plain subscriber") == {"delivered": 20}, out
    for route in ("GET /api/me", "POST /api/auth/refresh"):
        statuses = counted.pop(route)
        assert set(statuses) == {200} and statuses[200] > 0, out
        assert re.search(rf"^\s+{re.escape(route)}\s+\d+\s+\S+ms\s+\S+ms\s+\d+$", out,
                         re.MULTILINE), out
    assert counted == {}, out
    assert re.search(r"^\s+5\s+20\s+\S+s \|\s+\S+ms\s+\S+ms \|", out, re.MULTILINE), out
    assert re.search(r"^\s+hash \S+ ms, verify \S+ ms", out, re.MULTILINE), out


def test_the_prompt_api_bench_measures_answers_that_are_all_200():
    out = run_bench("bench.prompt_api", "--requests", "20", "--clients", "1,2", timeout_s=300)
    counted = answers(out)
    assert counted.pop("POST /api/auth/register (set-up)") == {201: 2}, out
    assert counted == {f"POST /api/prompt/optimize?wait=true, {n} clients": {200: 20}
                       for n in (1, 2)}, out
    rows = re.findall(r"^\s+(\d+)\s+20\s+\d+\s+\S+ms\s+\S+ms$", out, re.MULTILINE)
    assert rows == ["1", "2"], out


def test_the_generation_service_bench_measures_jobs_that_all_generated():
    out = run_bench("bench.generation_service", "--jobs", "1", "--burst", "4", timeout_s=400)
    counted = answers(out)
    assert counted["POST /api/generate/image, one at a time"] == {202: 4}, out  # 3 warm up
    assert counted["jobs one at a time, ended"] == {"generation.image_generated.v1": 4}, out
    for workers in ("one worker", "two workers"):
        assert counted[f"POST /api/generate/image, a burst of 4, {workers}"] == {202: 4}, out
        assert counted[f"a burst of 4, {workers}, jobs ended"] == {
            "generation.image_generated.v1": 4}, out
    for line in (r"REST -> WS completed:\s+p50", r"service overhead:\s+p50",
                 r"one worker:\s+\S+ jobs/s", r"two workers:\s+\S+ jobs/s"):
        assert re.search(line, out), out


def test_the_training_service_bench_compares_the_service_with_the_bare_loop():
    out = run_bench("bench.training_service", "--steps", "60", "--bare-steps", "2",
                    timeout_s=400)
    assert answers(out) == {"POST /api/auth/register (set-up)": {201: 1},
                            "POST /api/training/upload": {201: 1},
                            "POST /api/training/start": {202: 1},
                            "training outcome": {"training.completed.v1": 1}}, out
    # Its last progress event is the last step: the training ran to its end.
    assert re.search(r"through trainer_service:\s+\S+ steps/s  \(steps \d+\.\.60 from", out), out
    assert re.search(r"bare train_step loop:\s+\S+ steps/s", out), out
    assert re.search(r"overhead [+-]\S+%", out), out


@pytest.mark.cluster
def test_the_failover_bench_sees_service_come_back_with_only_202_and_503():
    out = run_bench("bench.failover", "--kills", "1", timeout_s=400)
    statuses = answers(out)["POST /api/prompt/optimize during the run"]
    assert set(statuses) <= {202, 503} and statuses.get(202, 0) > 0, statuses
    rounds = re.findall(r"^\s+n\d\s+(\S+) s?\s+(\S+)", out, re.MULTILINE)
    assert rounds and all("never" not in r for r in rounds), out


def test_the_notifier_bench_counts_one_delivery_per_event_and_fast_target():
    out = run_bench("bench.notifier_fanout", "--events", "20", "--targets", "3", "--rate",
                    "20", "--slow-s", "1", timeout_s=300)
    counted = answers(out)
    assert counted.pop("POST /api/auth/register (set-up)") == {201: 1}, out
    assert counted.pop("webhooks replaced (burst (all at once): DELETE 204, POST 201)") == {
        201: 3}, out
    for run in ("paced, all fast", "paced, one slow"):
        assert counted.pop(f"webhooks replaced ({run}: DELETE 204, POST 201)") == {
            201: 3, 204: 3}, out
    assert counted.pop("20 events to 3 fast targets (burst (all at once))") == {
        "delivered": 60}, out
    assert counted.pop("20 events to 3 fast targets (paced, all fast)") == {"delivered": 60}
    assert counted.pop("20 events to 2 fast targets (paced, one slow)") == {"delivered": 40}
    assert counted == {}, out
    rows = re.findall(r"^\s+(burst|paced, all fast|paced, one slow)\s.*\s(\d+)\s+\S+ms\s+\S+ms",
                      out, re.MULTILINE)
    assert [run for run, _ in rows] == ["burst", "paced, all fast", "paced, one slow"], out
    assert re.search(r"the others' p99 with one target answering after 1 s: \S+x", out), out
