"""The learning rate at which full-batch SGD on a least-squares fit stays stable, per run.

For a model linear in its parameters fitted by MSELoss, the loss is quadratic with the
Hessian H = s F^T F (F: the features of the run's rows; s = 2/n for the mean, 2 for the
sum), so one epoch of `torch.optim.SGD` is a linear map of the error theta - theta*,
mode by mode along the eigenvectors of H' = H + weight_decay I (eigenvalues lambda):
    plain       e <- (1 - lr lambda) e                      stable iff 0 < lr < 2 / lambda_max
    heavy ball  v <- m v + c lambda e, e <- e - lr v          stable iff 0 < lr < 2 (1 + m) / (c lambda_max)
    Nesterov    v <- m v + c lambda e, e <- e - lr (lambda e + m v)
                                                    stable iff 0 < lr < 2 (1 + m) / ((1 + m (1 + c)) lambda_max)
(m momentum, c = 1 - dampening; the last two follow from the Jury conditions on each
mode's 2 x 2 map, |trace| < 1 + det < 2; torch starts the buffer at the first gradient,
which changes the first step, not the stability). Without momentum the fastest
learning rate is 2 / (lambda_min + lambda_max); with momentum it is found numerically,
minimising the spectral radius of the modes' maps. The predicted epochs to
`train.grad_tol` are log(tol / g0) / log(rate), g0 the gradient norm at the run's start
and rate that spectral radius at the run's learning rate (directions with lambda = 0
carry no gradient and are left out). With weight decay the fit tends to the ridge
solution, whose loss gradient is not 0: the epochs are then NaN. numpy only, vectorised
over runs (`stability_columns`): each task computes them from its runs' moments
(`train.engines.stability`); aggregation, for runs of older parts, from design.parquet.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from pipeline.core.resampling import DRAW_RULE, draw_arrays, residual_fit
from pipeline.core.runs import STABILITY_COLUMNS
from pipeline.core.settings import SGD_TARGET, SGDSettings
from pipeline.stats.studentized import draw_keys

log = logging.getLogger(__name__)


COLUMNS = STABILITY_COLUMNS


AUTO = "auto"


# sweep.lr=auto: these shares of the original rows' stability bound, and the fastest rate
AUTO_SHARES = (0.1, 0.3, 0.5, 0.9, 0.99)


def sgd_rule(optim: Any) -> Optional[SGDSettings]:
    """The SGD settings of an `optim` config section; None when it is not plain SGD (another
    optimiser, or `maximize`, which climbs the loss)."""
    settings = SGDSettings.from_config(optim)
    return None if settings is None or settings.maximize else settings


def loss_factor(reduction: str, n_rows: int) -> float:
    """s of the Hessian s F^T F: 2/n for MSELoss(reduction="mean"), 2 for "sum"."""
    return 2.0 / n_rows if reduction == "mean" else 2.0


def curvatures(gram: np.ndarray, factor: float, rule: SGDSettings) -> np.ndarray:
    """Eigenvalues of H + weight_decay I, ascending, with H = factor * F^T F."""
    return np.linalg.eigvalsh(factor * gram) + rule.weight_decay


def max_stable_lrs(lam_max: np.ndarray, rule: SGDSettings) -> np.ndarray:
    """The largest stable learning rate (exclusive) for each largest curvature: see the module docstring."""
    lam_max = np.asarray(lam_max, dtype=float)
    m, c = rule.momentum, 1.0 - rule.dampening
    with np.errstate(divide="ignore", invalid="ignore"):
        if m == 0:
            bound = 2.0 / lam_max
        elif rule.nesterov:
            bound = 2.0 * (1 + m) / ((1 + m * (1 + c)) * lam_max)
        else:
            bound = 2.0 * (1 + m) / (c * lam_max) if c > 0 else np.full_like(lam_max, math.inf)
    return np.where((lam_max > 0) & (0 <= m < 1), bound, math.nan)


def max_stable_lr(lam_max: float, rule: SGDSettings) -> float:
    return float(max_stable_lrs(np.array([lam_max]), rule)[0])


def mode_maps(lr: float, lams: np.ndarray, rule: SGDSettings) -> np.ndarray:
    """(modes, 2, 2): each mode's epoch map on (error, momentum buffer)."""
    m, c = rule.momentum, 1.0 - rule.dampening
    a = lr * lams
    if rule.nesterov:
        top = np.stack([1 - a * (1 + m * c), np.full_like(a, -lr * m * m)], axis=-1)
    else:
        top = np.stack([1 - a * c, np.full_like(a, -lr * m)], axis=-1)
    bottom = np.stack([c * lams, np.full_like(a, m)], axis=-1)
    return np.stack([top, bottom], axis=-2)


