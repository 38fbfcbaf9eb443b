"""What runs inside a task: train its runs and record them.

`TaskRunner` is the callable every task runs (in this process, a local subprocess or a
SLURM array task; `launch` pickles it for submitit): the task's data read once, its
problem built once, its engine chosen (`train_runs`), finished runs saved as they come
and one Parquet part written. It lives here, not in `launch`, so that a task process
imports only the training side, not the planning and launching code.
"""

from __future__ import annotations

import itertools
import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pyarrow as pa
import submitit
import torch

from pipeline import store
from pipeline.core.errors import ConfigError, FolderError
from pipeline.core.runs import Run, RunBatch, RunResult, Task
from pipeline.core.settings import TaskSpec
from pipeline.data.load import load_dataset
from pipeline.launch.local import restore_sigint, watch_parent
from pipeline.train.engines import train_chunk
from pipeline.train.problem import Problem, build_problem, build_problem_parts

log = logging.getLogger(__name__)


def set_threads(threads: Optional[int]) -> None:
    """One torch thread per core a task owns: on tiny tensors, extra threads only fight
    (a 2000-epoch MLP fit ran 16x slower with 2 threads than with 1 on a busy 2-core box)."""
    if threads:
        torch.set_num_threads(threads)


def task_problem(spec: TaskSpec) -> Problem:
    """The task's problem, from its data read once; refuses data changed since planning."""
    dataset = load_dataset(spec.data)
    if dataset.digest() != spec.meta.data_digest:
        raise ConfigError(
            [
                f"`data`: {dataset.source} changed since the sweep was planned (its runs' ids "
                "name the old values): relaunch the sweep to plan runs for the new data"
            ]
        )
    parts = build_problem_parts(spec.model, spec.loss, spec.optim, dataset)
    return build_problem(
        parts,
        dataset,
        device=spec.train.device,
        dtype=spec.train.dtype,
        draw_rule=spec.meta.draw_rule,
        draw_settings=spec.meta.draw_settings(),
    )


def train_runs(
    spec: TaskSpec, runs: list[Run], on_batch_done: Optional[Callable[[list[RunResult]], None]] = None
) -> list[RunResult]:
    """Train `runs` of the task `spec` describes; `on_batch_done` gets each finished group."""
    return train_chunk(task_problem(spec), runs, spec.train, on_batch_done)


def _ensure_task_logging() -> None:
    """A task in its own process (local, SLURM) logs its progress to its stderr log file."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")


@dataclass
class TaskRunner(submitit.helpers.Checkpointable):
    """The callable every task runs (pickled by submitit): train a chunk, write its part.

    Finished runs are saved to `progress/` after each batch, so a task that is requeued
    (preemption, timeout, `scontrol requeue`) trains only the runs it had not finished.
    A task that raises leaves a failure record and re-raises, so SLURM marks it FAILED.
    """

    spec: TaskSpec
    out_dir: str
    parent: Optional[tuple[int, Optional[str]]] = None  # local: (pid, start) of the launching process

    def __call__(self, task: Task) -> dict[str, Any]:
        _ensure_task_logging()
        set_threads(self.spec.threads)
        if self.parent is not None:
            restore_sigint()
            watch_parent(self.parent)
        out = Path(self.out_dir)
        try:
            table = self._train(task, out)
            path = store.write_part(out, task.part_name, table, self.spec.meta)
        except Exception as err:
            self._record_failure(task, out, err)
            raise
        store.finish_task(out, task.part_name)
        return {"part": str(path), "runs": table.num_rows, **status_counts(table)}

    @staticmethod
    def _record_failure(task: Task, out: Path, err: Exception) -> None:
        try:
            store.write_json(
                {
                    "task": task.index,
                    "part": task.part_name,
                    "error": str(err) or repr(err),
                    "traceback": traceback.format_exc(),
                    "runs": [r.run_id for r in task.runs],
                },
                store.failure_path(out, task.part_name),
            )
        except (OSError, FolderError) as second:  # a full disk: the task's own error says it
            log.error("could not record the failure of task %d: %s", task.index, second)

    def _resumed(self, task: Task, out: Path) -> list[pa.Table]:
        """The runs a stopped attempt of this task saved, in this version's schema."""
        saved = store.read_progress(out, task.part_name)
        if saved is None or saved.num_rows == 0:
            return []
        log.info("resuming task %d: %d of %d runs already done", task.index, saved.num_rows, len(task.runs))
        return [store.rows_table(saved.to_pylist(), self.spec.meta)]

    def _train(self, task: Task, out: Path) -> pa.Table:
        """The task's results as one table in plan order; columns from the engines, no row per run."""
        meta, started = self.spec.meta, time.perf_counter()
        tables = self._resumed(task, out)
        n_resumed = sum(t.num_rows for t in tables)
        done = {run_id for t in tables for run_id in t.column("run_id").to_pylist()}
        todo = [r for r in task.runs if r.run_id not in done]
        counter, batches = itertools.count(n_resumed + 1), []

        def save(results: list[RunResult]) -> None:  # once per batch: a fast engine finishes many runs at once
            batches.append(results)
            tables.append(store.results_table(results, meta, task.index))
            if log.isEnabledFor(logging.DEBUG):
                for result in results:
                    log.debug(
                        "run %d/%d %s: %s, loss %.6g after %d epochs",
                        next(counter),
                        len(task.runs),
                        result.run.run_id,
                        result.status,
                        result.final_loss,
                        result.epochs,
                    )
            if sum(map(len, batches)) < len(todo):  # after the last batch the part itself is written
                store.write_progress(out, task.part_name, pa.concat_tables(tables), meta)

        if todo:
            train_runs(self.spec, todo, on_batch_done=save)
        table = pa.concat_tables(tables) if tables else store.rows_table([], meta)
        log.info("%s", task_line(task, n_resumed, batches, status_counts(table), time.perf_counter() - started))
        order = {r.run_id: i for i, r in enumerate(task.runs)}
        return table.take(np.argsort([order[r] for r in table.column("run_id").to_pylist()], kind="stable"))


def _engine_of(batch: list[RunResult]) -> str:
    """'gram on cpu': a RunBatch says it once, without building its RunResults."""
    first = batch if isinstance(batch, RunBatch) else batch[0]
    return f"{first.engine} on {first.device}"


def status_counts(table: pa.Table) -> dict[str, int]:
    """Runs per status in a part's table."""
    return {c["values"]: c["counts"] for c in table.column("status").value_counts().to_pylist()}


def task_line(
    task: Task, n_resumed: int, batches: list[list[RunResult]], statuses: dict[str, int], seconds: float
) -> str:
    """The one INFO line of a task: runs, engine, batch plan, time and statuses (runs: DEBUG)."""
    engines = sorted({_engine_of(batch) for batch in batches if len(batch)}) or ["none"]
    sizes = [len(b) for b in batches]
    plan = f"{len(sizes)} batch(es) of up to {max(sizes)}" if sizes else "nothing left to train"
    resumed = f" ({n_resumed} resumed from progress)" if n_resumed else ""
    counts = ", ".join(f"{s} {n}" for s, n in sorted(statuses.items())) or "no runs"
    return (
        f"task {task.index}: {len(task.runs)} runs{resumed}, engine {', '.join(engines)}, {plan}, "
        f"{seconds:.2f} s: {counts}"
    )
