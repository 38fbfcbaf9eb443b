"""SLURM job arrays: tasks split within MaxArraySize, each array recorded in launches.jsonl,
and the dry run's arrays and sbatch text."""

from __future__ import annotations

import datetime as dt
import logging
import sys
from pathlib import Path
from typing import Any

import submitit

from pipeline import store
from pipeline.core.runs import Task

log = logging.getLogger(__name__)


def array_groups(tasks: list[Task], max_size: int) -> list[list[Task]]:
    """Split tasks into job arrays of at most `max_size` (indices 0..max_size-1)."""
    return [tasks[i : i + max_size] for i in range(0, len(tasks), max_size)]


def submit_arrays(executor: Any, runner: Any, tasks: list[Task], max_size: int, out_dir: Path) -> list[str]:
    """One `map_array` per group of tasks; each array is recorded in launches.jsonl."""
    job_ids = []
    for group in array_groups(tasks, max_size):
        jobs = executor.map_array(runner, group)
        job_id = jobs[0].job_id.split("_")[0]
        job_ids.append(job_id)
        store.append_launch(
            out_dir,
            {
                "time": dt.datetime.now().isoformat(timespec="seconds"),
                "job_id": job_id,
                # submitit submits a one-task "array" as a plain job: keep the id it got
                "tasks": [
                    {
                        "array_index": i,
                        "slurm_id": job.job_id,
                        "task": t.index,
                        "part": t.part_name,
                        "runs": [r.run_id for r in t.runs],
                    }
                    for i, (t, job) in enumerate(zip(group, jobs))
                ],
            },
        )
        log.info("submitted job array %s: %d task(s)", job_id, len(group))
    return job_ids


def sbatch_preview(executor: submitit.AutoExecutor, n_tasks: int) -> str:
    """The sbatch script submitit would submit for an array of `n_tasks`.

    submitit has no public call that returns this text: `_make_sbatch_string` is the
    function its SlurmExecutor submits with, given the executor's (public) converted
    parameters. tests/e2e/test_slurm.py pins the lines we rely on, so an upgrade that
    changes it fails there rather than silently.
    """
    from submitit.slurm.slurm import _make_sbatch_string

    command = f"{sys.executable} -u -m submitit.core._submit <folder>"
    return _make_sbatch_string(command=command, folder=executor.folder, **{**executor.parameters, "map_count": n_tasks})


def arrays_text(
    executor: submitit.AutoExecutor, tasks: list[Task], max_size: int, throttle: int, resources: dict[str, Any]
) -> list[str]:
    """The dry run's lines on the arrays a SLURM launch would submit, and the first one's script."""
    groups = array_groups(tasks, max_size)
    specs = [f"--array=0-{len(g) - 1}%{min(throttle, len(g))}" for g in groups]
    return [
        f"arrays: {len(groups)} (MaxArraySize {max_size}): {', '.join(specs)}",
        f"resources per task: {resources}",
        "sbatch script (first array):",
        sbatch_preview(executor, len(groups[0])),
    ]
