"""The launcher backends: how a sweep's tasks run, one class per backend.

As submitit's executors and Hydra's submitit launcher plugin, the backends share one flow
(`launch.submit`: plan, size, write, run) and differ in small hooks: the checks of their
keys, how many tasks run at once, the torch threads of a task, how `auto` sizes tasks
(`chunking`), submitit's parameters, and how the tasks run (`debug` in this process and
`local` in subprocesses, both waited on here; `slurm` as job arrays). `backend_for` picks
the class by the config's `cluster`; each takes its typed config (config/launcher.py).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional

import submitit
from tqdm import tqdm

from pipeline import store
from pipeline.config.launcher import BaseLauncherConf, DebugConf, LocalConf, SlurmConf, launcher_conf
from pipeline.core.errors import ConfigError, Interrupted
from pipeline.core.runs import Task
from pipeline.launch import chunking
from pipeline.launch.arrays import arrays_text, submit_arrays
from pipeline.launch.local import (
    controller_ignores_sigint,
    remove_placeholder_folder,
    sigterm_as_interrupt,
    stop_jobs,
    this_process,
)
from pipeline.launch.slurm import max_array_size
from pipeline.launch.status import wait_for_sweep

log = logging.getLogger(__name__)

Rule = tuple[str, Any, str]  # (config key, value, rule): checked by `launch.prepare`


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass
class Ran:
    """What running the tasks gave: job ids (SLURM), failure messages, and whether it waited."""

    job_ids: list[str] = field(default_factory=list)
    failed_tasks: list[str] = field(default_factory=list)
    waited: bool = True


class Backend:
    """Runs tasks where this launch can wait on them (debug, local); subclasses set the hooks."""

    conf_type: ClassVar[type[BaseLauncherConf]]
    runs_here: ClassVar[bool] = True  # the tasks run on this machine (a CUDA check here means something)

    def __init__(self, conf: BaseLauncherConf) -> None:
        self.conf = conf

    # --- checks before launch ---------------------------------------------------------------
    def rules(self) -> list[Rule]:
        """The value rules of this backend's own keys."""
        return []

    def environment_problems(self) -> list[str]:
        return []

    # --- sizing and resources ---------------------------------------------------------------
    @property
    def slots(self) -> int:
        """Tasks running at once."""
        return 1

    @property
    def task_threads(self) -> Optional[int]:
        """torch threads per task (None: leave torch's default)."""
        return None

    def auto_size(self, work: chunking.Work) -> tuple[int, str]:
        return chunking.debug_size(work)

    def runs_per_task(self, work: chunking.Work) -> tuple[int, str]:
        return chunking.runs_per_task(work, self.conf.runs_per_task, self.auto_size)

    def executor_parameters(self) -> dict[str, Any]:
        """AutoExecutor parameters (submitit's names)."""
        return {}

    def executor(self, folder: Path) -> submitit.AutoExecutor:
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster=self.conf.cluster, **self._executor_options())
        try:
            executor.update_parameters(**self.executor_parameters())
        except (ValueError, TypeError) as err:
            raise ConfigError([f"`launcher`: submitit refuses these parameters: {err}"]) from err
        return executor

    def _executor_options(self) -> dict[str, Any]:
        return {}

    # --- running ----------------------------------------------------------------------------
    def watched_parent(self) -> Optional[tuple[int, Optional[str]]]:
        """The process a task stops without (None: the task does not watch)."""
        return None

    def dry_run_lines(self, executor: submitit.AutoExecutor, tasks: list[Task]) -> list[str]:
        return []

    def run(self, executor: Any, runner: Any, tasks: list[Task], planned_ids: set[str]) -> Ran:
        """Run the tasks here, `slots` at once; Ctrl-C / SIGTERM raises `Interrupted` saying
        how many of the `planned_ids` are saved and how to go on."""
        try:
            return Ran(failed_tasks=run_tasks_here(executor, runner, tasks, self.slots, self.conf.progress))
        except KeyboardInterrupt:
            raise Interrupted(interrupted_text(Path(runner.out_dir), planned_ids)) from None


class DebugBackend(Backend):
    """In this process, one task after the other (submitit's DebugExecutor)."""

    conf_type = DebugConf


class LocalBackend(Backend):
    """Subprocesses on this machine, `max_parallel` at once (0: one per core), one torch thread each."""

    conf_type = LocalConf
    conf: LocalConf

    def rules(self) -> list[Rule]:
        return [
            ("launcher.max_parallel", self.conf.max_parallel, ">= 0"),
            ("launcher.timeout_min", self.conf.timeout_min, "> 0"),
        ]

    @property
    def slots(self) -> int:
        return self.conf.max_parallel or cpu_count()

    @property
    def task_threads(self) -> Optional[int]:
        return 1

    def auto_size(self, work: chunking.Work) -> tuple[int, str]:
        return chunking.local_size(work, self.slots)

    def executor_parameters(self) -> dict[str, Any]:
        return {"timeout_min": self.conf.timeout_min}

    def watched_parent(self) -> Optional[tuple[int, Optional[str]]]:
        return this_process()


