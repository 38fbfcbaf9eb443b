"""Train one task's runs: its data read once, its problem built once, its engine chosen.

This is what runs inside a task (in this process, a local subprocess or a SLURM array
task); `launch.TaskRunner` calls it and records what it returns.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from pipeline.data import load_dataset
from pipeline.engines import train_chunk
from pipeline.errors import ConfigError
from pipeline.problem import Problem, build_problem, build_problem_parts
from pipeline.records import Run, RunResult, TaskSpec


def set_threads(threads: Optional[int]) -> None:
    """One torch thread per core a task owns: on tiny tensors, extra threads only fight
    (a 2000-epoch MLP fit ran 16x slower with 2 threads than with 1 on a busy 2-core box)."""
    if threads:
        torch.set_num_threads(threads)


def task_problem(spec: TaskSpec) -> Problem:
    """The task's problem, from its data read once; refuses data changed since planning."""
    dataset = load_dataset(spec.data)
    if dataset.digest() != spec.meta.data_digest:
        raise ConfigError([f"`data`: {dataset.source} changed since the sweep was planned (its runs' ids "
                           "name the old values): relaunch the sweep to plan runs for the new data"])
    parts = build_problem_parts(spec.model, spec.loss, spec.optim, dataset)
    return build_problem(parts, dataset, device=spec.train.device, dtype=spec.train.dtype)


def train_runs(spec: TaskSpec, runs: list[Run],
               on_batch_done: Optional[Callable[[list[RunResult]], None]] = None) -> list[RunResult]:
    """Train `runs` of the task `spec` describes; `on_batch_done` gets each finished group."""
    return train_chunk(task_problem(spec), runs, spec.train, on_batch_done)