def mode_radii(a: np.ndarray, rule: SGDSettings) -> np.ndarray:
    """The spectral radius of each mode's epoch map, given a = lr * lambda (any shape): the roots
    of the 2 x 2 map's r^2 - trace r + det, in closed form."""
    if rule.momentum == 0:
        return np.abs(1 - a)
    m, c = rule.momentum, 1.0 - rule.dampening
    top_left = 1 - a * (1 + m * c) if rule.nesterov else 1 - a * c
    off = (m * m if rule.nesterov else m) * c * a  # minus the product of the off-diagonal entries
    trace, det = top_left + m, top_left * m + off
    disc = np.sqrt((trace * trace - 4 * det).astype(complex))
    return np.maximum(np.abs((trace + disc) / 2), np.abs((trace - disc) / 2))


def radii(lrs: np.ndarray, lams: np.ndarray, rule: SGDSettings) -> np.ndarray:
    """(len(lrs),) spectral radius of one epoch at each learning rate, over the modes `lams`."""
    return mode_radii(np.asarray(lrs, dtype=float)[:, None] * lams[None, :], rule).max(axis=1)


def live_modes(lams: np.ndarray) -> np.ndarray:
    """(runs, modes) True where a mode carries gradient (lambda > 0, beyond rounding of the largest)."""
    return lams > np.maximum(lams.max(axis=-1, initial=0.0), 0.0)[..., None] * 1e-12


def contractions(lrs: np.ndarray, lams: np.ndarray, rule: SGDSettings) -> np.ndarray:
    """(runs,) the spectral radius of one epoch at each run's lr over its modes that carry
    gradient; `lams`: (runs, modes). NaN for a run without such a mode."""
    live = live_modes(lams)
    rates = np.where(live, mode_radii(np.asarray(lrs, dtype=float)[:, None] * lams, rule), 0.0).max(axis=1)
    return np.where(live.any(axis=1), rates, math.nan)


def contraction(lr: float, lams: np.ndarray, rule: SGDSettings) -> float:
    """The spectral radius of one epoch over the modes that carry gradient (lambda > 0)."""
    return float(contractions(np.array([lr]), np.asarray(lams, dtype=float)[None, :], rule)[0])


_GOLDEN = (math.sqrt(5) - 1) / 2


def fastest_lrs(lams: np.ndarray, rule: SGDSettings) -> np.ndarray:
    """(runs,) the learning rate of the smallest contraction over each run's modes (runs, modes):
    2 / (lambda_min + lambda_max) without momentum; with momentum, numerically, for all runs at
    once: a geometric grid brackets the minimum of the (unimodal) spectral radius, and a golden
    section search narrows the bracket to 1e-12 of the stable bound."""
    lams = np.asarray(lams, dtype=float)
    live = live_modes(lams)
    some = live.any(axis=1)
    lam_min = np.where(live, lams, np.inf).min(axis=1)
    lam_max = np.where(live, lams, -np.inf).max(axis=1)
    if rule.momentum == 0:
        with np.errstate(invalid="ignore"):
            return np.where(some, 2.0 / (lam_min + lam_max), math.nan)
    bound = max_stable_lrs(np.where(some, lam_max, 0.0), rule)
    ok = some & np.isfinite(bound)
    bound = np.where(ok, bound, 1.0)

    def rate(lrs: np.ndarray) -> np.ndarray:  # (runs, k) learning rates -> (runs, k) contractions
        radius = mode_radii(lrs[:, :, None] * lams[:, None, :], rule)
        return np.where(live[:, None, :], radius, 0.0).max(axis=2)

    grid = bound[:, None] * np.geomspace(1e-4, 1 - 1e-9, 200)[None, :]
    best = rate(grid).argmin(axis=1)
    rows = np.arange(len(lams))
    lo, hi = grid[rows, np.maximum(best - 1, 0)], grid[rows, np.minimum(best + 1, grid.shape[1] - 1)]
    x1, x2 = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
    f1, f2 = rate(x1[:, None])[:, 0], rate(x2[:, None])[:, 0]
    while np.any(hi - lo > 1e-12 * bound):
        left = f1 <= f2  # the minimum lies in [lo, x2]: x1 becomes the new x2; else in [x1, hi]
        lo, hi = np.where(left, lo, x1), np.where(left, x2, hi)
        fresh = np.where(left, hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo))
        f_fresh = rate(fresh[:, None])[:, 0]
        x1, x2 = np.where(left, fresh, x2), np.where(left, x1, fresh)
        f1, f2 = np.where(left, f_fresh, f2), np.where(left, f1, f_fresh)
    return np.where(ok, (lo + hi) / 2, math.nan)


