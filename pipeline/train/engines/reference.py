"""The textbook loop, one run after the other: the definition of a correct run.

Forward, loss module, `backward()`, `torch.optim` step, `zero_grad()`. Any faster
engine must give the same numbers (tests/integration/test_batched.py). Divergence is checked where
the loss is logged (`divergence`), so a NaN run is stopped and marked, and never raises.
"""

from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch
from torch import nn

from pipeline.core.runs import Run, RunResult
from pipeline.core.settings import TrainSettings
from pipeline.models import least_squares
from pipeline.train.engines.divergence import closed_curve, finite_runs, run_statuses
from pipeline.train.problem import Problem, new_model, resample_data

ENGINE = "reference"


def _flat(model: nn.Module) -> torch.Tensor:
    return nn.utils.parameters_to_vector(model.parameters()).detach()


def train_reference(problem: Problem, run: Run, settings: TrainSettings) -> RunResult:
    """Full-batch gradient descent on the run's resample."""
    start = time.perf_counter()
    x, y = resample_data(problem, run)
    model, loss_fn = new_model(problem, run), problem.parts.loss_fn
    optimizer = problem.parts.make_optim(model.parameters(), lr=run.lr)
    curve_epoch, curve_loss, stopped, epoch = [], [], False, 0
    for epoch in range(settings.epochs):
        loss = loss_fn(model(x), y)
        if epoch % settings.log_every == 0:  # .item() syncs a GPU: only at log steps
            curve_epoch.append(epoch)
            curve_loss.append(loss.item())
            if not bool(finite_runs(loss.detach(), _flat(model))):
                stopped = True
                break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    else:
        epoch = settings.epochs
    final_loss, grad_norm = _loss_and_grad_norm(model, loss_fn, x, y)
    params = _flat(model).double().cpu().tolist()
    ols, ols_loss, rank = _closed_form(model, loss_fn, x, y) if problem.parts.closed_form else (None, None, None)
    known = problem.parts.optimum_known
    (status,), (note,) = run_statuses(
        np.array([stopped]),
        np.array([epoch]),
        np.array([final_loss]),
        np.array([params]),
        np.array([grad_norm]),
        settings,
        np.array([ols]) if known else None,
        np.array([rank]) if known else None,
    )
    curve_epoch, curve_loss = closed_curve(curve_epoch, curve_loss, epoch, final_loss, status)
    result = RunResult(
        run,
        params,
        final_loss,
        _test_loss(problem, model),
        grad_norm,
        epoch,
        status,
        curve_epoch,
        curve_loss,
        ols,
        ols_loss,
        device=str(problem.device),
        engine=ENGINE,
        status_note=note,
    )
    result.wall_time = time.perf_counter() - start
    return result


def _loss_and_grad_norm(model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    grads = [p.grad.reshape(-1) for p in model.parameters() if p.grad is not None]
    return float(loss.item()), float(torch.cat(grads).norm().item()) if grads else 0.0


def _test_loss(problem: Problem, model: nn.Module) -> Optional[float]:
    if problem.x_test is None:
        return None
    with torch.no_grad():
        return float(problem.parts.loss_fn(model(problem.x_test), problem.y_test).item())


def _closed_form(
    model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[list[float], float, int]:
    """The least-squares fit of the run's rows, its loss, and the rank of their design."""
    features = model.features(x.double())
    coef = least_squares(features, y)
    with torch.no_grad():
        loss = loss_fn((features.cpu() @ coef).unsqueeze(-1), y.double().cpu())
    return coef.tolist(), float(loss), int(torch.linalg.matrix_rank(features.cpu()))
