"""Faults of real local sweeps lose nothing and leave nothing running.

Each test starts `pipeline-sweep launcher=local` with `subprocess.Popen`, as a user's
terminal would, mid-training (the reference engine saves progress after every run; `held` keeps the tasks
waiting after their first run until the test lets them go):
- SIGINT (Ctrl-C), SIGTERM or SIGKILL of the launching process: within seconds no process of
  the sweep is alive (found by scanning /proc for command lines naming the sweep folder);
  SIGINT and SIGTERM say what was saved and how to resume and exit 130, with no traceback;
- while a process holds the folder's lock (as a launch does) a second launch exits 2 naming
  it, one with --wait-lock waits until it lets go, and pipeline-aggregate and pipeline-status
  read the folder all the same;
- a relaunch then finishes every planned run exactly once.
The tests wait on events (a run saved in progress/, a line in a log, a file deleted by the
test), never on how fast the machine trains.
"""

from __future__ import annotations

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
    "train.epochs=300",  # short: the tests that stop a sweep hold its tasks (`held`), not race them
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
            # as from a terminal: a process started in the background of a shell (a CI job's)
            # inherits SIGINT ignored, and Python then never turns Ctrl-C into KeyboardInterrupt
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    return proc, log


def held(out_dir: Path) -> tuple[str, ...]:
    """Overrides that fit `tests.failing.HeldLine`: each task saves its first run, then waits
    while `out_dir.parent / "hold"` exists (created here), so the test acts mid-training
    whatever the machine's speed; deleting the file lets the tasks (and a relaunch) go on."""
    hold = out_dir.parent / "hold"
    hold.touch()
    return (
        "model._target_=tests.failing.HeldLine",
        f"+model.hold={hold}",
        "+model.after=1",
        "~model.degree",
        "~model.names",
        "init=null",
    )


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


def relaunch_finishes(out_dir: Path, saved: int, *extra: str) -> None:
    (out_dir.parent / "hold").unlink(missing_ok=True)
    done = run_cli("sweep", *ARGS, *extra, f"out_dir={out_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"skipped {saved} that already have results" in done.stdout + done.stderr
    assert_every_run_once(out_dir)
    assert not (out_dir / "logs" / "%j").exists()
    assert sweep_processes(out_dir) == []


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_stops_the_tasks_says_what_was_saved_and_the_relaunch_finishes(tmp_path, stop):
    out_dir = tmp_path / "sweep"
    model = held(out_dir)
    proc, log = start_sweep(out_dir, *model)
    wait_until(lambda: mid_training(out_dir), 300, "a task to save a run")
    proc.send_signal(stop)
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
    relaunch_finishes(out_dir, saved, *model)


def test_sigkill_of_the_launch_stops_its_tasks_and_the_relaunch_finishes(tmp_path):
    out_dir = tmp_path / "sweep"
    model = held(out_dir)
    proc, _ = start_sweep(out_dir, *model)
    wait_until(lambda: mid_training(out_dir), 300, "a task to save a run")
    tasks = task_pids(out_dir)
    proc.kill()
    proc.wait(timeout=10)
    wait_until(lambda: sweep_processes(out_dir) == [], 10, f"the orphaned tasks {tasks} to stop")
    saved = runs_saved(out_dir) + len(store.finished_run_ids(out_dir))
    relaunch_finishes(out_dir, saved, *model)


def hold_lock(out_dir: Path) -> tuple[subprocess.Popen, Path]:
    """A process that holds the folder's lock (as a launch does) until the returned file is deleted."""
    release = out_dir.parent / "release"
    release.touch()
    code = (
        "import sys, time; from pathlib import Path; from pipeline.launch.lock import folder_lock\n"
        "with folder_lock(Path(sys.argv[1])):\n"
        "    print('HELD', flush=True)\n"
        "    while Path(sys.argv[2]).exists(): time.sleep(0.05)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(out_dir), str(release)], cwd=REPO, stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"HELD"
    proc.stdout.close()  # nothing more to read; an open pipe would outlive the test
    return proc, release


def test_a_second_launch_names_the_holder_and_with_wait_lock_trains_nothing_new(tmp_path):
    out_dir = tmp_path / "sweep"
    first = run_cli("sweep", *ARGS, f"out_dir={out_dir}")
    assert first.returncode == 0, first.stderr[-2000:]
    holder, release = hold_lock(out_dir)  # a launch holding the folder, until the test lets go
    second = run_cli("sweep", *ARGS, f"out_dir={out_dir}")
    assert second.returncode == 2, second.stderr[-2000:]
    assert f"is in use by another launch (pid {holder.pid} on host " in second.stderr
    assert "Traceback" not in second.stderr and "--wait-lock" in second.stderr
    third, third_log = start_sweep(out_dir, "--wait-lock")
    wait_until(
        lambda: "waiting for the sweep folder's lock" in third_log.read_text() or third.poll() is not None,
        120,
        "the third launch to wait",
    )
    assert third.poll() is None, third_log.read_text()[-2000:]  # it waits for the holder
    release.unlink()
    assert holder.wait(timeout=60) == 0
    assert third.wait(timeout=300) == 0
    assert "skipped 6 that already have results; 0 to train" in third_log.read_text()
    assert_every_run_once(out_dir)


def test_aggregate_and_status_read_the_folder_while_a_launch_holds_it(tmp_path):
    out_dir = tmp_path / "sweep"
    assert run_cli("sweep", *ARGS, f"out_dir={out_dir}").returncode == 0
    holder, release = hold_lock(out_dir)
    try:
        aggregate = run_cli("aggregate", f"out_dir={out_dir}")
        status = run_cli("status", f"out_dir={out_dir}")
    finally:
        release.unlink()
        holder.wait(timeout=60)
    assert aggregate.returncode == 0, aggregate.stderr[-2000:]
    assert "6 of 6 runs have results" in aggregate.stdout
    assert status.returncode == 0 and "6 of 6" in status.stdout, status.stderr[-2000:]
