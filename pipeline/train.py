"""Train the runs of one task: the textbook loop, one run after the other.

`train_reference` is the definition of a correct run: forward, loss module,
`backward()`, `torch.optim` step, `zero_grad()`. Any faster engine must give the same
numbers (see `train_chunk`). Divergence is checked where the loss is logged, so a
NaN run is stopped and marked, and never raises.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Any, Callable, Optional

import torch
from hydra.utils import instantiate
from torch import nn

from pipeline.config import ConfigError
from pipeline.data import Dataset
from pipeline.models import is_linear_in_parameters, least_squares, scalar_parameter_names
from pipeline.plan import RESIDUAL, Run, resample_rows

log = logging.getLogger(__name__)

OK, NOT_CONVERGED, DIVERGED = "ok", "not_converged", "diverged"
STATUSES = (OK, NOT_CONVERGED, DIVERGED)


@dataclass(frozen=True)
class ProblemParts:
    """The instantiated pieces of an experiment, checked against its data."""

    make_model: Callable[[], nn.Module]
    loss_fn: nn.Module
    make_optim: Callable[..., torch.optim.Optimizer]
    param_names: tuple[str, ...]
    closed_form: bool  # linear in its parameters and fitted by MSE: OLS is the optimum

    @property
    def n_params(self) -> int:
        return len(self.param_names)


@dataclass
class Problem:
    """What every run of a task shares: the parts, and the data on the task's device."""

    parts: ProblemParts
    x: torch.Tensor
    y: torch.Tensor
    x_test: Optional[torch.Tensor]
    y_test: Optional[torch.Tensor]
    device: torch.device
    dtype: torch.dtype

    @cached_property
    def ols_fit(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Fitted values and residuals of the OLS fit on the original rows (residual resampling)."""
        features = self.parts.make_model().features(self.x.double())
        fitted = (features.cpu() @ least_squares(features, self.y)).unsqueeze(-1)
        residuals = self.y.double().cpu() - fitted
        on_device = partial(torch.as_tensor, device=self.device, dtype=self.dtype)
        return on_device(fitted), on_device(residuals)


def resample_data(problem: Problem, run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    """The (x, y) a run trains on. Case resampling takes the drawn rows; residual
    resampling keeps every x and adds the drawn rows' OLS residuals to the fitted values."""
    rows = torch.as_tensor(resample_rows(problem.x.shape[0], run.seed, run.resample), device=problem.device)
    if run.scheme == RESIDUAL and run.resample > 0:
        fitted, residuals = problem.ols_fit
        return problem.x, fitted + residuals[rows]
    return problem.x[rows], problem.y[rows]


@dataclass
class RunResult:
    """A finished run, whatever its status: crosses from train to record."""

    run: Run
    params: list[float]
    final_loss: float
    test_loss: Optional[float]
    grad_norm: float
    epochs: int
    status: str
    curve_epoch: list[int] = field(default_factory=list)
    curve_loss: list[float] = field(default_factory=list)
    ols: Optional[list[float]] = None  # closed-form fit on the same rows, if linear
    ols_loss: Optional[float] = None
    wall_time: float = 0.0
    device: str = "cpu"
    engine: str = "reference"


def _instantiate(spec: Any, key: str, **kwargs: Any) -> Any:
    try:
        return instantiate(spec, **kwargs)
    except Exception as err:  # noqa: BLE001 - Hydra wraps import and argument errors alike
        target = spec.get("_target_") if isinstance(spec, dict) else spec
        raise ConfigError([f"`{key}._target_` {target!r} cannot be built: {err}"]) from err


def build_problem_parts(cfg: dict[str, Any], dataset: Dataset) -> ProblemParts:
    """Instantiate model, loss and optimiser once, and check the model fits the data."""
    make_model = partial(_instantiate, cfg["model"], "model")
    model = make_model()
    loss_fn = _instantiate(cfg["loss"], "loss")
    make_optim = _instantiate(cfg["optim"], "optim", _partial_=True)
    with torch.no_grad():
        try:
            out = model(torch.tensor(dataset.x[:2], dtype=torch.float32))
        except Exception as err:  # noqa: BLE001
            raise ConfigError([f"`model`: forward pass on 2 rows of {dataset.x.shape[1]} x columns failed: {err}"]) from err
    if tuple(out.shape) != (min(2, dataset.n_rows), dataset.y.shape[1]):
        raise ConfigError([
            f"`model`: output shape {tuple(out.shape)} does not match y {dataset.y_names} "
            f"(expected (rows, {dataset.y.shape[1]}))"
        ])
    closed_form = is_linear_in_parameters(model) and isinstance(loss_fn, nn.MSELoss)
    return ProblemParts(make_model, loss_fn, make_optim, tuple(scalar_parameter_names(model)), closed_form)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_problem(cfg: dict[str, Any], dataset: Dataset) -> Problem:
    device = pick_device(cfg["train"]["device"])
    dtype = getattr(torch, cfg["train"]["dtype"])
    parts = build_problem_parts(cfg, dataset)
    on_device = partial(torch.tensor, device=device, dtype=dtype)  # a copy: pandas arrays may be read-only
    has_test = dataset.x_test is not None
    return Problem(parts, on_device(dataset.x), on_device(dataset.y),
                   on_device(dataset.x_test) if has_test else None,
                   on_device(dataset.y_test) if has_test else None, device, dtype)


def new_model(problem: Problem, run: Run) -> nn.Module:
    """The run's model on the device, from its init vector or a seeded default init."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(run.seed * 100_003 + run.init_index)
        model = problem.parts.make_model()
    model = model.to(device=problem.device, dtype=problem.dtype)
    if run.init is not None:
        vec = torch.tensor(run.init, device=problem.device, dtype=problem.dtype)
        nn.utils.vector_to_parameters(vec, model.parameters())
    return model


def _flat(model: nn.Module) -> torch.Tensor:
    return nn.utils.parameters_to_vector(model.parameters()).detach()


def _loss_and_grad_norm(model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    grads = [p.grad.reshape(-1) for p in model.parameters() if p.grad is not None]
    return float(loss.item()), float(torch.cat(grads).norm().item()) if grads else 0.0


def train_reference(problem: Problem, run: Run, train_cfg: dict[str, Any]) -> RunResult:
    """The textbook loop for one run (full-batch gradient descent on its resample)."""
    start = time.perf_counter()
    x, y = resample_data(problem, run)
    model, loss_fn = new_model(problem, run), problem.parts.loss_fn
    optimizer = problem.parts.make_optim(model.parameters(), lr=run.lr)
    epochs, log_every = int(train_cfg["epochs"]), int(train_cfg["log_every"])
    curve_epoch, curve_loss, diverged, epoch = [], [], False, 0
    for epoch in range(epochs):
        loss = loss_fn(model(x), y)
        if epoch % log_every == 0:  # .item() syncs a GPU: only at log steps
            value = loss.item()
            curve_epoch.append(epoch)
            curve_loss.append(value)
            if not (math.isfinite(value) and bool(torch.isfinite(_flat(model)).all())):
                diverged = True
                break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    else:
        epoch = epochs
    final_loss, grad_norm = _loss_and_grad_norm(model, loss_fn, x, y)
    params = _flat(model)
    diverged = diverged or not (math.isfinite(final_loss) and bool(torch.isfinite(params).all()))
    if not diverged and (not curve_epoch or curve_epoch[-1] != epoch):
        curve_epoch.append(epoch)
        curve_loss.append(final_loss)
    status = DIVERGED if diverged else (NOT_CONVERGED if not grad_norm <= train_cfg["grad_tol"] else OK)
    result = RunResult(run, params.double().cpu().tolist(), final_loss, _test_loss(problem, model),
                       grad_norm, epoch, status, curve_epoch, curve_loss, device=str(problem.device))
    if problem.parts.closed_form:
        result.ols, result.ols_loss = _closed_form(model, loss_fn, x, y)
    result.wall_time = time.perf_counter() - start
    return result


def _test_loss(problem: Problem, model: nn.Module) -> Optional[float]:
    if problem.x_test is None:
        return None
    with torch.no_grad():
        return float(problem.parts.loss_fn(model(problem.x_test), problem.y_test).item())


def _closed_form(model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[list[float], float]:
    features = model.features(x.double())
    coef = least_squares(features, y)
    with torch.no_grad():
        loss = loss_fn((features.cpu() @ coef).unsqueeze(-1), y.double().cpu())
    return coef.tolist(), float(loss)


def train_chunk(problem: Problem, runs: list[Run], train_cfg: dict[str, Any],
                on_run_done: Optional[Callable[[RunResult], None]] = None,
                on_batch_done: Optional[Callable[[list[RunResult]], None]] = None) -> list[RunResult]:
    """Train a task's runs with the configured engine; `auto` picks the fastest that applies.

    `on_run_done` gets each result; `on_batch_done` each group of results finished
    together (one run for the reference loop, a whole batch for the fast engines), so
    a caller can save progress once per group rather than once per run.
    """
    from pipeline.engines import choose_engine, train_fast  # engines build on this module

    choice = choose_engine(problem.parts, train_cfg["engine"])
    log.info("%d runs, engine %s (%s)", len(runs), choice.name, choice.reason)

    def done(results: list[RunResult]) -> None:
        if on_run_done is not None:
            for result in results:
                on_run_done(result)
        if on_batch_done is not None:
            on_batch_done(results)

    if choice.name != "reference":
        return train_fast(choice.name, problem, runs, train_cfg, done)
    results = []
    for run in runs:
        result = train_reference(problem, run, train_cfg)
        results.append(result)
        done([result])
    return results


__all__ = ["RunResult", "Problem", "build_problem", "resample_data", "train_reference", "train_chunk",
           "OK", "NOT_CONVERGED", "DIVERGED", "STATUSES"]
