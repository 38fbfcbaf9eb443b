"""The training engines, and `train_chunk`, which trains a task's runs with one of them.

- `reference`: the textbook loop, one run after the other: the definition of correct;
- `batched`: any `nn.Module` with SGD or Adam, a batch of runs as one torch.func computation;
- `gram`: models linear in their parameters fitted by MSE with SGD, through matrix powers;
- `choice`: which engine applies (`auto`: the fastest); `memory`: how many runs fit a batch;
- `divergence`: the rules for divergence and status every engine follows (`run_statuses`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Callable, Optional

import numpy as np

from pipeline.core.resampling import resample_size
from pipeline.core.runs import Run, RunBatch, RunResult
from pipeline.core.settings import TrainSettings
from pipeline.train.engines.batch_memory import batch_size
from pipeline.train.engines.batched import BLOCK as BATCHED_BLOCK
from pipeline.train.engines.batched import bytes_per_run as batched_bytes_per_run
from pipeline.train.engines.batched import train_batched
from pipeline.train.engines.gram import bytes_per_run as gram_bytes_per_run
from pipeline.train.engines.gram import train_gram
from pipeline.train.engines.reference import train_reference
from pipeline.train.engines.selection import EngineChoice, choose_engine, engine_problems
from pipeline.train.engines.stability import bound_rule, run_stability
from pipeline.train.problem import Problem

__all__ = ["EngineChoice", "FAST_ENGINES", "choose_engine", "engine_problems", "train_chunk", "train_reference"]

log = logging.getLogger(__name__)

# engine -> (train, bytes per run, block): an engine with a block trains batches of exactly
# that many runs (padded), so that no run's numbers depend on how many share its batch
FAST_ENGINES: dict[str, tuple[Callable[..., RunBatch], Callable[[Problem], int], Optional[int]]] = {
    "gram": (train_gram, gram_bytes_per_run, None),
    "batched": (train_batched, batched_bytes_per_run, BATCHED_BLOCK),
}


def train_chunk(
    problem: Problem,
    runs: list[Run],
    settings: TrainSettings,
    on_batch_done: Optional[Callable[[list[RunResult]], None]] = None,
) -> list[RunResult]:
    """Train a task's runs with `train.engine`; `auto` picks the fastest that applies.

    `on_batch_done` gets each group of results finished together (one run for the
    reference loop, a whole batch for the fast engines), so a caller can save progress
    once per group rather than once per run. Results come back in the order of `runs`.
    """
    choice = choose_engine(problem.parts, settings.engine)
    log.debug("%d runs, engine %s (%s)", len(runs), choice.name, choice.reason)
    done = on_batch_done or (lambda results: None)
    if choice.name != "reference":
        return train_fast(choice.name, problem, runs, settings, done)
    bounds = reference_stability(problem, runs, settings)
    results = []
    for run, stability in zip(runs, bounds):
        results.append(train_reference(problem, run, settings))
        results[-1].stability = stability
        done(results[-1:])
    return results


def reference_stability(problem: Problem, runs: list[Run], settings: TrainSettings) -> list[Optional[list[float]]]:
    """Each run's learning-rate bounds (None where they do not apply), from its moments, as the
    fast engines store them: computed for all runs at once, a batch per resample size."""
    out: list[Optional[list[float]]] = [None] * len(runs)
    if bound_rule(problem) is None:
        return out
    batches, _ = _batches(problem, runs, max(len(runs), 1))
    for batch in batches:
        bounds = run_stability(problem, [runs[i] for i in batch], settings)
        for i, row in zip(batch, bounds if bounds is not None else []):
            out[i] = row.tolist()
    return out


def _batches(problem: Problem, runs: list[Run], size: int) -> tuple[list[list[int]], list[int]]:
    """Positions of `runs` per batch: runs with as many rows go together (jackknife runs,
    one row short, apart), at most `size` at once; and the distinct row counts."""
    by_rows: dict[int, list[int]] = {}
    for i, run in enumerate(runs):
        by_rows.setdefault(resample_size(problem.n_rows, run.resample), []).append(i)
    batches = [members[b : b + size] for members in by_rows.values() for b in range(0, len(members), size)]
    return batches, sorted(by_rows)


def train_fast(
    engine: str,
    problem: Problem,
    runs: list[Run],
    settings: TrainSettings,
    on_batch_done: Callable[[list[RunResult]], None],
) -> list[RunResult]:
    """Train `runs` with a fast engine, batch by batch; report each batch when done."""
    train, run_bytes, block = FAST_ENGINES[engine]
    size, why = batch_size(len(runs) if block is None else block, run_bytes(problem), problem.device)
    batches, sizes = _batches(problem, runs, size)
    apart = f" (runs of {len(sizes)} data sizes, rows {sizes}, apart)" if len(sizes) > 1 else ""
    log.debug(
        "engine %s on %s: %s; %d runs -> %d batch(es) of up to %d%s",
        engine,
        problem.device,
        why,
        len(runs),
        len(batches),
        size,
        apart,
    )
    done = []
    for batch in batches:
        done.append(train(problem, [runs[i] for i in batch], settings, **({} if block is None else {"block": size})))
        on_batch_done(done[-1])
    return InRunOrder(done, batches)


class InRunOrder(Sequence):  # type: ignore[type-arg]
    """The results of a chunk's batches, read in the order of its runs: a `RunResult` is built
    only when asked for (a task writes the batches' columns, never one object per run)."""

    def __init__(self, batches: list[RunBatch], positions: list[list[int]]):
        n = sum(len(members) for members in positions)
        self.batch_of, self.index_in = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
        for b, members in enumerate(positions):
            self.batch_of[members], self.index_in[members] = b, np.arange(len(members))
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batch_of)

    def __getitem__(self, i):  # type: ignore[no-untyped-def]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.batches[int(self.batch_of[i])][int(self.index_in[i])]

    def __add__(self, other: Sequence) -> list[RunResult]:  # type: ignore[type-arg]
        return list(self) + list(other)

    def __radd__(self, other: Sequence) -> list[RunResult]:  # type: ignore[type-arg]
        return list(other) + list(self)
