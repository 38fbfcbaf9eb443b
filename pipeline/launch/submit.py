"""Turn a prepared sweep into tasks and hand them to submitit.

Every launcher goes through submitit and runs the same `TaskRunner` (pipeline/train.py): `debug` in this
process, `local` in subprocesses (at most `launcher.max_parallel` at once), `slurm` as
job arrays (split so no array exceeds the cluster's MaxArraySize). A task trains its
chunk of runs, saving finished runs as it goes, and writes one Parquet part; what
already has a part (or was saved by a task that ended early) is skipped on relaunch.

Faults lose nothing: one launch at a time holds the folder (`pipeline/lock.py`); Ctrl-C
or SIGTERM stops the local tasks and says what was saved; a local task whose launching
process was killed stops by itself; a full disk is one message naming the folder.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf
from tqdm import tqdm

from pipeline import store
from pipeline.core.errors import FolderError, Interrupted
from pipeline.core.runs import Task
from pipeline.launch.backends import array_limit, dry_run_text, make_executor, submit_arrays
from pipeline.launch.chunking import Work, runs_per_task
from pipeline.launch.local import (
    controller_ignores_sigint,
    remove_placeholder_folder,
    sigterm_as_interrupt,
    stop_jobs,
    this_process,
)
from pipeline.launch.lock import folder_lock
from pipeline.launch.prepare import PreparedSweep
from pipeline.launch.slurm import QueueError
from pipeline.launch.status import StillQueued, job_list, still_queued, wait_for_sweep
from pipeline.launch.task import TaskRunner
from pipeline.sweep.ids import ID_VERSION
from pipeline.sweep.migrate import migrate_run_ids
from pipeline.sweep.plan import chunk
from pipeline.train.engines import FAST_ENGINES, choose_engine
from pipeline.train.problem import build_problem

log = logging.getLogger(__name__)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def task_threads(launcher: dict[str, Any]) -> Optional[int]:
    """torch threads per task: the cores a SLURM task owns, one locally, untouched in-process."""
    if launcher["cluster"] == "debug":
        return None
    return max(1, launcher["cpus_per_task"]) if launcher["cluster"] == "slurm" else 1


@dataclass
class LaunchReport:
    out_dir: Path
    n_planned: int
    n_skipped: int  # runs that already have results
    n_tasks: int
    job_ids: list[str] = field(default_factory=list)
    failed_tasks: list[str] = field(default_factory=list)
    waited: bool = True
    queued: StillQueued = field(default_factory=StillQueued)  # runs left to tasks still in the queue
    replaced: Optional[Path] = None  # where `--new-sweep` moved the folder's earlier sweep

    @property
    def n_queued(self) -> int:
        return len(self.queued.run_ids)


def runs_to_train(prepared: PreparedSweep, done: set[str]) -> tuple[list, StillQueued]:
    """The planned runs without a result, less those of tasks still queued or running (one
    `squeue` call), unless `--force` (`launcher.force`) resubmits them. A queue that cannot be
    asked is a FolderError: a relaunch never trains a run twice on a guess."""
    todo = [r for r in prepared.runs if r.run_id not in done]
    if prepared.launcher.get("force"):
        return todo, StillQueued()
    try:
        queued = still_queued(prepared.out_dir, {r.run_id for r in todo})
    except QueueError as err:
        raise FolderError(
            f"{prepared.out_dir}: tasks submitted to SLURM earlier hold runs of this plan, and whether they are "
            f"still queued cannot be told: {err}. Retry, or relaunch with --force to train those runs anyway"
        ) from err
    if queued.run_ids:
        todo = [r for r in todo if r.run_id not in queued.run_ids]
    return todo, queued


def new_sweep_in(out_dir: Path) -> Optional[Path]:
    """`--new-sweep`: move the sweep the folder holds aside (never deleted), unless tasks of it are
    still queued or running: they would write into the new sweep's folder."""
    submitted = {r for t in store.submitted_tasks(out_dir) for r in t["runs"]}
    pending = submitted - store.finished_run_ids(out_dir) if submitted else set()
    try:
        active = still_queued(out_dir, pending) if pending else StillQueued()
    except QueueError as err:
        raise FolderError(f"{out_dir}: --new-sweep cannot tell whether the old sweep's tasks still run: {err}") from err
    if active.tasks:
        raise FolderError(
            f"{out_dir}: --new-sweep refused: {len(active.tasks)} task(s) of the sweep it holds are still queued or "
            f"running (job {job_list(t['slurm_id'] for t in active.tasks)}) and would write into the new one; "
            "scancel them first, or give another out_dir"
        )
    return store.set_sweep_aside(out_dir)