class SlurmBackend(Backend):
    """Job arrays within MaxArraySize; returns once submitted unless `wait`."""

    conf_type = SlurmConf
    conf: SlurmConf
    runs_here = False

    def rules(self) -> list[Rule]:
        c = self.conf
        return [
            ("launcher.timeout_min", c.timeout_min, "> 0"),
            ("launcher.cpus_per_task", c.cpus_per_task, ">= 1"),
            ("launcher.mem_gb", c.mem_gb, "finite and > 0"),
            ("launcher.gpus_per_node", c.gpus_per_node, ">= 0"),
            ("launcher.array_parallelism", c.array_parallelism, ">= 1"),
            ("launcher.signal_delay_s", c.signal_delay_s, ">= 0"),
            ("launcher.max_num_timeout", c.max_num_timeout, ">= 0"),
            ("launcher.max_array_size", c.max_array_size, ">= 1 or null"),
        ]

    def environment_problems(self) -> list[str]:
        if self.conf.dry_run or shutil.which("sbatch") is not None:
            return []
        return [
            "`launcher=slurm` needs `sbatch` on PATH (is this a SLURM login node? "
            "bash slurm/local-cluster.sh start brings up a local one)"
        ]

    @property
    def task_threads(self) -> Optional[int]:
        return max(1, self.conf.cpus_per_task)  # the cores the array task owns

    @cached_property
    def array_limit(self) -> int:
        # one `scontrol` call a launch: it takes ~9 s to give up where no controller answers
        return self.conf.max_array_size or max_array_size()

    def auto_size(self, work: chunking.Work) -> tuple[int, str]:
        return chunking.slurm_size(work, self.conf, self.array_limit)

    def executor_parameters(self) -> dict[str, Any]:
        c = self.conf
        params: dict[str, Any] = {
            "timeout_min": c.timeout_min,
            "cpus_per_task": c.cpus_per_task,
            "mem_gb": c.mem_gb,
            "gpus_per_node": c.gpus_per_node or None,
            "slurm_array_parallelism": c.array_parallelism,
            "slurm_signal_delay_s": c.signal_delay_s,
            "slurm_additional_parameters": dict(c.additional_parameters),
            "slurm_setup": list(c.setup),
            "name": "pipeline",
        }
        for key in ("partition", "account", "qos", "gres"):
            if getattr(c, key):
                params[f"slurm_{key}"] = getattr(c, key)
        return {k: v for k, v in params.items() if v is not None}

    def _executor_options(self) -> dict[str, Any]:
        return {"slurm_max_num_timeout": self.conf.max_num_timeout}

    def dry_run_lines(self, executor: submitit.AutoExecutor, tasks: list[Task]) -> list[str]:
        if not tasks:
            return []
        return arrays_text(executor, tasks, self.array_limit, self.conf.array_parallelism, self.executor_parameters())

    def run(self, executor: Any, runner: Any, tasks: list[Task], planned_ids: set[str]) -> Ran:
        out_dir = Path(runner.out_dir)
        ran = Ran(job_ids=submit_arrays(executor, runner, tasks, self.array_limit, out_dir), waited=self.conf.wait)
        if self.conf.wait:
            ran.failed_tasks = wait_for_sweep(out_dir, progress=self.conf.progress)
        return ran


BACKENDS: dict[str, type[Backend]] = {b.conf_type().cluster: b for b in (DebugBackend, LocalBackend, SlurmBackend)}


def backend_for(launcher: Mapping[str, Any]) -> Backend:
    """The backend of a resolved launcher config (today's typed one, or an old folder's flat dict)."""
    conf = launcher_conf(launcher)
    return BACKENDS[conf.cluster](conf)


# --- debug and local: the tasks run while this process waits ------------------------------------


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


def run_tasks_here(executor: Any, runner: Any, tasks: list[Task], slots: int, progress: bool) -> list[str]:
    """Run tasks, at most `slots` at once, with a progress bar of runs; return failure messages.

    The bar counts the runs of finished tasks plus those running tasks have saved. On
    Ctrl-C (or SIGTERM) the running tasks are stopped before KeyboardInterrupt goes on.
    """
    pending, running, failures, finished = list(tasks), {}, [], 0
    out_dir, poll = Path(runner.out_dir), 0.05  # seconds; grows to 0.5 so that a short task is not waited on
    try:
        with (
            sigterm_as_interrupt(),
            tqdm(total=sum(len(t.runs) for t in tasks), unit="run", desc="runs", disable=not progress) as bar,
        ):
            while pending or running:
                while pending and len(running) < slots:
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
        remove_placeholder_folder(out_dir / store.LOGS / "%j")
    return failures


def interrupted_text(out_dir: Path, planned_ids: set[str]) -> str:
    saved = len(planned_ids & store.finished_run_ids(out_dir))
    saved += sum(store.progress_count(out_dir, p.stem) for p in store.progress_files(out_dir))
    return (
        f"interrupted: the running tasks were stopped; {saved} of {len(planned_ids)} runs are saved in "
        f"{out_dir} (parts/, progress/). Relaunch the same command (out_dir={out_dir}) to train only "
        f"the {len(planned_ids) - saved} runs left"
    )
