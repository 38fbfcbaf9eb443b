"""Turn a validated config into tasks and hand them to submitit.

Every launcher goes through submitit: `debug` runs tasks in this process, `local` in
subprocesses (at most `launcher.max_parallel` at once), and the SLURM launcher will
submit the same `TaskRunner` as a job array. A task trains its chunk of runs and
writes one Parquet part; what already has a part is skipped on relaunch.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from tqdm import tqdm

from pipeline import record
from pipeline.config import cpu_count
from pipeline.data import load_dataset
from pipeline.plan import Run, Task, chunk, plan
from pipeline.train import build_problem, build_problem_parts, train_chunk

log = logging.getLogger(__name__)


@dataclass
class TaskRunner:
    """The callable every task runs (pickled by submitit): train a chunk, write its part."""

    cfg: dict[str, Any]
    out_dir: str
    meta: dict[str, Any]

    def __call__(self, task: Task) -> dict[str, Any]:
        problem = build_problem(self.cfg, load_dataset(self.cfg["data"]))
        total = len(task.runs)

        counter = itertools.count(1)

        def report(result: Any) -> None:
            log.info("run %d/%d %s: %s, loss %.6g after %d epochs", next(counter), total,
                     result.run.run_id, result.status, result.final_loss, result.epochs)

        results = train_chunk(problem, list(task.runs), self.cfg["train"], on_run_done=report)
        path = record.write_part(Path(self.out_dir), task.part_name, results, self.meta, task.index)
        statuses = [r.status for r in results]
        return {"part": str(path), "runs": total, **{s: statuses.count(s) for s in set(statuses)}}


@dataclass
class LaunchReport:
    out_dir: Path
    n_planned: int
    n_skipped: int
    n_tasks: int
    failed_tasks: list[str] = field(default_factory=list)


def sweep_meta(cfg: dict[str, Any]) -> dict[str, Any]:
    parts = build_problem_parts(cfg, load_dataset(cfg["data"]))
    return {"experiment": cfg["experiment"], "param_names": list(parts.param_names),
            "closed_form": parts.closed_form}


def write_sweep_files(cfg: dict[str, Any], out_dir: Path, runs: list[Run], meta: dict[str, Any]) -> None:
    record.write_json(meta, out_dir / "sweep.json")
    record.write_frame(record.plan_frame(runs), out_dir / "plan.parquet")
    with record.atomic_path(out_dir / "config.yaml") as tmp:
        tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))


def make_executor(launcher: dict[str, Any], folder: Path) -> Any:
    import submitit  # lazily: importing it is not free, and `--help` should not pay for it

    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=launcher["cluster"])
    if launcher["cluster"] != "debug":
        executor.update_parameters(timeout_min=launcher["timeout_min"])
    return executor


def _failure(job: Any, task: Task) -> str:
    try:
        job.result()
        return ""
    except Exception as err:  # noqa: BLE001 - reported with the task, never swallowed
        stderr = Path(job.paths.stderr)
        tail = stderr.read_text()[-2000:] if stderr.exists() else ""
        return f"task {task.index} ({len(task.runs)} runs, log {stderr}): {err}\n{tail}"


def run_tasks(executor: Any, runner: TaskRunner, tasks: list[Task], launcher: dict[str, Any]) -> list[str]:
    """Run tasks, at most `max_parallel` at once, with a progress bar of runs done."""
    limit = 1 if launcher["cluster"] == "debug" else (launcher["max_parallel"] or cpu_count())
    pending, running, failures = list(tasks), {}, []
    total = sum(len(t.runs) for t in tasks)
    with tqdm(total=total, unit="run", desc="runs", disable=not launcher["progress"]) as bar:
        while pending or running:
            while pending and len(running) < limit:
                task = pending.pop(0)
                running[executor.submit(runner, task)] = task
            for job in [j for j in running if j.done()]:
                task = running.pop(job)
                problem = _failure(job, task)
                if problem:
                    failures.append(problem)
                    log.error("%s", problem)
                bar.update(len(task.runs))
            if running:
                time.sleep(0.2)
    return failures


def launch(cfg: dict[str, Any], out_dir: Path) -> LaunchReport:
    """Plan the sweep, skip runs that already have results, train the rest."""
    runs = plan(cfg)
    meta = sweep_meta(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_sweep_files(cfg, out_dir, runs, meta)
    done = record.finished_run_ids(out_dir)
    todo = [r for r in runs if r.run_id not in done]
    skipped = len(runs) - len(todo)
    log.info("%d runs planned; skipped %d that already have results; %d to train",
             len(runs), skipped, len(todo))
    tasks = chunk(todo, cfg["launcher"]["runs_per_task"])
    report = LaunchReport(out_dir, len(runs), skipped, len(tasks))
    if tasks:
        executor = make_executor(cfg["launcher"], out_dir / "logs")
        runner = TaskRunner(cfg, str(out_dir), meta)
        report.failed_tasks = run_tasks(executor, runner, tasks, cfg["launcher"])
    return report