def write_sweep_files(prepared: PreparedSweep) -> None:
    out_dir = prepared.out_dir
    store.write_meta(prepared.meta, out_dir, id_version=ID_VERSION)
    store.write_frame(store.plan_frame(prepared.runs), out_dir / store.PLAN)
    if prepared.design is not None:
        store.write_design(*prepared.design, prepared.meta.param_names, out_dir)
    with store.atomic_path(out_dir / store.CONFIG) as tmp:
        tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(prepared.cfg)))


def _failure(job: Any, task: Task) -> str:
    try:
        job.result()
        return ""
    except Exception as err:  # noqa: BLE001 - reported with the task, never swallowed
        stderr = Path(job.paths.stderr)
        tail = stderr.read_text()[-2000:] if stderr.exists() else ""
        return f"task {task.index} ({len(task.runs)} runs, log {stderr}): {err}\n{tail}"


def _outcome(job: Any, task: Task) -> Optional[str]:
    """None while the job runs; "" when it succeeded; else what went wrong. A debug job runs
    inside `done()` and raises there: that is its failure (asking `result()` would rerun it)."""
    try:
        if not job.done():
            return None
    except Exception as err:  # noqa: BLE001 - reported with the task, never swallowed
        return f"task {task.index} ({len(task.runs)} runs): {err}"
    return _failure(job, task)


def run_tasks_here(executor: Any, runner: TaskRunner, tasks: list[Task], launcher: dict[str, Any]) -> list[str]:
    """debug / local: run tasks, at most `max_parallel` at once, with a progress bar of runs.

    The bar counts the runs of finished tasks plus those running tasks have saved. On
    Ctrl-C (or SIGTERM) the running tasks are stopped before KeyboardInterrupt goes on.
    """
    limit = 1 if launcher["cluster"] == "debug" else (launcher["max_parallel"] or cpu_count())
    pending, running, failures, finished = list(tasks), {}, [], 0
    out_dir, poll = Path(runner.out_dir), 0.05  # seconds; grows to 0.5 so that a short task is not waited on
    try:
        with (
            sigterm_as_interrupt(),
            tqdm(
                total=sum(len(t.runs) for t in tasks), unit="run", desc="runs", disable=not launcher["progress"]
            ) as bar,
        ):
            while pending or running:
                while pending and len(running) < limit:
                    task = pending.pop(0)
                    with controller_ignores_sigint():
                        running[executor.submit(runner, task)] = task
                for job in list(running):
                    problem = _outcome(job, running[job])
                    if problem is None:
                        continue
                    task = running.pop(job)
                    if problem:
                        failures.append(problem)
                        log.error("%s", problem)
                    finished += len(task.runs)
                bar.n = finished + sum(store.progress_count(out_dir, t.part_name) for t in running.values())
                bar.refresh()
                if running:
                    time.sleep(poll)
                    poll = min(0.5, poll * 1.5)
    except KeyboardInterrupt:
        stop_jobs(list(running))
        raise
    finally:
        remove_placeholder_folder(out_dir / "logs" / "%j")
    return failures


def interrupted_text(out_dir: Path, runs: list[Any]) -> str:
    planned = {r.run_id for r in runs}
    saved = len(planned & store.finished_run_ids(out_dir))
    saved += sum(store.progress_count(out_dir, p.stem) for p in store.progress_files(out_dir))
    return (
        f"interrupted: the running tasks were stopped; {saved} of {len(planned)} runs are saved in "
        f"{out_dir} (parts/, progress/). Relaunch the same command (out_dir={out_dir}) to train only "
        f"the {len(planned) - saved} runs left"
    )


