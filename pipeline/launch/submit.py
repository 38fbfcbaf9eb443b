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
from typing import Any

from omegaconf import OmegaConf

from pipeline import store
from pipeline.core.runs import Task
from pipeline.launch.backends import Backend, backend_for
from pipeline.launch.chunking import Work
from pipeline.launch.lock import folder_lock
from pipeline.launch.prepare import PreparedSweep
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
    n_skipped: int
    n_tasks: int
    job_ids: list[str] = field(default_factory=list)
    failed_tasks: list[str] = field(default_factory=list)
    waited: bool = True


def warn_if_data_changed(prepared: PreparedSweep, done: set[str]) -> None:
    """A relaunch on data whose values changed plans new runs: say that the results of the old
    data stay in the folder but are not reused (nor shown in the tables of this plan)."""
    path = prepared.out_dir / store.SWEEP_META
    if not path.is_file():
        return
    before = store.read_meta(prepared.out_dir).data_digest
    kept = len(done - {r.run_id for r in prepared.runs})
    if before != prepared.meta.data_digest and kept:
        log.warning(
            "the data of %s changed since this folder's last launch: %d result(s) of the old data stay "
            "in parts/ but are not reused; every run of the new data is trained",
            prepared.meta.data_source,
            kept,
        )


def write_sweep_files(prepared: PreparedSweep) -> None:
    out_dir = prepared.out_dir
    store.write_meta(prepared.meta, out_dir, id_version=ID_VERSION)
    store.write_frame(store.plan_frame(prepared.runs), out_dir / store.PLAN)
    if prepared.design is not None:
        store.write_design(*prepared.design, prepared.meta.param_names, out_dir)
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
    executor = backend.executor(out_dir / store.LOGS)
    if backend.conf.dry_run:
        done = store.finished_run_ids(out_dir) if out_dir.exists() else set()
        todo = [r for r in prepared.runs if r.run_id not in done]
        tasks, sizing = plan_tasks(prepared, backend, todo)
        skipped = len(prepared.runs) - len(todo)
        print(dry_run_text(backend, executor, tasks, len(prepared.runs), skipped, sizing))
        return LaunchReport(out_dir, len(prepared.runs), skipped, len(tasks), waited=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    with folder_lock(out_dir, wait=backend.conf.wait_lock):
        return _launch_holding_lock(prepared, backend, executor)


def _launch_holding_lock(prepared: PreparedSweep, backend: Backend, executor: Any) -> LaunchReport:
    out_dir, runs = prepared.out_dir, prepared.runs
    adopted = store.adopt_progress(out_dir)
    if adopted:
        log.info("kept %d finished run(s) that earlier tasks had saved in progress/", adopted)
    migrate_run_ids(out_dir)
    done = store.finished_run_ids(out_dir)
    todo = [r for r in runs if r.run_id not in done]
    warn_if_data_changed(prepared, done)
    tasks, sizing = plan_tasks(prepared, backend, todo)
    report = LaunchReport(out_dir, len(runs), len(runs) - len(todo), len(tasks))
    write_sweep_files(prepared)
    log.info(
        "%d runs planned; skipped %d that already have results; %d to train in %d task(s) (%s)",
        len(runs),
        report.n_skipped,
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
