"""How many runs one task trains when `launcher.runs_per_task` is `auto` (the default).

Pure arithmetic on the plan, the engine and the launcher's parallel slots; each backend
(launch/backends.py) sizes by its rule below, which returns the size and a sentence saying
how it was chosen (the dry run and the log print it):

- every launcher: a task holds its results in memory until it writes its part, and a
  fast engine trains all its runs in one batch when RAM allows, so a task takes at most
  the runs whose result rows (loss curves included) and engine working set fit
  `TASK_MEMORY_BYTES` (on a GPU node the working set is on the GPU: results only);
  the textbook loop rewrites its progress file after every run, so its tasks stay short;
- `debug` (in this process): one task, or a few when the work would leave the progress
  bar still for long;
- `local` (subprocesses): about one task per core, but no more tasks than the work pays
  for: each subprocess imports torch (seconds) before it trains a run;
- `slurm`: spread over `array_parallelism` array tasks, none shorter than a minute of
  estimated work (scheduling costs more), none longer than half of `timeout_min`, and
  no more than `MaxArraySize` tasks where the time limit allows.

Run ids and results never depend on the chunk size (tested end to end), only time does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from pipeline.config.launcher import SlurmConf

AUTO = "auto"
TASK_MEMORY_BYTES = 512 * 2**20  # result rows and engine working set one task may hold
RESULT_ROW_BYTES = 2048  # a result row as Python objects, without its loss curve
CURVE_POINT_BYTES = 80  # one logged epoch of the curve: an int and a float in two lists
REFERENCE_MAX_RUNS = 256  # textbook-loop tasks: progress is rewritten after every run
# Seconds one run costs per epoch (gram: per logged epoch), measured on a 2-core EPYC
# (benchmarks/README.md): only the order of magnitude matters here.
SECONDS_PER_EPOCH = {"gram": 2.5e-6, "batched": 3e-6, "reference": 2.5e-4}
LOCAL_TASK_OVERHEAD_S = 3.0  # a local subprocess: spawn and import torch
DEBUG_TASK_S = 10.0  # debug: a task at least every this many seconds of work, for the bar
DEBUG_MAX_TASKS = 8
SLURM_MIN_TASK_S = 60.0  # shorter array tasks spend more time queued and starting than training
SLURM_TIME_SHARE = 0.5  # of timeout_min an array task's estimated work may take


@dataclass(frozen=True)
class Work:
    """What sizing needs to know of a sweep."""

    n_runs: int  # runs left to train
    engine: str  # the engine `train.engine` resolves to
    epochs: int
    log_every: int
    engine_bytes_per_run: int = 0  # the engine's estimate (engines/memory.py), 0: unknown

    @property
    def curve_points(self) -> int:
        return self.epochs // self.log_every + 1

    @property
    def seconds_per_run(self) -> float:
        per_epoch = SECONDS_PER_EPOCH.get(self.engine, SECONDS_PER_EPOCH["reference"])
        return per_epoch * (self.curve_points if self.engine == "gram" else self.epochs)

    @property
    def seconds(self) -> float:
        return self.n_runs * self.seconds_per_run


def memory_cap(work: Work, mem_gb: float | None = None, on_gpu: bool = False) -> int:
    """Most runs whose results and working set fit a task's budget (and the textbook loop's limit)."""
    budget = TASK_MEMORY_BYTES if mem_gb is None else min(TASK_MEMORY_BYTES, int(mem_gb * 2**30 / 4))
    per_run = RESULT_ROW_BYTES + CURVE_POINT_BYTES * work.curve_points + (0 if on_gpu else work.engine_bytes_per_run)
    cap = max(1, budget // per_run)
    return min(cap, REFERENCE_MAX_RUNS) if work.engine == "reference" else cap


def _even(n_runs: int, n_tasks: int) -> int:
    return max(1, math.ceil(n_runs / max(1, n_tasks)))


def local_size(work: Work, slots: int) -> tuple[int, str]:
    """`local`: about one task per slot, no more than the work pays torch starts for."""
    cap = memory_cap(work)
    paying = max(1, math.floor(work.seconds / LOCAL_TASK_OVERHEAD_S))
    n_tasks = min(slots, paying)
    why = f"{n_tasks} task(s) for {slots} slot(s)"
    if n_tasks < slots:
        why += f" (about {work.seconds:.2g} s of work pays for {paying} torch start(s) of a subprocess)"
    size = _even(work.n_runs, n_tasks)
    if size > cap:  # memory asks for more tasks: a multiple of the slots keeps them busy
        n_tasks = slots * math.ceil(work.n_runs / (slots * cap))
        size, why = _even(work.n_runs, n_tasks), f"{n_tasks} tasks: at most {cap} runs fit a task's memory"
    return size, why


def debug_size(work: Work) -> tuple[int, str]:
    """`debug`: one task, or a few when the work would leave the progress bar still for long."""
    cap = memory_cap(work)
    n_tasks = min(DEBUG_MAX_TASKS, max(1, math.floor(work.seconds / DEBUG_TASK_S)))
    why = "one task in this process" if n_tasks == 1 else f"{n_tasks} tasks, one per ~{DEBUG_TASK_S:g} s, for the bar"
    size = _even(work.n_runs, n_tasks)
    if size > cap:
        size, why = _even(work.n_runs, math.ceil(work.n_runs / cap)), f"at most {cap} runs fit a task's memory"
    return size, why


def slurm_size(work: Work, conf: SlurmConf, array_limit: int) -> tuple[int, str]:
    """`slurm`: spread over the array's throttle, within a minute of work, half the time limit,
    MaxArraySize and a task's memory (on a GPU node the engine's working set is on the GPU)."""
    cap = memory_cap(work, conf.mem_gb, on_gpu=bool(conf.gpus_per_node or conf.gres))
    per_run = work.seconds_per_run
    size = _even(work.n_runs, conf.array_parallelism)
    why = f"spread over array_parallelism {conf.array_parallelism}"
    shortest = math.ceil(SLURM_MIN_TASK_S / per_run)
    if size < shortest:
        size, why = min(work.n_runs, shortest), f"at least {SLURM_MIN_TASK_S:g} s of work per array task"
    if math.ceil(work.n_runs / size) > array_limit:
        size, why = _even(work.n_runs, array_limit), f"one array within MaxArraySize {array_limit}"
    longest = max(1, math.floor(SLURM_TIME_SHARE * conf.timeout_min * 60 / per_run))
    if size > longest:
        size, why = longest, f"at most {SLURM_TIME_SHARE:.0%} of timeout_min {conf.timeout_min} per task"
    if size > cap:
        size, why = cap, f"at most {cap} runs fit a task's memory (mem_gb {conf.mem_gb:g})"
    return max(1, size), why


def runs_per_task(work: Work, pinned: Any, auto_size: Callable[[Work], tuple[int, str]]) -> tuple[int, str]:
    """(runs per task, how it was chosen): `pinned` (`launcher.runs_per_task`) when it is a
    number, else the backend's `auto_size` of the work."""
    if pinned != AUTO:  # no shipped config pins it (tests/e2e/test_first_contact.py): the user did
        return int(pinned), f"pinned by launcher.runs_per_task={pinned} (auto sizes tasks to the work)"
    if work.n_runs == 0:
        return 1, "nothing to train"
    size, why = auto_size(work)
    estimate = f"engine {work.engine}, about {work.seconds_per_run * 1e3:.2g} ms a run"
    return size, f"auto: {why}; {estimate}"