def plan_tasks(prepared: PreparedSweep, todo: list) -> tuple[list[Task], str]:
    """The tasks of the runs left to train, sized by `chunking.runs_per_task`, and how."""
    launcher, train = prepared.launcher, prepared.train
    engine = choose_engine(prepared.parts, train.engine).name
    engine_bytes = 0
    if engine in FAST_ENGINES and todo:  # the engine's own estimate, from the problem a task builds
        problem = build_problem(prepared.parts, prepared.dataset, device="cpu", dtype=train.dtype)
        engine_bytes = FAST_ENGINES[engine][1](problem)
    work = Work(len(todo), engine, train.epochs, train.log_every, engine_bytes)
    slots = 1 if launcher["cluster"] == "debug" else (launcher["max_parallel"] or cpu_count())
    auto_slurm = launcher["cluster"] == "slurm" and launcher["runs_per_task"] == "auto"
    size, how = runs_per_task(work, launcher, slots, array_limit(launcher) if auto_slurm else 0)
    return chunk(todo, size), f"{size} runs per task, {how}"


def launch(prepared: PreparedSweep) -> LaunchReport:
    """Skip runs that already have results; run or submit the rest of a prepared sweep.

    Everything that writes happens holding the folder's lock (`launcher.wait_lock`: wait for
    it); a dry run only reads. Ctrl-C / SIGTERM of a local sweep raises `Interrupted`.
    """
    launcher, out_dir = prepared.launcher, prepared.out_dir
    executor = make_executor(launcher, out_dir / "logs")
    if launcher["dry_run"]:
        fresh = launcher.get("new_sweep") or not out_dir.exists()
        done = set() if fresh else store.finished_run_ids(out_dir)
        todo, queued = runs_to_train(prepared, done) if not fresh else (list(prepared.runs), StillQueued())
        tasks, sizing = plan_tasks(prepared, todo)
        skipped = len(prepared.runs) - len(todo) - len(queued.run_ids)
        if queued.run_ids:
            print(queued.text())
        print(dry_run_text(executor, tasks, launcher, len(prepared.runs), skipped, sizing))
        return LaunchReport(out_dir, len(prepared.runs), skipped, len(tasks), waited=False, queued=queued)
    out_dir.mkdir(parents=True, exist_ok=True)
    with folder_lock(out_dir, wait=bool(launcher.get("wait_lock", False))):
        return _launch_holding_lock(prepared, executor)


def _launch_holding_lock(prepared: PreparedSweep, executor: Any) -> LaunchReport:
    launcher, out_dir, runs = prepared.launcher, prepared.out_dir, prepared.runs
    replaced = new_sweep_in(out_dir) if launcher.get("new_sweep") else None
    adopted = store.adopt_progress(out_dir)
    if adopted:
        log.info("kept %d finished run(s) that earlier tasks had saved in progress/", adopted)
    migrate_run_ids(out_dir)
    done = store.finished_run_ids(out_dir)
    todo, queued = runs_to_train(prepared, done)
    tasks, sizing = plan_tasks(prepared, todo)
    skipped = len(runs) - len(todo) - len(queued.run_ids)
    report = LaunchReport(out_dir, len(runs), skipped, len(tasks), queued=queued, replaced=replaced)
    write_sweep_files(prepared)
    log.info(
        "%d runs planned; skipped %d that already have results;%s %d to train in %d task(s) (%s)",
        len(runs),
        report.n_skipped,
        f" {queued.text()};" if queued.run_ids else "",
        len(todo),
        len(tasks),
        sizing,
    )
    if not tasks:
        return report
    parent = this_process() if launcher["cluster"] == "local" else None
    runner = TaskRunner(prepared.task_spec(task_threads(launcher)), str(out_dir), parent)
    if launcher["cluster"] == "slurm":
        report.job_ids = submit_arrays(executor, runner, tasks, launcher, out_dir)
        report.waited = launcher["wait"]
        if launcher["wait"]:
            report.failed_tasks = wait_for_sweep(out_dir, progress=launcher["progress"])
        return report
    try:
        report.failed_tasks = run_tasks_here(executor, runner, tasks, launcher)
    except KeyboardInterrupt:
        raise Interrupted(interrupted_text(out_dir, runs)) from None
    return report
