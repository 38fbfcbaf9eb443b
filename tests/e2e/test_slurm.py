"""Issue 4 acceptance, against the real one-node cluster from slurm/local-cluster.sh.

The cluster runs with MaxArraySize=5 (tests/run.sh and the fixture start it so), so
every sweep of more than 5 tasks here is split into several arrays. If the cluster
cannot start, these tests fail: they never skip.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.launch.slurm import max_array_size, queue_states
from pipeline.launch.status import task_table
from pipeline.store.folder import submitted_tasks
from tests.conftest import REPO, make_config, run_cli, run_sweep

pytestmark = [pytest.mark.slurm, pytest.mark.e2e]

TEST_MAX_ARRAY_SIZE = 5
FAST = ("experiment=linear_synthetic", "sweep=bootstrap", "train.epochs=200", "launcher.timeout_min=10")


@pytest.fixture(scope="session", autouse=True)
def slurm_cluster():
    env = {**os.environ, "SLURM_LOCAL_MAX_ARRAY_SIZE": str(TEST_MAX_ARRAY_SIZE)}
    proc = subprocess.run(
        ["bash", str(REPO / "slurm" / "local-cluster.sh"), "start"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        pytest.fail(f"the local SLURM cluster did not start:\n{proc.stdout}\n{proc.stderr}")
    os.environ.setdefault("SLURM_CONF", "/tmp/pipeline-slurm/slurm.conf")
    assert max_array_size() == TEST_MAX_ARRAY_SIZE


def wait_until(predicate, timeout=120, what="condition"):
    """Poll with back-off (0.05 s, doubling to 1 s) until `predicate` is truthy."""
    deadline, every = time.monotonic() + timeout, 0.05
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
        every = min(1.0, every * 2)
    raise AssertionError(f"timed out waiting for {what}")


def submit(out_dir: Path, *overrides: str) -> None:
    report, _ = run_sweep_nowait(out_dir, *overrides)
    assert report.job_ids


def run_sweep_nowait(out_dir: Path, *overrides: str):
    from pipeline.launch.prepare import prepare
    from pipeline.launch.submit import launch

    cfg = make_config(out_dir, *overrides, "launcher=slurm", "launcher.wait=false")
    return launch(prepare(cfg)), cfg


def queue_empty(out_dir: Path) -> bool:
    return not queue_states(t["job_id"] for t in submitted_tasks(out_dir))


def running_task(out_dir: Path):
    table = task_table(out_dir)
    running = table[table["state"] == "running"]
    return running.iloc[0].to_dict() if len(running) else None


def runs_per_part(out_dir: Path) -> pd.Series:
    ids = pd.concat(
        [pq.read_table(p, columns=["run_id"]).to_pandas() for p in (out_dir / "parts").glob("part-*.parquet")]
    )
    return ids["run_id"].value_counts()


def test_bootstrap_on_slurm_equals_local_run_for_run(tmp_path):
    args = (*FAST, "sweep.resamples=200", "launcher.runs_per_task=50")
    report, slurm = run_sweep(
        tmp_path / "slurm", *args, "launcher=slurm", "launcher.wait=true", "launcher.progress=false"
    )
    assert report.n_tasks == 5 and len(report.job_ids) == 1
    _, local = run_sweep(tmp_path / "local", *args, "launcher=local")
    assert len(slurm) == 201 and slurm["run_id"].is_unique
    cols = ["run_id", "resample", "b", "w", "final_loss", "grad_norm", "status", "epochs"]
    pd.testing.assert_frame_equal(
        slurm.set_index("run_id")[cols[1:]].sort_index(), local.set_index("run_id")[cols[1:]].sort_index()
    )
    assert slurm["slurm_job_id"].notna().all() and local["slurm_job_id"].isna().all()


def test_more_tasks_than_max_array_size_go_in_several_arrays(out_dir):
    report, est = run_sweep(
        out_dir,
        *FAST,
        "train.epochs=20",
        "sweep.resamples=11",
        "launcher.runs_per_task=1",
        "launcher=slurm",
        "launcher.wait=true",
        "launcher.progress=false",
    )
    assert report.n_tasks == 12 and len(report.job_ids) == 3  # 5 + 5 + 2
    assert len(est) == 12 and (est["status"] != "").all()
    status = run_cli("status", f"out_dir={out_dir}")
    assert status.returncode == 0, status.stderr
    assert "runs: 12 of 12 done" in status.stdout


def test_dry_run_submits_nothing_and_prints_the_arrays(out_dir):
    before = subprocess.run(["squeue", "--noheader"], capture_output=True, text=True).stdout
    proc = run_cli(
        "sweep",
        *FAST,
        "sweep.resamples=11",
        "launcher=slurm",
        "launcher.runs_per_task=1",
        f"out_dir={out_dir}",
        "--dry-run",
    )
    assert proc.returncode == 0, proc.stderr
    assert "--array=0-4%5, --array=0-4%5, --array=0-1%2" in proc.stdout
    assert "#SBATCH --array=0-4%5" in proc.stdout and "#SBATCH --time=10" in proc.stdout
    assert "nothing submitted" in proc.stdout
    assert subprocess.run(["squeue", "--noheader"], capture_output=True, text=True).stdout == before
    assert not (out_dir / "launches.jsonl").exists() and not (out_dir / "parts").exists()
    gpu = run_cli("sweep", *FAST, "launcher=slurm_gpu", "launcher.partition=gpu", f"out_dir={out_dir}", "--dry-run")
    assert gpu.returncode == 0, gpu.stderr
    assert "#SBATCH --gpus-per-node=1" in gpu.stdout and "#SBATCH --partition=gpu" in gpu.stdout


def test_killed_task_leaves_no_partial_part_and_relaunch_completes(out_dir):
    # the reference loop at ~1 s a run keeps each task RUNNING for seconds: the kill
    # below catches one mid-training, not a race with a task that ends in milliseconds
    args = (*FAST, "train.epochs=5000", "train.engine=reference", "sweep.resamples=11", "launcher.runs_per_task=4")
    submit(out_dir, *args)
    victim = wait_until(lambda: running_task(out_dir), what="a running task")
    subprocess.run(["scancel", "--signal=KILL", victim["job"]], check=True)
    wait_until(lambda: queue_empty(out_dir), what="the queue to drain")
    table = task_table(out_dir)
    assert table.set_index("job").loc[victim["job"], "state"] == "lost"
    for part in (out_dir / "parts").glob("*"):
        assert part.name.startswith("part-") or part.name.startswith("."), part
        if part.name.startswith("part-"):
            pq.read_table(part)  # every visible part is complete
    report, est = run_sweep(out_dir, *args, "launcher=slurm", "launcher.wait=true", "launcher.progress=false")
    assert report.n_skipped == 12 - victim["runs"] and report.n_planned == 12
    assert len(est) == 12 and est["run_id"].is_unique
    assert (runs_per_part(out_dir) == 1).all() and len(runs_per_part(out_dir)) == 12


def test_requeued_task_resumes_from_its_progress(out_dir):
    # 1-2 s a run: the six runs left after the requeue outlast SIGKILL's KillWait=3 s (at 5000
    # epochs, 0.7 s a run on a fast CPU, the task could finish before the kill and never resume);
    # the reference engine saves progress after each run (a fast engine, after each batch)
    args = (*FAST, "train.epochs=12000", "sweep.resamples=7", "launcher.runs_per_task=8", "train.engine=reference")
    submit(out_dir, *args)
    (task,) = submitted_tasks(out_dir)
    progress = out_dir / "progress" / f"{task['part']}.parquet"
    wait_until(
        lambda: progress.is_file() and pq.read_metadata(progress).num_rows >= 2, what="two runs saved in progress"
    )
    subprocess.run(["scontrol", "requeue", task["slurm_id"]], check=True)
    wait_until(lambda: queue_empty(out_dir) and not progress.exists(), timeout=180, what="the requeued task to finish")
    logs = "".join(p.read_text() for p in (out_dir / "logs").rglob("*_log.err"))
    assert "resuming task 0:" in logs and "runs already done" in logs
    part = pq.read_table(out_dir / "parts" / f"{task['part']}.parquet").to_pandas()
    assert len(part) == 8 and part["run_id"].is_unique
    restarts = subprocess.run(["scontrol", "show", "job", task["slurm_id"]], capture_output=True, text=True).stdout
    assert "Restarts=1" in restarts


def test_task_that_raises_is_failed_in_status_and_in_slurm(out_dir):
    args = (
        "experiment=linear_synthetic",
        "sweep=single",
        "model._target_=tests.failing.RaisesOnFullData",
        "~model.degree",
        "~model.names",
        "init=null",
        "train.epochs=5",
    )
    submit(out_dir, *args)
    wait_until(lambda: queue_empty(out_dir), what="the failing task to end")
    (task,) = submitted_tasks(out_dir)
    job = subprocess.run(["scontrol", "show", "job", task["slurm_id"]], capture_output=True, text=True).stdout
    assert "JobState=FAILED" in job
    status = run_cli("status", f"out_dir={out_dir}")
    assert status.returncode == 0, status.stderr
    assert "failed" in status.stdout and "boom: a bug that only the full data trigger" in status.stdout
    assert "1 in failed tasks" in status.stdout


def test_a_relaunch_while_tasks_are_pending_submits_none_of_their_runs_twice(out_dir):
    """Issue 22, item 3: launches.jsonl and one squeue call tell which runs are still queued."""
    args = (*FAST, "sweep.resamples=11", "launcher.runs_per_task=4")
    held = "+launcher.additional_parameters.begin=now+3600"  # pending (BeginTime) until cancelled
    first, _ = run_sweep_nowait(out_dir, *args, held)
    (job,) = first.job_ids
    try:
        wait_until(lambda: len(queue_states([job])) == 3, what="three pending array tasks")
        grown = (*FAST, "sweep.resamples=15", "launcher.runs_per_task=4")  # 4 more runs: those are trained
        proc = run_cli(
            "sweep", *grown, "launcher=slurm", "launcher.progress=false", "report=false", f"out_dir={out_dir}"
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"skipped 12 runs of 3 task(s) still queued or running: job {job}_[0-2]" in proc.stdout
        tasks = submitted_tasks(out_dir)
        submitted = [r for t in tasks for r in t["runs"]]
        assert len(submitted) == 16 and len(set(submitted)) == 16  # no run in two tasks
        wait_until(lambda: len(queue_states(t["job_id"] for t in tasks)) == 3, what="the new task to finish")

        forced, _ = run_sweep_nowait(out_dir, *grown, "launcher.force=true")  # resubmits the pending runs
        assert forced.n_queued == 0 and forced.n_tasks == 3 and forced.n_skipped == 4
    finally:
        subprocess.run(["scancel", job], check=False)
    wait_until(lambda: queue_empty(out_dir), what="the forced tasks to finish")
    report, est = run_sweep(out_dir, *grown, "launcher=slurm", "launcher.progress=false")
    assert report.n_tasks == 0 and report.n_skipped == 16 and len(est) == 16
