"""Turn a prepared sweep into tasks and hand them to submitit.

Every backend (`launch.backends`: `debug` in this process, `local` in subprocesses, `slurm`
as job arrays within the cluster's MaxArraySize) goes through submitit and runs the same
`TaskRunner` (`launch.task`). A task trains its
chunk of runs, saving finished runs as it goes, and writes one Parquet part; what
already has a part (or was saved by a task that ended early) is skipped on relaunch.

Faults lose nothing: one launch at a time holds the folder (`launch.lock`); Ctrl-C
or SIGTERM stops the local tasks and says what was saved; a local task whose launching
process was killed stops by itself; a full disk is one message naming the folder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf

from pipeline import store
from pipeline.config.points import data_points
from pipeline.core.errors import FolderError
from pipeline.core.runs import Task
from pipeline.launch.backends import Backend, backend_for
from pipeline.launch.chunking import Work
from pipeline.launch.lock import folder_lock
from pipeline.launch.prepare import PreparedSweep
from pipeline.launch.slurm import QueueError
from pipeline.launch.status import StillQueued, job_list, still_queued
from pipeline.launch.task import TaskRunner
from pipeline.sweep.ids import ID_VERSION
from pipeline.sweep.migrate import migrate_run_ids
from pipeline.sweep.plan import chunk
from pipeline.train.engines import FAST_ENGINES, choose_engine
from pipeline.train.problem import build_problem

log = logging.getLogger(__name__)


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


def runs_to_train(prepared: PreparedSweep, backend: Backend, done: set[str]) -> tuple[list, StillQueued]:
    """The planned runs without a result, less those of tasks still queued or running (one
    `squeue` call), unless `--force` (`launcher.force`) resubmits them. A queue that cannot be
    asked is a FolderError: a relaunch never trains a run twice on a guess."""
    todo = [r for r in prepared.runs if r.run_id not in done]
    if backend.conf.force:
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
    if prepared.meta.linear_in_params is False:  # its answer: predictions at the data's own x
        store.write_data_points(data_points(prepared.dataset.x_raw), prepared.meta.x_names, out_dir)
    with store.atomic_path(out_dir / store.CONFIG) as tmp:
        tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(prepared.cfg)))


def plan_tasks(prepared: PreparedSweep, backend: Backend, todo: list) -> tuple[list[Task], str]:
    """The tasks of the runs left to train, sized by the backend (`chunking`), and how."""
    train = prepared.train
    engine = choose_engine(prepared.parts, train.engine).name
    engine_bytes = 0
    if engine in FAST_ENGINES and todo:  # the engine's own estimate, from the problem a task builds
        problem = build_problem(
            prepared.parts,
            prepared.dataset,
            device="cpu",
            dtype=train.dtype,
            draw_settings=prepared.meta.draw_settings(),
        )
        engine_bytes = FAST_ENGINES[engine][1](problem)
    size, how = backend.runs_per_task(Work(len(todo), engine, train.epochs, train.log_every, engine_bytes))
    return chunk(todo, size), f"{size} runs per task, {how}"


def dry_run_text(
    backend: Backend, executor: Any, tasks: list[Task], n_runs: int, n_skipped: int, sizing: str = ""
) -> str:
    """What a launch would do: runs, tasks (and how they were sized), the backend's own lines."""
    size = max((len(t.runs) for t in tasks), default=0)
    lines = [
        f"plan: {n_runs} runs ({n_skipped} already have results), {len(tasks)} task(s) of up to "
        f"{size} runs" + (f"; {sizing}" if sizing else ""),
        *backend.dry_run_lines(executor, tasks),
        "dry run: nothing submitted",
    ]
    return "\n".join(lines)


def launch(prepared: PreparedSweep) -> LaunchReport:
    """Skip runs that already have results; run or submit the rest of a prepared sweep.

    Everything that writes happens holding the folder's lock (`launcher.wait_lock`: wait for
    it); a dry run only reads. Ctrl-C / SIGTERM of a local sweep raises `Interrupted`.
    """
    backend, out_dir = backend_for(prepared.launcher), prepared.out_dir
    if backend.conf.dry_run:  # creates nothing (submitit's local executor would make logs/)
        fresh = backend.conf.new_sweep or not out_dir.exists()
        done = set() if fresh else store.finished_run_ids(out_dir)
        todo, queued = (list(prepared.runs), StillQueued()) if fresh else runs_to_train(prepared, backend, done)
        tasks, sizing = plan_tasks(prepared, backend, todo)
        skipped = len(prepared.runs) - len(todo) - len(queued.run_ids)
        if queued.run_ids:
            print(queued.text())
        executor = None if backend.runs_here else backend.executor(out_dir / store.LOGS)  # the sbatch preview
        print(dry_run_text(backend, executor, tasks, len(prepared.runs), skipped, sizing))
        return LaunchReport(out_dir, len(prepared.runs), skipped, len(tasks), waited=False, queued=queued)
    executor = backend.executor(out_dir / store.LOGS)
    out_dir.mkdir(parents=True, exist_ok=True)
    with folder_lock(out_dir, wait=backend.conf.wait_lock):
        return _launch_holding_lock(prepared, backend, executor)


def _launch_holding_lock(prepared: PreparedSweep, backend: Backend, executor: Any) -> LaunchReport:
    out_dir, runs = prepared.out_dir, prepared.runs
    replaced = new_sweep_in(out_dir) if backend.conf.new_sweep else None
    adopted = store.adopt_progress(out_dir)
    if adopted:
        log.info("kept %d finished run(s) that earlier tasks had saved in progress/", adopted)
    migrate_run_ids(out_dir)
    done = store.finished_run_ids(out_dir)
    todo, queued = runs_to_train(prepared, backend, done)
    tasks, sizing = plan_tasks(prepared, backend, todo)
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
    runner = TaskRunner(prepared.task_spec(backend.task_threads), str(out_dir), backend.watched_parent())
    ran = backend.run(executor, runner, tasks, {r.run_id for r in runs})
    report.job_ids, report.failed_tasks, report.waited = ran.job_ids, ran.failed_tasks, ran.waited
    return report
