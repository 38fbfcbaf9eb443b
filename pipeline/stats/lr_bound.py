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
solution, whose loss gradient is not 0: the epochs are then NaN. numpy and scipy only;
computed at aggregation from design.parquet and each run's resample.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from pipeline.core.resampling import DRAW_RULE, draw_arrays, residual_fit
from pipeline.core.settings import SGD_TARGET, SGDSettings
from pipeline.stats.studentized import draw_keys

log = logging.getLogger(__name__)


COLUMNS = ("lr_max_stable", "lr_fastest", "rate", "epochs_to_tol")


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


def max_stable_lr(lam_max: float, rule: SGDSettings) -> float:
    """The largest stable learning rate (exclusive): see the module docstring."""
    m, c = rule.momentum, 1.0 - rule.dampening
    if lam_max <= 0 or not 0 <= m < 1:
        return math.nan
    if m == 0:
        return 2.0 / lam_max
    if rule.nesterov:
        return 2.0 * (1 + m) / ((1 + m * (1 + c)) * lam_max)
    return 2.0 * (1 + m) / (c * lam_max) if c > 0 else math.inf


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


def radii(lrs: np.ndarray, lams: np.ndarray, rule: SGDSettings) -> np.ndarray:
    """(len(lrs),) spectral radius of one epoch at each learning rate, over the modes `lams`:
    the roots of each 2 x 2 map's r^2 - trace r + det, in closed form (vectorised)."""
    a = np.asarray(lrs, dtype=float)[:, None] * lams[None, :]
    if rule.momentum == 0:
        return np.abs(1 - a).max(axis=1)
    m, c = rule.momentum, 1.0 - rule.dampening
    top_left = 1 - a * (1 + m * c) if rule.nesterov else 1 - a * c
    off = (m * m if rule.nesterov else m) * c * a  # minus the product of the off-diagonal entries
    trace, det = top_left + m, top_left * m + off
    disc = np.sqrt((trace * trace - 4 * det).astype(complex))
    return np.maximum(np.abs((trace + disc) / 2), np.abs((trace - disc) / 2)).max(axis=1)


def contraction(lr: float, lams: np.ndarray, rule: SGDSettings) -> float:
    """The spectral radius of one epoch over the modes that carry gradient (lambda > 0)."""
    live = lams[lams > lams.max(initial=0.0) * 1e-12]
    if not len(live):
        return math.nan
    return float(radii(np.array([lr]), live, rule)[0])


def fastest_lr(lams: np.ndarray, rule: SGDSettings) -> float:
    """The learning rate of the smallest contraction: closed form without momentum, else numerical."""
    live = lams[lams > lams.max(initial=0.0) * 1e-12]
    if not len(live):
        return math.nan
    if rule.momentum == 0:
        return 2.0 / (live.min() + live.max())
    bound = max_stable_lr(float(live.max()), rule)
    if not math.isfinite(bound):
        return math.nan
    grid = bound * np.geomspace(1e-4, 1 - 1e-9, 2000)
    rates = radii(grid, live, rule)
    best = int(np.argmin(rates))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    from scipy.optimize import minimize_scalar  # here: momentum only, and the import costs 0.3 s

    found = minimize_scalar(
        lambda lr: contraction(lr, live, rule), bounds=(lo, hi), method="bounded", options={"xatol": 1e-12 * bound}
    )
    return float(found.x) if found.fun <= rates[best] else float(grid[best])


def epochs_to_tol(rate: float, g0: float, tol: float) -> float:
    """log(tol / g0) / log(rate): 0 when the start is already within tol, 1 when rate is 0, inf when rate >= 1."""
    if not (math.isfinite(rate) and math.isfinite(g0)):
        return math.nan
    if g0 <= tol:
        return 0.0
    if rate <= 0:  # every mode is solved in one step (lr = 1 / lambda for every lambda)
        return 1.0
    return math.inf if rate >= 1 else math.log(tol / g0) / math.log(rate)


@dataclass(frozen=True)
class RowsCurvature:
    """What one set of rows fixes, whatever the learning rate and start: shared by the runs on them."""

    factor: float
    gram: np.ndarray  # F^T F
    moment: np.ndarray  # F^T y
    lams: np.ndarray  # eigenvalues of H + weight_decay I
    lr_max_stable: float
    lr_fastest: float

    @classmethod
    def of(cls, features: np.ndarray, y: np.ndarray, reduction: str, rule: SGDSettings) -> "RowsCurvature":
        factor, gram = loss_factor(reduction, len(y)), features.T @ features
        lams = curvatures(gram, factor, rule)
        return cls(factor, gram, features.T @ y, lams, max_stable_lr(float(lams[-1]), rule), fastest_lr(lams, rule))

    def bounds(self, lr: float, theta0: np.ndarray, rule: SGDSettings, tol: float) -> dict[str, float]:
        """The four `COLUMNS` of a run at `lr` from `theta0` on these rows."""
        rate = contraction(lr, self.lams, rule)
        g0 = float(np.linalg.norm(self.factor * (self.gram @ theta0 - self.moment)))
        return {
            "lr_max_stable": self.lr_max_stable,
            "lr_fastest": self.lr_fastest,
            "rate": rate,
            "epochs_to_tol": epochs_to_tol(rate, g0, tol) if rule.weight_decay == 0 else math.nan,
        }


def _start(run: Any, n_params: int) -> np.ndarray:
    """The run's initial parameters; None: the feature models' own start, zeros."""
    init = getattr(run, "init", None)
    return np.zeros(n_params) if init is None or len(init) == 0 else np.asarray(init, dtype=float)


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
    `draw_settings`, the folder's). `seen` keeps each draw's curvature across calls (aggregation calls this once per
    grid cell, with the same draws in each)."""
    seen = {} if seen is None else seen
    keys = draw_keys(runs)
    new = [key for key in dict.fromkeys(keys) if key not in seen]  # the same draw in every cell: once
    if new:
        fit = residual_fit(X, y)
        for key in new:
            designs, responses = draw_arrays(X, y, [key], draw_rule, fit, draw_settings)
            seen[key] = RowsCurvature.of(designs[0], responses[0], reduction, rule)
    rows = [
        seen[key].bounds(float(run.lr), _start(run, X.shape[1]), rule, tol)
        for key, run in zip(keys, runs.itertuples(index=False))
    ]
    return pd.DataFrame(rows, index=runs.index, columns=list(COLUMNS))


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
