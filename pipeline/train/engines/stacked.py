"""What the batched engines share: a chunk's data, starting values, closed forms, and
the turning of stacked outcomes into one `RunResult` per run.

The rules for a run's status, epochs and loss curve are the reference loop's
(`divergence`): divergence is checked at logged epochs only, a diverged run stops there
with the parameters it had, and the final loss and gradient norm are taken at the
final parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.core.runs import DIVERGED, Run, RunBatch
from pipeline.core.settings import TrainSettings
from pipeline.train.engines.divergence import run_statuses
from pipeline.train.problem import Problem, new_model


def features_of(model: nn.Module, x: Tensor) -> Tensor:
    """(runs, rows, p) features of a FeatureModel for (runs, rows, x columns) data."""
    return model.features(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)


def initial_models(problem: Problem, runs: list[Run]) -> list[nn.Module]:
    """Each run's starting model, exactly as the reference loop builds it.

    Runs that share seed, init index and init vector start from the same model, so a
    bootstrap chunk builds (and Hydra-instantiates) one model, not one per run.
    """
    built: dict[tuple[Any, ...], nn.Module] = {}
    for run in runs:
        key = (run.seed, run.init_index, run.init)
        if key not in built:
            built[key] = new_model(problem, run)
    return [built[(run.seed, run.init_index, run.init)] for run in runs]


def initial_vectors(problem: Problem, runs: list[Run]) -> tuple[list[nn.Module], Tensor]:
    """`initial_models`, and their flat parameter vectors stacked (runs, n_params):
    one vector per distinct model, gathered for the runs."""
    models = initial_models(problem, runs)
    position: dict[int, int] = {}
    for model in models:
        position.setdefault(id(model), len(position))
    distinct = {id(m): m for m in models}
    vectors = torch.stack([nn.utils.parameters_to_vector(m.parameters()).detach() for m in distinct.values()])
    index = torch.tensor([position[id(m)] for m in models], device=vectors.device)
    return models, vectors[index]


class LossLog:
    """The losses logged at logged epochs, for the runs still training at each."""

    def __init__(self, n_runs: int, device: torch.device, dtype: torch.dtype):
        self.n_runs, self.device, self.dtype = n_runs, device, dtype
        self.epochs: list[int] = []
        self._rows: list[Tensor] = []

    def add(self, epoch: int, live: Tensor, loss: Tensor) -> None:
        if len(live) == self.n_runs:  # none stopped yet
            row = loss.detach().to(self.dtype, copy=True)
        else:
            row = torch.full((self.n_runs,), math.nan, device=self.device, dtype=self.dtype)
            row[live] = loss.detach()
        self.epochs.append(epoch)
        self._rows.append(row)

    def head(self, k: int) -> "LossLog":
        """The log of the first k runs."""
        out = LossLog(k, self.device, self.dtype)
        out.epochs, out._rows = list(self.epochs), [row[:k] for row in self._rows]
        return out

    def matrix(self) -> Tensor:
        """(logged epochs, runs) on the CPU; entries after a run stopped are NaN."""
        if not self._rows:
            return torch.empty(0, self.n_runs, dtype=torch.float64)
        return torch.stack(self._rows).double().cpu()


@dataclass
class ChunkOutcome:
    """What a batched engine hands back for a chunk: one entry (row) per run."""

    params: Tensor  # (runs, n_params) where each run ended, in the training dtype
    final_loss: Tensor  # (runs,) at those parameters, on the run's rows
    grad_norm: Tensor  # (runs,)
    test_loss: Optional[Tensor]  # (runs,) or None without test rows
    stopped_at: list[Optional[int]]  # logged epoch where a run was found diverged, else None
    log: LossLog
    ols: Optional[Tensor] = None  # (runs, n_params) closed-form fit, where there is one
    ols_loss: Optional[Tensor] = None
    ols_rank: Optional[Tensor] = None  # (runs,) rank of each run's design: below n_params, ols is not unique
    stability: Optional[np.ndarray] = None  # (runs, 4) learning-rate bounds, where they apply

    def head(self, k: int) -> "ChunkOutcome":
        """The outcome of the first k runs (a padded batch's real ones)."""
        if k == len(self.stopped_at):
            return self

        def cut(value: Any) -> Any:
            return None if value is None else value[:k]

        return ChunkOutcome(
            self.params[:k],
            self.final_loss[:k],
            self.grad_norm[:k],
            cut(self.test_loss),
            self.stopped_at[:k],
            self.log.head(k),
            cut(self.ols),
            cut(self.ols_loss),
            cut(self.ols_rank),
            cut(self.stability),
        )


def _numpy(t: Optional[Tensor]) -> Optional[np.ndarray]:
    return None if t is None else t.detach().double().cpu().numpy()


def batch_from(
    outcome: ChunkOutcome, problem: Problem, runs: list[Run], settings: TrainSettings, engine: str, wall_time: float
) -> RunBatch:
    """The chunk's results as columns, with the reference loop's rules for status, epochs
    and curve (`divergence.run_statuses`, `divergence.closed_curve`), for all runs at once."""
    params, final, grad = _numpy(outcome.params), _numpy(outcome.final_loss), _numpy(outcome.grad_norm)
    stopped = np.array([s is not None for s in outcome.stopped_at], dtype=bool)
    ends = np.array([settings.epochs if s is None else s for s in outcome.stopped_at], dtype=np.int64)
    known = problem.parts.optimum_known and outcome.ols is not None
    status, note = run_statuses(
        stopped,
        ends,
        final,
        params,
        grad,
        settings,
        _numpy(outcome.ols) if known else None,
        _numpy(outcome.ols_rank) if known else None,
    )
    diverged = status == DIVERGED
    logged_epochs = np.asarray(outcome.log.epochs, dtype=np.int64)
    logged = outcome.log.matrix().numpy().T  # (runs, logged epochs)
    valid = logged_epochs[None, :] <= ends[:, None]
    n_logged = valid.sum(axis=1)
    last = np.where(n_logged > 0, logged_epochs[np.maximum(n_logged - 1, 0)] if len(logged_epochs) else 0, -1)
    closing = ~diverged & ((n_logged == 0) | (last != ends))  # the curve ends at the final epoch's loss
    mask = np.concatenate([valid, closing[:, None]], axis=1)
    epochs_grid = np.concatenate([np.broadcast_to(logged_epochs, valid.shape), ends[:, None]], axis=1)
    losses_grid = np.concatenate([logged, final[:, None]], axis=1)
    offsets = np.zeros(len(runs) + 1, dtype=np.int64)
    np.cumsum(mask.sum(axis=1), out=offsets[1:])
    return RunBatch(
        tuple(runs),
        params,
        final,
        _numpy(outcome.test_loss),
        grad,
        ends,
        status,
        offsets,
        epochs_grid[mask],
        losses_grid[mask],
        _numpy(outcome.ols),
        _numpy(outcome.ols_loss),
        wall_time / len(runs),
        str(problem.device),
        engine,
        note,
        outcome.stability,
    )
