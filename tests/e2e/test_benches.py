"""The benches that start a whole stack, run at their smallest size, so they cannot rot
unseen (both had: the sign-up throttle and the prompt rate answered their set-up and
load 429). What they print is counted by status, never timed."""

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


def test_the_foundation_bench_measures_with_nothing_lost_and_no_error():
    out = run_bench("bench.foundation", "--sockets", "5", "--events", "20", "--seconds",
                    "0.3", "--argon2-rounds", "1", timeout_s=300)
    rows = re.findall(r"^\s+5\s+20\s+\S+\s+\|\s+\S+\s+\S+\s+(\d+)\s+\|", out, re.MULTILINE)
    assert rows == ["0"], out  # the one socket count, no event lost
    errors = re.findall(r"^\s+(?:GET|POST) \S+\s+\d+\s+\S+\s+\S+\s+(\d+)\s+(\d+)$", out,
                        re.MULTILINE)
    assert len(errors) == 2 and all(int(n) > 0 and e == "0" for n, e in errors), out


@pytest.mark.cluster
def test_the_failover_bench_sees_service_come_back_with_only_202_and_503():
    out = run_bench("bench.failover", "--kills", "1", timeout_s=400)
    answers = ast.literal_eval(re.search(r"answers during the run: (\{.*\})", out).group(1))
    assert set(answers) <= {202, 503} and answers.get(202, 0) > 0, answers
    rounds = re.findall(r"^\s+n\d\s+(\S+) s?\s+(\S+)", out, re.MULTILINE)
    assert rounds and all("never" not in r for r in rounds), out
