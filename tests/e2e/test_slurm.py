"""Issue 4 acceptance, against the real one-node cluster from slurm/local-cluster.sh.

The cluster runs with MaxArraySize=5 (tests/run.sh and the fixture start it so), so
every sweep of more than 5 tasks here is split into several arrays. If the cluster
cannot start, these tests fail: they never skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.launch.slurm import max_array_size, queue_states
from pipeline.launch.status import task_table
from pipeline.store.folder import submitted_tasks
from tests.conftest import REPO, make_config, run_cli, run_sweep
from tests.slurm_cluster import private_cluster_env

pytestmark = [pytest.mark.slurm, pytest.mark.e2e]

TEST_MAX_ARRAY_SIZE = 5
FAST = ("experiment=linear_synthetic", "sweep=bootstrap", "train.epochs=200", "launcher.timeout_min=10")


def cluster_script(command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(REPO / "slurm" / "local-cluster.sh"), command],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="session", autouse=True)
def slurm_cluster():
    """The cluster tests/run.sh started for the tests (`SLURM_LOCAL_STATE` names it), or, when
    pytest runs without it, one of this session's own, stopped at its end: never someone else's."""
    own = "SLURM_LOCAL_STATE" not in os.environ
    env = {**os.environ, "SLURM_LOCAL_MAX_ARRAY_SIZE": str(TEST_MAX_ARRAY_SIZE)}
    if own:  # under /tmp: munged wants every folder above its socket open to all (pytest's are 0700)
        env.update(private_cluster_env(Path(tempfile.mkdtemp(prefix="pipeline-tests-slurm."))))
    proc = cluster_script("start", env)
    if proc.returncode != 0:
        pytest.fail(f"the local SLURM cluster did not start:\n{proc.stdout}\n{proc.stderr}")
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(Path(env["SLURM_LOCAL_STATE"]) / "slurm.conf")
    assert max_array_size() == TEST_MAX_ARRAY_SIZE
    yield
    if own:
        cluster_script("stop", env)
        shutil.rmtree(env["SLURM_LOCAL_STATE"], ignore_errors=True)
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before


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


def held(out_dir: Path, *overrides: str) -> tuple[str, ...]:
    """A sweep of `tests.failing.HeldLine` fits: each task trains two runs, then waits while
    `out_dir.parent / "hold"` exists (created here): the tests act on the waiting task and
    delete the file to let it go on. Events in the folder, not the machine's speed, pace them."""
    hold = out_dir.parent / "hold"
    hold.touch()
    return (
        "experiment=linear_synthetic",
        "sweep=bootstrap",
        "model._target_=tests.failing.HeldLine",
        f"+model.hold={hold}",
        "~model.degree",
        "~model.names",
        "init=null",
        "train.engine=reference",  # progress saved after each run
        "train.epochs=50",
        *overrides,
        *([] if any(o.startswith("launcher.timeout_min=") for o in overrides) else ["launcher.timeout_min=10"]),
    )


def saved_runs(out_dir: Path, part: str) -> int:
    path = out_dir / "progress" / f"{part}.parquet"
    return pq.read_metadata(path).num_rows if path.is_file() else 0


def test_killed_task_leaves_no_partial_part_and_relaunch_completes(out_dir):
    args = held(out_dir, "sweep.resamples=11", "launcher.runs_per_task=4")
    submit(out_dir, *args)
    tasks = {t["slurm_id"]: t for t in submitted_tasks(out_dir)}
    victim = wait_until(
        lambda: next((t for t in tasks.values() if saved_runs(out_dir, t["part"]) == 2), None),
        what="a task to save two runs and wait",
    )
    subprocess.run(["scancel", "--signal=KILL", victim["slurm_id"]], check=True)
    wait_until(lambda: victim["slurm_id"] not in queue_states([victim["job_id"]]), what="the victim to leave")
    assert task_table(out_dir).set_index("job").loc[victim["slurm_id"], "state"] == "lost"
    (out_dir.parent / "hold").unlink()  # the other tasks go on
    wait_until(lambda: queue_empty(out_dir), what="the queue to drain")
    for part in (out_dir / "parts").glob("*"):
        assert part.name.startswith("part-") or part.name.startswith("."), part
        if part.name.startswith("part-"):
            pq.read_table(part)  # every visible part is complete
    saved = saved_runs(out_dir, victim["part"])  # what the killed task had saved: the relaunch keeps it
    assert saved == 2
    report, est = run_sweep(out_dir, *args, "launcher=slurm", "launcher.wait=true", "launcher.progress=false")
    assert report.n_skipped == 12 - len(victim["runs"]) + saved and report.n_planned == 12
    assert len(est) == 12 and est["run_id"].is_unique
    assert (runs_per_part(out_dir) == 1).all() and len(runs_per_part(out_dir)) == 12


def restarts(slurm_id: str) -> int:
    text = subprocess.run(["scontrol", "show", "job", slurm_id], capture_output=True, text=True).stdout
    found = re.search(r"Restarts=(\d+)", text)
    return int(found.group(1)) if found else 0


def task_logs(out_dir: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in (out_dir / "logs").rglob("*_log.err"))


def resumes_after(out_dir: Path, act, *overrides: str) -> str:
    """One task of 8 runs saves two and waits; `act(task)` stops it (the queue then restarts it);
    once restarted it is let go, and it trains only the six runs left. Returns the task's logs."""
    submit(out_dir, *held(out_dir, "sweep.resamples=7", "launcher.runs_per_task=8", *overrides))
    (task,) = submitted_tasks(out_dir)
    wait_until(lambda: saved_runs(out_dir, task["part"]) >= 2, timeout=240, what="two runs saved, the task waiting")
    act(task)
    # the next attempt has started (the stopped one is gone: it cannot finish the runs itself)
    resumed = re.compile(r"resuming task 0: [2-7] of 8 runs already done")
    wait_until(lambda: resumed.search(task_logs(out_dir)), timeout=240, what="the task to resume")
    (out_dir.parent / "hold").unlink()
    wait_until(lambda: queue_empty(out_dir) and (out_dir / "parts" / f"{task['part']}.parquet").is_file(), timeout=240)
    logs = task_logs(out_dir)
    assert restarts(task["slurm_id"]) >= 1 and "Job completed successfully" in logs
    part = pq.read_table(out_dir / "parts" / f"{task['part']}.parquet").to_pandas()
    assert len(part) == 8 and part["run_id"].is_unique
    assert not (out_dir / "progress" / f"{task['part']}.parquet").exists()
    return logs


def test_requeued_task_resumes_from_its_progress(out_dir):
    resumes_after(out_dir, lambda task: subprocess.run(["scontrol", "requeue", task["slurm_id"]], check=True))


def test_timed_out_task_is_checkpointed_by_submitit_and_resumes(out_dir):
    """timeout_min=1: SLURM sends USR2 `signal_delay_s` before the limit, submitit checkpoints
    the task (TaskRunner.checkpoint) and requeues it; the new attempt resumes from progress/."""
    # USR2 30 s before the limit (SLURM may send it up to a minute early: never before submitit's handler,
    # which the task installs first); the time limit acts, not the test
    logs = resumes_after(out_dir, lambda task: None, "launcher.timeout_min=1", "launcher.signal_delay_s=30")
    assert "Caught signal SIGUSR2" in logs and "Job has timed out" in logs


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
