"""Each bootstrap draw's own closed-form OLS covariance, for studentized (bootstrap-t) intervals.

A draw's rows follow from (seed, resample, scheme) and the folder's draw rule alone
(`pipeline.core.resampling`), so
its classical OLS covariance s*^2 (X*^T X*)^-1 can be rebuilt from the design of the
original rows without the training side:
    case      X* = X[rows], y* = y[rows]
    residual  X* = X,       y* = X beta_hat + e[rows]   (beta_hat, e: OLS on the original rows)
The studentized interval (Efron and Tibshirani 12.5) then pivots on
t*_b = (theta*_b - theta_hat) / se*_b:
    [theta_hat - q_t(1 - alpha/2) se_hat, theta_hat - q_t(alpha/2) se_hat],
with se_hat the classical se on the original rows and q_t the quantiles of t*.
numpy only.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd

from pipeline.core.resampling import DRAW_RULE, draw_arrays, resample_size, residual_fit
from pipeline.core.runs import CASE

_DRAWS_PER_BLOCK = 256  # draws stacked into one batched QR: bounds memory at 256 x rows x p


def ols_covariances(designs: np.ndarray, responses: np.ndarray) -> np.ndarray:
    """(draws, p, p) classical OLS covariances s^2 (X^T X)^-1 of stacked designs (draws, n, p)
    and responses (draws, n), by QR; NaN for a draw whose design is rank-deficient."""
    n, p = designs.shape[1:]
    q, r = np.linalg.qr(designs)
    diag = np.abs(np.diagonal(r, axis1=1, axis2=2))
    singular = (diag <= diag.max(axis=1, keepdims=True) * n * np.finfo(float).eps).any(axis=1)
    r = np.where(singular[:, None, None], np.eye(p), r)  # keep the solve finite; flagged below
    coef = np.linalg.solve(r, np.einsum("bnp,bn->bp", q, responses)[..., None])[..., 0]
    resid = responses - np.einsum("bnp,bp->bn", designs, coef)
    s2 = np.einsum("bn,bn->b", resid, resid) / (n - p)
    r_inv = np.linalg.inv(r)
    cov = s2[:, None, None] * (r_inv @ np.swapaxes(r_inv, 1, 2))
    cov[singular] = np.nan
    return cov


def draw_keys(runs: pd.DataFrame) -> list[tuple[int, int, str]]:
    """(seed, resample, scheme) of each run: what fixes its rows (the scheme is `case` when absent)."""
    schemes = runs["scheme"].fillna(CASE) if "scheme" in runs.columns else pd.Series(CASE, index=runs.index)
    return list(zip(runs["seed"].astype(int), runs["resample"].astype(int), schemes))


def draw_covariances(
    runs: pd.DataFrame,
    X: np.ndarray,
    y: np.ndarray,
    draw_rule: str = DRAW_RULE,
    draw_settings: Optional[Mapping[str, Any]] = None,
) -> np.ndarray:
    """(len(runs), p, p): the classical OLS covariance on each run's own rows.

    `runs` needs `resample` and `seed` (and `scheme`, else case resampling); each
    distinct draw is solved once, however many grid cells share it. `draw_rule` and
    `draw_settings`: the sweep folder's (`SweepMeta.draw_rule`, `.draw_settings()`).
    """
    X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float).reshape(-1)
    fit = residual_fit(X, y)
    keys = draw_keys(runs)
    unique = list(dict.fromkeys(keys))
    covs = np.empty((len(unique), X.shape[1], X.shape[1]))
    for start in range(0, len(unique), _DRAWS_PER_BLOCK):
        block = unique[start : start + _DRAWS_PER_BLOCK]
        # jackknife fits have one row fewer: solve them apart from the full-length draws
        for length in sorted({resample_size(len(y), k[1]) for k in block}):
            picked = [i for i, k in enumerate(block) if resample_size(len(y), k[1]) == length]
            covs[[start + i for i in picked]] = ols_covariances(
                *draw_arrays(X, y, [block[i] for i in picked], draw_rule, fit, draw_settings)
            )
    where = {key: i for i, key in enumerate(unique)}
    return covs[[where[key] for key in keys]]


def standard_errors(covs: np.ndarray, matrix: Optional[np.ndarray] = None) -> np.ndarray:
    """(runs, p) standard errors from (runs, p, p) covariances, of M theta when `matrix` is M."""
    if matrix is not None:
        covs = matrix @ covs @ matrix.T
    return np.sqrt(np.diagonal(covs, axis1=1, axis2=2))


def studentized_quantiles(
    boot: np.ndarray, boot_se: np.ndarray, theta_hat: float, probs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(quantiles of t*, the t* values used) at `probs`; draws with a non-finite or zero se are left out."""
    ok = np.isfinite(boot) & np.isfinite(boot_se) & (boot_se > 0)
    t_star = (boot[ok] - theta_hat) / boot_se[ok]
    if len(t_star) < 2:
        return np.full(len(probs), np.nan), t_star
    return np.quantile(t_star, probs), t_star
