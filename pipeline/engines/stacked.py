"""What the batched engines share: a chunk's data, starting values, closed forms, and
the turning of stacked outcomes into one `RunResult` per run.

The rules for a run's status, epochs and loss curve are the reference loop's
(`fate`): divergence is checked at logged epochs only, a diverged run stops there
with the parameters it had, and the final loss and gradient norm are taken at the
final parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn
from torch.func import vmap

from pipeline.engines.fate import closed_curve, run_status
from pipeline.plan import resample_rows
from pipeline.problem import Problem, new_model, resample_data
from pipeline.records import Run, RunResult, TrainSettings


def chunk_data(problem: Problem, runs: list[Run]) -> tuple[Tensor, Tensor]:
    """(runs, rows, x columns) and (runs, rows, y columns): each run's training data,
    exactly as `problem.resample_data` hands it to the reference loop. The runs must have
    resamples of one size (`resample_size`)."""
    data = [resample_data(problem, run) for run in runs]
    return torch.stack([x for x, _ in data]), torch.stack([y for _, y in data])


def resample_size(problem: Problem, run: Run) -> int:
    """Rows a run trains on (a jackknife resample has one fewer)."""
    return len(resample_rows(problem.x.shape[0], run.seed, run.resample))


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


def closed_forms(problem: Problem, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(runs, n_params) least-squares fits and (runs,) their losses, float64 on the CPU.

    The reference loop's computation (`torch.linalg.lstsq` of the features of each run's
    data, then the experiment's loss), batched over runs. LAPACK's least squares is not
    reproducible to the last bit even call to call, so nothing else is computed from it.
    """
    a = features_of(problem.parts.make_model(), x.double()).cpu()
    b = y.double().cpu()
    coef = torch.linalg.lstsq(a, b).solution[..., 0]
    return coef, vmap(problem.parts.loss_fn)((a * coef.unsqueeze(1)).sum(dim=-1, keepdim=True), b)


class LossLog:
    """The losses logged at logged epochs, for the runs still training at each."""

    def __init__(self, n_runs: int, device: torch.device, dtype: torch.dtype):
        self.n_runs, self.device, self.dtype = n_runs, device, dtype
        self.epochs: list[int] = []
        self._rows: list[Tensor] = []

    def add(self, epoch: int, live: Tensor, loss: Tensor) -> None:
        row = torch.full((self.n_runs,), math.nan, device=self.device, dtype=self.dtype)
        row[live] = loss.detach()
        self.epochs.append(epoch)
        self._rows.append(row)

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


def _cpu_lists(*tensors: Optional[Tensor]) -> list[Optional[list[Any]]]:
    return [None if t is None else t.double().cpu().tolist() for t in tensors]


def results_from(outcome: ChunkOutcome, problem: Problem, runs: list[Run], settings: TrainSettings,
                 engine: str, wall_time: float) -> list[RunResult]:
    """One RunResult per run, with the reference loop's rules for status, epochs and curve."""
    params, final, grad, test, ols, ols_loss = _cpu_lists(outcome.params, outcome.final_loss, outcome.grad_norm,
                                                          outcome.test_loss, outcome.ols, outcome.ols_loss)
    logged = outcome.log.matrix()
    results = []
    for i, run in enumerate(runs):
        stop = outcome.stopped_at[i]
        end = settings.epochs if stop is None else stop
        n_logged = sum(1 for e in outcome.log.epochs if e <= end)
        status = run_status(stop is not None, final[i], params[i], grad[i], settings.grad_tol)
        curve_epoch, curve_loss = closed_curve(list(outcome.log.epochs[:n_logged]), logged[:n_logged, i].tolist(),
                                               end, final[i], status)
        result = RunResult(run, params[i], final[i], None if test is None else test[i], grad[i], end, status,
                           curve_epoch, curve_loss, wall_time=wall_time / len(runs), device=str(problem.device),
                           engine=engine)
        if ols is not None:
            result.ols, result.ols_loss = ols[i], ols_loss[i]
        results.append(result)
    return results
