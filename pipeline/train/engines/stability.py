"""Each run's learning-rate bounds (`stats.lr_bound`: lr_max_stable, lr_fastest, rate,
epochs_to_tol), computed in the task from the run's own moments, for SGD on a least-squares
fit, and stored with the run (aggregation reads them instead of drawing every row again).

H = 2 s F^T W F is the Hessian of the run's loss (W: its row counts); its eigenvalues, one
LAPACK call per run (`torch.linalg.eigvalsh`), and the gradient norm at the run's start give
the four columns, for all runs at once (`stats.lr_bound.stability_columns`).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from pipeline.core.runs import Run
from pipeline.core.settings import TrainSettings
from pipeline.stats.lr_bound import stability_columns
from pipeline.train.engines.moments import DrawMoments, MomentLosses, RowProducts, loss_scales
from pipeline.train.engines.stacked import features_of, initial_vectors
from pipeline.train.engines.stacked_optim import SGDSettings, optimizer_settings
from pipeline.train.problem import Problem


def bound_rule(problem: Problem) -> Optional[SGDSettings]:
    """The SGD settings whose bounds apply to this problem; None when none do (no closed form,
    another optimiser, or `maximize`)."""
    if not problem.parts.closed_form:
        return None
    settings = optimizer_settings(problem.parts.make_optim)
    return settings if isinstance(settings, SGDSettings) and not settings.maximize else None


def moment_losses(problem: Problem, runs: list[Run]) -> Optional[MomentLosses]:
    """The moments of `runs` (one resample size) and their losses; None when the rows have no
    moments (features not finite in the training dtype)."""
    with torch.no_grad():
        features = features_of(problem.parts.make_model(), problem.x.double().unsqueeze(0))[0]
    products = RowProducts.of(problem, features)
    if products is None:
        return None
    moments = DrawMoments.of(problem, products, runs)
    return MomentLosses(products, moments, loss_scales(problem, moments.n_rows))


def run_stability(
    problem: Problem,
    runs: list[Run],
    settings: TrainSettings,
    losses: Optional[MomentLosses] = None,
    theta0: Optional[torch.Tensor] = None,
) -> Optional[np.ndarray]:
    """(runs, 4) bounds of `runs` (one resample size), or None where they do not apply;
    `losses` and `theta0` (float64): the runs' moments and starts, if the caller has them."""
    rule = bound_rule(problem)
    if rule is None or not runs:
        return None
    losses = moment_losses(problem, runs) if losses is None else losses
    if losses is None:
        return np.full((len(runs), 4), np.nan)
    theta0 = initial_vectors(problem, runs)[1].double() if theta0 is None else theta0
    hessian = (2 * losses.scale[:, None, None] * losses.gram).cpu()
    finite = torch.isfinite(hessian).all(dim=2).all(dim=1)  # F^T F may overflow (x near 1e200)
    lams = torch.full(hessian.shape[:2], torch.nan, dtype=hessian.dtype)
    lams[finite] = torch.linalg.eigvalsh(hessian[finite])
    lams = lams.numpy() + rule.weight_decay
    g0 = losses.grad(theta0).norm(dim=1).cpu().numpy()
    lrs = np.array([run.lr for run in runs], dtype=np.float64)
    return stability_columns(lams, lrs, g0, rule, settings.grad_tol)
