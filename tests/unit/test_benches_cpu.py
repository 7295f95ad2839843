"""The benches that need no stack, each run at its smallest size in a subprocess, so a
change that breaks one fails here; and a guard that no bench goes untested. What they
print is checked (the figure lines are there), never how fast it was."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH_TESTS = (ROOT / "tests" / "unit" / "test_benches_cpu.py",
               ROOT / "tests" / "e2e" / "test_benches.py")


def run_bench(module: str, *args: str, timeout_s: float, returncode: int = 0) -> str:
    """What `python -m <module> <args>` printed (stdout, then stderr), once it exited with
    `returncode`."""
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout_s, check=False)
    printed = done.stdout + done.stderr
    assert done.returncode == returncode, printed[-6000:]
    return printed


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def test_the_prompt_engine_bench_prints_its_throughput_and_latency():
    out = run_bench("bench.prompt_engine", "--seconds", "0.05", timeout_s=120)
    assert re.search(r"^corpus: 65 prompts, variants=1, \d+ runs$", out, re.MULTILINE), out
    assert re.search(r"^throughput: [\d,]+ prompts/s", out, re.MULTILINE), out
    assert re.search(r"^latency per prompt: p50 \S+ ms, p99 \S+ ms", out, re.MULTILINE), out


@pytest.mark.slow
def test_the_lora_switch_bench_fetches_and_loads_each_users_lora_once():
    out = run_bench("bench.lora_switch", "--users", "2", "--rounds", "2", timeout_s=300)
    assert re.search(r"returning user \(cache\):\s+\S+ ms \(fetches 2, loads 2\)", out), out
    assert re.search(r"^ratio fresh / cached: switch \d+×, whole job \S+×", out, re.MULTILINE), out


@pytest.mark.slow
def test_the_cancel_latency_bench_sees_every_run_cancelled():
    out = run_bench("bench.cancel_latency", "--side", "64", "--steps", "12", "--images", "2",
                    timeout_s=300)
    for path in ("generate", "generate_batch"):
        cancelled = re.findall(rf"^{path} \[.*\], stop .*: returned in \S+ ms, Cancelled\(",
                               out, re.MULTILINE)
        assert len(cancelled) == 3, out  # at a boundary, mid-step, just after a step starts
        assert re.search(rf"^{path} \[.*\], per denoising step: \S+ s$", out, re.MULTILINE), out


@pytest.mark.slow
def test_the_training_loop_bench_prints_both_paces():
    out = run_bench("bench.training_loop", "--steps", "2", "--max-sequence-length", "32",
                    timeout_s=300)
    assert re.search(r"^bare train_step loop:\s+\S+ steps/s", out, re.MULTILINE), out
    assert re.search(r"^run\(\) with no-op callbacks:\s+\S+ steps/s", out, re.MULTILINE), out


@pytest.mark.slow
@pytest.mark.parametrize("module, tiny_run, row", [
    pytest.param("bench.generation_gpu",
                 ("--tiny", "--models", "schnell", "--profiles", "gpu", "--compile", "off",
                  "--size", "64", "--runs", "1"),
                 r"^\s+schnell\s+gpu\s+off\s+\d+\.\d+\s", id="generation_gpu"),
    pytest.param("bench.training_gpu",
                 ("--tiny", "--resolutions", "64", "--modes", "bf16", "--rank", "4",
                  "--steps", "1", "--warmup", "0"),
                 r"^\s+64\s+bf16\s+\d+\.\d+\s", id="training_gpu"),
])
def test_a_gpu_bench_runs_its_tiny_check_and_without_cuda_refuses_the_real_one(
        module, tiny_run, row):
    if cuda_available():
        out = run_bench(module, *tiny_run, timeout_s=300)
    else:
        refusal = run_bench(module, returncode=2, timeout_s=120)
        assert f"{module} needs a CUDA GPU" in refusal, refusal
        out = run_bench(module, *tiny_run, "--device", "cpu", timeout_s=300)
    assert re.search(row, out, re.MULTILINE), out


def bench_names_in(test_file: Path) -> set[str]:
    """The bench modules a test file runs: its string literals that are exactly
    `bench.<name>`."""
    return {node.value.removeprefix("bench.") for node in ast.walk(ast.parse(test_file.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and re.fullmatch(r"bench\.\w+", node.value)}


def bench_modules_imported_by_tests() -> set[str]:
    imported = set()
    for test_file in (ROOT / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(test_file.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bench."):
                imported.add(node.module.removeprefix("bench."))
    return imported


def test_every_bench_is_run_by_a_test_and_every_bench_library_imported_by_one():
    benches = {path.stem: path.read_text() for path in (ROOT / "bench").glob("*.py")
               if path.stem not in ("__init__", "common")}
    runnable = {name for name, text in benches.items() if '__name__ == "__main__"' in text}
    run = set().union(*(bench_names_in(test_file) for test_file in BENCH_TESTS))
    assert runnable - run == set(), "benches no test runs at their smallest size"
    # A module with no main (prompt_corpus: data) is exercised by the tests that import it.
    assert set(benches) - runnable - bench_modules_imported_by_tests() == set()
