"""A run's fate, decided the same way by every engine: the reference loop's rules.

Divergence is checked at logged epochs only (a GPU sync each): a run whose loss or
parameters are not finite there stops with the parameters it had. At the end
(`run_statuses`, the one place a status is decided) a run is
- `diverged` if it stopped or its final loss or parameters are not finite;
- where the optimum is known (a model linear in its parameters fitted by MSE, without
  weight decay: the closed-form least-squares fit of the run's own rows, unique when
  its design has full rank), `ok` only when its parameters lie within `train.param_tol`
  of that optimum, relative to the parameters' scale (the largest |closed-form
  parameter|), else `not_converged`: a small gradient says little in an ill-conditioned
  valley, where the parameters can be far from the optimum while the gradient vanishes;
- elsewhere (no closed form, or not a unique one) `ok` when its final gradient norm is
  at most `train.grad_tol`, else `not_converged`.
Every run that is not `ok` gets a `status_note` saying why, with the numbers.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

from pipeline.core.runs import DIVERGED, NOT_CONVERGED, OK
from pipeline.core.settings import TrainSettings


def finite_runs(loss: Tensor, params: Tensor) -> Tensor:
    """(runs,) True where the loss and every parameter are finite: alive at a logged epoch."""
    return torch.isfinite(loss) & torch.isfinite(params).all(dim=-1)


def parameter_gap(params: np.ndarray, ols: np.ndarray) -> np.ndarray:
    """(runs,) largest |parameter - closed form| over the largest |closed-form parameter|:
    the distance to the optimum relative to the parameters' scale (fitted units)."""
    scale = np.abs(ols).max(axis=1)
    gap = np.abs(params - ols).max(axis=1)
    return gap / np.where(scale > 0, scale, 1.0)  # all-zero optimum: the absolute gap


def run_statuses(
    stopped: np.ndarray,
    epochs: np.ndarray,
    final_loss: np.ndarray,
    params: np.ndarray,
    grad_norm: np.ndarray,
    settings: TrainSettings,
    ols: Optional[np.ndarray] = None,
    ols_rank: Optional[np.ndarray] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(status, status_note) of each run, as object arrays: the rules of the module's docstring.

    `stopped`: (runs,) found not finite at a logged epoch, `epochs` (runs,) where each ended;
    `params` (runs, p); `ols` (runs, p): each run's closed-form optimum, None where the
    optimum is not known (no closed form, weight decay); `ols_rank` (runs,): the rank of
    each run's design (None: full), below p the optimum is not unique.
    """
    stopped = np.asarray(stopped, dtype=bool)
    params, grad = np.asarray(params, dtype=np.float64), np.asarray(grad_norm, dtype=np.float64)
    finite = np.isfinite(np.asarray(final_loss, dtype=np.float64)) & np.isfinite(params).all(axis=1)
    diverged = stopped | ~finite
    by_gradient = grad <= settings.grad_tol
    gap = np.full(len(params), np.nan)
    unique = np.zeros(len(params), dtype=bool)
    if ols is not None:
        unique = np.ones(len(params), dtype=bool) if ols_rank is None else np.asarray(ols_rank) >= params.shape[1]
        unique &= np.isfinite(ols).all(axis=1)
        with np.errstate(invalid="ignore", over="ignore"):
            gap = np.where(unique, parameter_gap(params, np.asarray(ols, dtype=np.float64)), np.nan)
    ok = np.where(unique, gap <= settings.param_tol, by_gradient) & ~diverged
    status = np.where(diverged, DIVERGED, np.where(ok, OK, NOT_CONVERGED)).astype(object)
    note = np.full(len(params), "", dtype=object)
    for i in np.flatnonzero(~ok | (ols is not None) & ~unique):  # the reasons, for the few that need one
        note[i] = _reason(
            bool(stopped[i]),
            int(epochs[i]),
            bool(diverged[i]),
            float(gap[i]),
            float(grad[i]),
            settings,
            ols is not None,
        )
    return status, note


def _reason(
    stopped: bool, epoch: int, diverged: bool, gap: float, grad: float, settings: TrainSettings, has_ols: bool
) -> str:
    """Why a run is not ok (or, for a run judged by its gradient although the model has a
    closed form, why the gradient decided), in words and numbers."""
    if stopped:
        return f"loss or parameters not finite at logged epoch {epoch}: stopped there"
    if diverged:
        return "final loss or parameters not finite"
    if np.isfinite(gap):
        far = (
            f"parameters {gap:.2g} of their scale from the closed-form optimum (train.param_tol={settings.param_tol:g})"
        )
        if grad <= settings.grad_tol:  # the case the gradient rule alone would have called ok
            return (
                f"{far}, though the gradient norm {grad:.2g} is below train.grad_tol: an ill-conditioned "
                "valley, where the gradient vanishes long before the parameters arrive"
            )
        return f"{far}; gradient norm {grad:.2g}"
    reasons = ["closed-form optimum not unique (rank-deficient design): judged by the gradient"] if has_ols else []
    if grad > settings.grad_tol:
        reasons.append(f"final gradient norm {grad:.2g} above train.grad_tol={settings.grad_tol:g}")
    return "; ".join(reasons)


def closed_curve(
    curve_epoch: list[int], curve_loss: list[float], end: int, final_loss: float, status: str
) -> tuple[list[int], list[float]]:
    """The logged curve, ending at the final epoch's loss unless the run diverged."""
    if status != DIVERGED and (not curve_epoch or curve_epoch[-1] != end):
        return [*curve_epoch, end], [*curve_loss, final_loss]
    return curve_epoch, curve_loss


class LiveRuns:
    """Which runs of a batch are still training, where each one stopped, and its final parameters."""

    def __init__(self, params: Tensor):
        self.index = torch.arange(params.shape[0], device=params.device)
        self.stopped_at: list[Optional[int]] = [None] * params.shape[0]
        self.final = params.clone()

    def check(self, epoch: int, loss: Tensor, params: Tensor) -> Optional[Tensor]:
        """Stop the live runs that are not finite at this logged epoch, keeping their parameters.

        Returns the positions (among the live runs) that go on, or None when all do.
        """
        ok = finite_runs(loss, params)
        if bool(ok.all()):
            return None
        self.final[self.index[~ok]] = params[~ok]
        for i in self.index[~ok].tolist():
            self.stopped_at[i] = epoch
        keep = ok.nonzero().squeeze(1)
        self.index = self.index[keep]
        return keep

    def finish(self, params: Tensor) -> None:
        """The runs still live at the end hold these parameters."""
        self.final[self.index] = params

    def __len__(self) -> int:
        return len(self.index)