def fastest_lr(lams: np.ndarray, rule: SGDSettings) -> float:
    return float(fastest_lrs(np.asarray(lams, dtype=float)[None, :], rule)[0])


def epochs_to_tols(rate: np.ndarray, g0: np.ndarray, tol: float) -> np.ndarray:
    """log(tol / g0) / log(rate) per run: 0 when the start is already within tol, 1 when rate is 0
    (every mode solved in one step), inf when rate >= 1, NaN when rate or g0 is not finite."""
    rate, g0 = np.asarray(rate, dtype=float), np.asarray(g0, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        steps = np.log(tol / g0) / np.log(rate)
    out = np.where(rate >= 1, math.inf, np.where(rate <= 0, 1.0, steps))
    out = np.where(g0 <= tol, 0.0, out)
    return np.where(np.isfinite(rate) & np.isfinite(g0), out, math.nan)


def epochs_to_tol(rate: float, g0: float, tol: float) -> float:
    return float(epochs_to_tols(np.array([rate]), np.array([g0]), tol)[0])


def stability_columns(lams: np.ndarray, lrs: np.ndarray, g0: np.ndarray, rule: SGDSettings, tol: float) -> np.ndarray:
    """(runs, 4): the `COLUMNS` of runs at `lrs` whose curvatures (eigenvalues of H + weight_decay
    I, ascending) are `lams` (runs, modes) and whose gradient norm at the start is `g0`."""
    lams = np.asarray(lams, dtype=float)
    with np.errstate(over="ignore", invalid="ignore"):  # a design too large for float64: NaN columns
        rate = contractions(lrs, lams, rule)
        epochs = epochs_to_tols(rate, g0, tol) if rule.weight_decay == 0 else np.full(len(lams), math.nan)
        return np.column_stack([max_stable_lrs(lams[:, -1], rule), fastest_lrs(lams, rule), rate, epochs])


@dataclass(frozen=True)
class RowsCurvature:
    """What one set of rows fixes, whatever the learning rate and start: shared by the runs on them."""

    factor: float
    gram: np.ndarray  # F^T F
    moment: np.ndarray  # F^T y
    lams: np.ndarray  # eigenvalues of H + weight_decay I

    @classmethod
    def of(cls, features: np.ndarray, y: np.ndarray, reduction: str, rule: SGDSettings) -> "RowsCurvature":
        # x too large for float64 (near 1e200) overflows F^T F: the bound is then NaN, not a warning
        with np.errstate(over="ignore", invalid="ignore"):
            factor, gram, moment = loss_factor(reduction, len(y)), features.T @ features, features.T @ y
        if not np.isfinite(gram).all():
            return cls(factor, gram, moment, np.full(len(gram), np.nan))
        return cls(factor, gram, moment, curvatures(gram, factor, rule))

    def start_gradient(self, theta0: np.ndarray) -> float:
        """The gradient norm at `theta0` on these rows (NaN where F^T F overflowed)."""
        with np.errstate(over="ignore", invalid="ignore"):
            return float(np.linalg.norm(self.factor * (self.gram @ theta0 - self.moment)))


def _starts(runs: pd.DataFrame, n_params: int) -> np.ndarray:
    """(runs, n_params) initial parameters; None: the feature models' own start, zeros."""
    inits = runs["init"] if "init" in runs.columns else pd.Series([None] * len(runs), index=runs.index)
    return np.array(
        [np.zeros(n_params) if v is None or len(v) == 0 else np.asarray(v, dtype=float) for v in inits]
    ).reshape(len(runs), n_params)


def bounds_frame(
    runs: pd.DataFrame,
    X: np.ndarray,
    y: np.ndarray,
    reduction: str,
    rule: SGDSettings,
    tol: float,
    seen: Optional[dict] = None,
    draw_rule: str = DRAW_RULE,
    draw_settings: Optional[Mapping[str, Any]] = None,
) -> pd.DataFrame:
    """`COLUMNS` for every run (index as `runs`), each from its own rows (drawn by `draw_rule` and
    `draw_settings`, the folder's), for folders whose parts do not carry them (tasks compute them since the Gram
    engine ran on moments). `seen` keeps each draw's curvature across calls (aggregation calls
    this once per grid cell, with the same draws in each)."""
    seen = {} if seen is None else seen
    keys = draw_keys(runs)
    new = [key for key in dict.fromkeys(keys) if key not in seen]  # the same draw in every cell: once
    if new:
        fit = residual_fit(X, y)
        for key in new:
            designs, responses = draw_arrays(X, y, [key], draw_rule, fit, draw_settings)
            seen[key] = RowsCurvature.of(designs[0], responses[0], reduction, rule)
    if not keys:
        return pd.DataFrame(index=runs.index, columns=list(COLUMNS), dtype=float)
    starts = _starts(runs, X.shape[1])
    g0 = np.array([seen[key].start_gradient(theta0) for key, theta0 in zip(keys, starts)])
    lams = np.stack([seen[key].lams for key in keys])
    columns = stability_columns(lams, runs["lr"].to_numpy(dtype=float), g0, rule, tol)
    return pd.DataFrame(columns, index=runs.index, columns=list(COLUMNS))


def why_no_bound(config: dict[str, Any], closed_form: bool) -> Optional[str]:
    """Why the bound does not apply to this sweep's model, loss and optimiser; None when it does."""
    optim, loss = config.get("optim") or {}, config.get("loss") or {}
    if not closed_form:
        return (
            f"model {(config.get('model') or {}).get('_target_')!r} with loss {loss.get('_target_')!r} is not "
            "a model linear in its parameters fitted by MSELoss"
        )
    if sgd_rule(optim) is None:
        return (
            f"optimiser {optim.get('_target_')!r}{' with maximize' if optim.get('maximize') else ''} is not "
            f"{SGD_TARGET} (the bound is that of SGD's epoch map)"
        )
    return None


def auto_lr_grid(
    features: np.ndarray, reduction: str, rule: SGDSettings, shares: Sequence[float] = AUTO_SHARES
) -> list[float]:
    """`sweep.lr=auto`: shares of the original rows' stability bound and the fastest rate, ascending."""
    lams = curvatures(features.T @ features, loss_factor(reduction, len(features)), rule)
    bound = max_stable_lr(float(lams[-1]), rule)
    values = [bound * s for s in shares] + [fastest_lr(lams, rule)]
    return sorted({float(f"{v:.4g}") for v in values if math.isfinite(v) and 0 < v < bound})


def resolve_auto_lr(cfg: dict[str, Any], features: Optional[np.ndarray], reduction: str) -> tuple[dict, list[str]]:
    """The config with `sweep.lr: auto` replaced by `auto_lr_grid`, and what stops that.
    Anything else in `sweep.lr` is left for prepare's own checks."""
    lrs = cfg["sweep"]["lr"]
    if not isinstance(lrs, str):
        return cfg, []
    if lrs.strip().lower() != AUTO:
        return cfg, [f"`sweep.lr` must be a list of learning rates, null or auto; got {lrs!r}"]
    reason = why_no_bound(cfg, features is not None)
    if reason:
        return cfg, [f"`sweep.lr` auto needs the stability bound of SGD on a least-squares fit: {reason}"]
    grid = auto_lr_grid(features, reduction, sgd_rule(cfg["optim"]))
    if not grid:
        return cfg, ["`sweep.lr` auto found no stable learning rate (momentum >= 1, or features all zero)"]
    log.info("sweep.lr=auto: learning rates %s, around the original rows' stability bound", grid)
    return {**cfg, "sweep": {**cfg["sweep"], "lr": grid}}, []
