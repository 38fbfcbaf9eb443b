"""submitit's executors for the launchers, and the SLURM side of a launch: job arrays within
MaxArraySize, recorded in launches.jsonl, and the dry run's sbatch text."""

from __future__ import annotations

import datetime as dt
import logging
import sys
from pathlib import Path
from typing import Any

import submitit

from pipeline import store
from pipeline.core.errors import ConfigError
from pipeline.core.runs import Task
from pipeline.launch.slurm import max_array_size

log = logging.getLogger(__name__)


def executor_parameters(launcher: dict[str, Any]) -> dict[str, Any]:
    """AutoExecutor parameters for the launcher config (submitit's names)."""
    if launcher["cluster"] == "debug":
        return {}
    params: dict[str, Any] = {"timeout_min": launcher["timeout_min"]}
    if launcher["cluster"] == "slurm":
        params.update(
            cpus_per_task=launcher["cpus_per_task"],
            mem_gb=launcher["mem_gb"],
            gpus_per_node=launcher["gpus_per_node"] or None,
            slurm_array_parallelism=launcher["array_parallelism"],
            slurm_signal_delay_s=launcher["signal_delay_s"],
            slurm_additional_parameters=dict(launcher["additional_parameters"]),
            slurm_setup=list(launcher["setup"]),
            name="pipeline",
        )
        for key in ("partition", "account", "qos", "gres"):
            if launcher[key]:
                params[f"slurm_{key}"] = launcher[key]
    return {k: v for k, v in params.items() if v is not None}


def make_executor(launcher: dict[str, Any], folder: Path) -> submitit.AutoExecutor:
    kwargs = {"slurm_max_num_timeout": launcher["max_num_timeout"]} if launcher["cluster"] == "slurm" else {}
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=launcher["cluster"], **kwargs)
    try:
        executor.update_parameters(**executor_parameters(launcher))
    except (ValueError, TypeError) as err:
        raise ConfigError([f"`launcher`: submitit refuses these parameters: {err}"]) from err
    return executor


def array_groups(tasks: list[Task], max_size: int) -> list[list[Task]]:
    """Split tasks into job arrays of at most `max_size` (indices 0..max_size-1)."""
    return [tasks[i : i + max_size] for i in range(0, len(tasks), max_size)]


def array_limit(launcher: dict[str, Any]) -> int:
    return launcher["max_array_size"] or max_array_size()


def submit_arrays(executor: Any, runner: Any, tasks: list[Task], launcher: dict[str, Any], out_dir: Path) -> list[str]:
    """slurm: one `map_array` per group of tasks; each array is recorded in launches.jsonl."""
    job_ids = []
    for group in array_groups(tasks, array_limit(launcher)):
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


def dry_run_text(
    executor: Any, tasks: list[Task], launcher: dict[str, Any], n_runs: int, n_skipped: int, sizing: str = ""
) -> str:
    """What a launch would do: runs, tasks (and how they were sized), arrays, resources, the sbatch script."""
    size = max((len(t.runs) for t in tasks), default=0)
    lines = [
        f"plan: {n_runs} runs ({n_skipped} already have results), {len(tasks)} task(s) of up to "
        f"{size} runs" + (f"; {sizing}" if sizing else "")
    ]
    if launcher["cluster"] == "slurm" and tasks:
        limit = array_limit(launcher)
        groups = array_groups(tasks, limit)
        throttle = launcher["array_parallelism"]
        specs = [f"--array=0-{len(g) - 1}%{min(throttle, len(g))}" for g in groups]
        lines.append(f"arrays: {len(groups)} (MaxArraySize {limit}): {', '.join(specs)}")
        lines.append(f"resources per task: {executor_parameters(launcher)}")
        lines += ["sbatch script (first array):", sbatch_preview(executor, len(groups[0]))]
    lines.append("dry run: nothing submitted")
    return "\n".join(lines)
