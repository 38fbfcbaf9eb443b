"""benchmarks/gpu_check.sh, the script run once on a GPU machine (issue 25), run here as its
CPU dry run: the same steps (tests by marker on a chosen device, both benchmarks, the batch
invariance check) at small sizes, every figure recorded with its device."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def gpu_check(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
    env.pop("OUT", None)
    return subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_the_cpu_dry_run_runs_every_step_and_records_each_figure_with_its_device(tmp_path):
    done = gpu_check("--cpu-dry-run", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "every step passed" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures.jsonl", "gpu_check.log", "summary.txt"]
    assert "every step passed" in (tmp_path / "gpu_check.log").read_text()
    records = [json.loads(line) for line in (tmp_path / "figures.jsonl").read_text().splitlines()]
    assert {r["device"] for r in records} == {"cpu"} and all(r["device_name"] for r in records)

    tests = {r["stage"].split(":")[0]: r for r in records if r["figure"] == "pytest"}
    assert set(tests) == {"CUDA tests", "engine tests on cpu"}
    assert all(r["rc"] == "0" for r in tests.values())
    assert "skipped" in tests["CUDA tests"]["result"]  # no CUDA here: the gpu tests were found and skipped
    assert " passed" in tests["engine tests on cpu"]["result"]  # found by marker and name, on the device asked

    timed = {(r["figure"], r["stage"], r["dtype"]) for r in records if "ms_per_run" in r}
    for dtype in ("float32", "float64"):
        for stage in ("textbook loop", "gram engine", "batched engine"):
            assert ("tdm_quadratic", stage, dtype) in timed
        for stage in ("textbook loop", "batched engine"):
            assert ("toy MLP, Adam", stage, dtype) in timed
    assert all(r["ms_per_run"] > 0 for r in records if "ms_per_run" in r)

    invariance = {(r["stage"], r["dtype"]): r for r in records if r["figure"] == "batch invariance"}
    assert len(invariance) == 6 and all(r["shared_runs"] == 4 for r in invariance.values())
    # the Gram engine's promise on the CPU: the same bits in any batch
    assert invariance[("tdm_quadratic, gram", "float64")]["identical"] is True
    assert invariance[("tdm_quadratic, gram", "float32")]["identical"] is True
    summary = (tmp_path / "summary.txt").read_text()
    assert "batch invariance" in summary and "toy MLP, Adam" in summary


def test_a_bad_argument_or_no_output_folder_is_refused_before_anything_runs(tmp_path):
    bad = gpu_check("--cpu-dry-run", "--out", str(tmp_path / "a"), "--only", "bench", "speed")
    assert bad.returncode == 2 and "unknown step 'speed'" in bad.stderr
    assert gpu_check("--cpu-dry-run").returncode == 2
    assert gpu_check("--gpu").returncode == 2
    assert not (tmp_path / "a").exists()
