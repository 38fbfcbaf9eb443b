"""Faults of real local sweeps lose nothing and leave nothing running.

Each test starts `pipeline-sweep launcher=local` with `subprocess.Popen`, as a user's
terminal would, mid-training (the reference engine saves progress after every run):
- SIGINT (Ctrl-C) or SIGKILL of the launching process: within seconds no process of the
  sweep is alive (found by scanning /proc for command lines naming the sweep folder);
  SIGINT says what was saved and how to resume and exits 130, with no traceback;
- a second launch into the folder exits 2 naming the first; with --wait-lock it waits;
- a relaunch then finishes every planned run exactly once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline import store
from pipeline.store import LOCK
from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.e2e

ARGS = (
    "experiment=linear_synthetic",
    "sweep=bootstrap",
    "sweep.resamples=5",
    "launcher=local",
    "launcher.runs_per_task=2",
    "launcher.max_parallel=2",
    "launcher.progress=false",
    "train.engine=reference",
    "train.epochs=4000",
    "report=false",
    "intervals.plots=false",
)
N_PLANNED = 6


def start_sweep(out_dir: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    """The CLI in the background; its stdout and stderr go to one file (a pipe could fill up)."""
    log = out_dir.parent / f"launch-{time.monotonic_ns()}.txt"
    code = "from pipeline.cli import sweep_main; sweep_main()"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *ARGS, *extra, f"out_dir={out_dir}"],
            cwd=REPO,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    return proc, log


def wait_until(condition: Callable[[], bool], deadline_s: float, what: str) -> None:
    """Back-off polling with a deadline."""
    end, pause = time.monotonic() + deadline_s, 0.05
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 1.5, 1.0)


def sweep_processes(out_dir: Path) -> list[int]:
    """Live processes (not zombies) whose command line names the sweep folder."""
    needle, found = str(out_dir).encode(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (
                needle in (entry / "cmdline").read_bytes()
                and (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
            ):
                found.append(int(entry.name))
        except OSError:
            continue  # ended meanwhile
    return found


def task_pids(out_dir: Path) -> list[int]:
    return [p for p in sweep_processes(out_dir) if b"submitit.core._submit" in Path(f"/proc/{p}/cmdline").read_bytes()]


def runs_saved(out_dir: Path) -> int:
    return sum(store.progress_count(out_dir, p.stem) for p in store.progress_files(out_dir))


def mid_training(out_dir: Path) -> bool:
    return runs_saved(out_dir) >= 1 and len(task_pids(out_dir)) >= 1


def assert_every_run_once(out_dir: Path) -> None:
    raw = [i for p in store.part_files(out_dir) for i in pq.read_table(p, columns=["run_id"])["run_id"].to_pylist()]
    planned = set(pd.read_parquet(out_dir / "plan.parquet")["run_id"])
    est = pd.read_parquet(out_dir / "estimates.parquet")
    assert len(planned) == N_PLANNED == len(set(est["run_id"])) == len(est)
    assert sorted(raw) == sorted(planned)  # no run in two parts: none trained twice


def relaunch_finishes(out_dir: Path, saved: int) -> None:
    done = run_cli("sweep", *ARGS, f"out_dir={out_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"skipped {saved} that already have results" in done.stdout + done.stderr
    assert_every_run_once(out_dir)
    assert not (out_dir / "logs" / "%j").exists()
    assert sweep_processes(out_dir) == []


def test_ctrl_c_stops_the_tasks_says_what_was_saved_and_the_relaunch_finishes(tmp_path):
    out_dir = tmp_path / "sweep"
    proc, log = start_sweep(out_dir)
    wait_until(lambda: mid_training(out_dir), 300, "a task to save a run")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    text = log.read_text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    said = re.search(
        r"interrupted: the running tasks were stopped; (\d+) of 6 runs are saved in (\S+) "
        r"\(parts/, progress/\)\. Relaunch the same command",
        text,
    )
    assert said and said.group(2) == str(out_dir), text[-2000:]
    wait_until(lambda: sweep_processes(out_dir) == [], 5, "no process of the sweep to be alive")
    saved = int(said.group(1))
    assert saved == runs_saved(out_dir) + len(store.finished_run_ids(out_dir)) >= 1
    relaunch_finishes(out_dir, saved)


def test_sigkill_of_the_launch_stops_its_tasks_and_the_relaunch_finishes(tmp_path):
    out_dir = tmp_path / "sweep"
    proc, _ = start_sweep(out_dir)
    wait_until(lambda: mid_training(out_dir), 300, "a task to save a run")
    tasks = task_pids(out_dir)
    proc.kill()
    proc.wait(timeout=10)
    wait_until(lambda: sweep_processes(out_dir) == [], 10, f"the orphaned tasks {tasks} to stop")
    saved = runs_saved(out_dir) + len(store.finished_run_ids(out_dir))
    relaunch_finishes(out_dir, saved)


def test_a_second_launch_names_the_holder_and_with_wait_lock_trains_nothing_new(tmp_path):
    out_dir = tmp_path / "sweep"
    first, _ = start_sweep(out_dir)

    def held_by_first() -> bool:
        try:
            return json.loads((out_dir / LOCK).read_text() or "{}").get("pid") == first.pid
        except (OSError, ValueError):
            return False

    wait_until(held_by_first, 300, "the first launch to hold the folder")
    second = run_cli("sweep", *ARGS, f"out_dir={out_dir}")
    assert second.returncode == 2, second.stderr[-2000:]
    assert f"is in use by another launch (pid {first.pid} on host " in second.stderr
    assert "Traceback" not in second.stderr and "--wait-lock" in second.stderr
    third, third_log = start_sweep(out_dir, "--wait-lock")
    wait_until(
        lambda: "waiting for the sweep folder's lock" in third_log.read_text() or third.poll() is not None,
        120,
        "the third launch to wait",
    )
    assert third.poll() is None, third_log.read_text()[-2000:]  # waiting while the first trains
    assert first.wait(timeout=600) == 0
    assert third.wait(timeout=300) == 0
    assert "skipped 6 that already have results; 0 to train" in third_log.read_text()
    assert_every_run_once(out_dir)
