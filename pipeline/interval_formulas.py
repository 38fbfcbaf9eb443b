"""The interval formulas on plain arrays: bootstrap quantiles, BCa, bootstrap-t, and OLS.

Split from `pipeline.intervals` (which builds the table and re-exports these names);
see its docstring for the definitions. numpy and scipy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import stats
from scipy.linalg import solve_triangular
from scipy.special import ndtr, ndtri

from pipeline.studentized import studentized_quantiles


@dataclass
class _Bounds:
    """One interval of one parameter, with its Monte-Carlo errors and why it may be missing."""

    lower: float = np.nan
    upper: float = np.nan
    mc_se_lower: float = np.nan
    mc_se_upper: float = np.nan
    z0: float = np.nan
    acceleration: float = np.nan
    note: str = ""


# --- the formulas, on plain arrays --------------------------------------------------------------


def _density(values: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Gaussian kernel density with Scott's bandwidth: scipy.stats.gaussian_kde in one dimension."""
    bandwidth = np.std(values, ddof=1) * len(values) ** -0.2
    z = (points[:, None] - values[None, :]) / bandwidth
    return np.exp(-0.5 * z**2).mean(axis=1) / (bandwidth * np.sqrt(2 * np.pi))


def _quantile_mc_se(values: np.ndarray, probs: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """sqrt(p (1 - p) / B) / f(q): the Monte-Carlo standard error of sample quantiles."""
    if len(values) < 3 or np.ptp(values) == 0:
        return np.full(len(probs), np.nan)
    with np.errstate(divide="ignore"):
        return np.sqrt(probs * (1 - probs) / len(values)) / _density(values, quantiles)


def _quantile_bounds(values: np.ndarray, probs: np.ndarray) -> _Bounds:
    q = np.quantile(values, probs)
    mc = _quantile_mc_se(values, probs, q)
    return _Bounds(float(q[0]), float(q[1]), float(mc[0]), float(mc[1]))


def percentile_bounds(boot: np.ndarray, alpha: float) -> _Bounds:
    return _quantile_bounds(boot, np.array([alpha / 2, 1 - alpha / 2]))


def basic_bounds(boot: np.ndarray, theta_hat: float, alpha: float) -> _Bounds:
    p = percentile_bounds(boot, alpha)
    return _Bounds(2 * theta_hat - p.upper, 2 * theta_hat - p.lower, p.mc_se_upper, p.mc_se_lower)


def normal_bounds(boot: np.ndarray, theta_hat: float, alpha: float) -> _Bounds:
    se, z = float(np.std(boot, ddof=1)), float(ndtri(1 - alpha / 2))
    mc = z * se / np.sqrt(2 * (len(boot) - 1))
    return _Bounds(theta_hat - z * se, theta_hat + z * se, mc, mc)


def bca_bounds(boot: np.ndarray, theta_hat: float, jack: np.ndarray, alpha: float) -> _Bounds:
    """scipy.stats.bootstrap's BCa interval (Efron and Tibshirani 14.3, 15.4) from given values."""
    share = (np.count_nonzero(boot < theta_hat) + np.count_nonzero(boot <= theta_hat)) / (2 * len(boot))
    z0 = float(ndtri(share))
    u = jack.mean() - jack  # scipy's (n - 1) factor cancels in the ratio below
    with np.errstate(divide="ignore", invalid="ignore"):
        a = float(np.sum(u**3) / (6 * np.sum(u**2) ** 1.5))
    levels = []
    for z in (float(ndtri(alpha / 2)), float(ndtri(1 - alpha / 2))):
        num = z0 + z
        with np.errstate(divide="ignore", invalid="ignore"):
            levels.append(float(ndtr(z0 + num / (1 - a * num))))
    if not np.isfinite(z0):
        return _Bounds(z0=z0, acceleration=a, note="bca undefined: the estimate lies outside the bootstrap "
                                                   "distribution (z0 infinite)")
    if not all(np.isfinite(levels)):
        return _Bounds(z0=z0, acceleration=a, note="bca undefined: the jackknife values are all equal "
                                                   "(no acceleration)")
    bounds = _quantile_bounds(boot, np.array(levels))
    bounds.z0, bounds.acceleration = z0, a
    return bounds


def studentized_bounds(boot: np.ndarray, boot_se: np.ndarray, theta_hat: float, se_hat: float,
                       alpha: float) -> _Bounds:
    """Bootstrap-t: the quantiles of t* = (theta* - theta_hat) / se* turned around theta_hat by se_hat."""
    probs = np.array([alpha / 2, 1 - alpha / 2])
    q, t_star = studentized_quantiles(boot, boot_se, theta_hat, probs)
    if not np.isfinite(q).all() or not np.isfinite(se_hat):
        return _Bounds(note="studentized undefined: fewer than 2 draws with a finite OLS standard error")
    mc = _quantile_mc_se(t_star, probs, q) * se_hat
    note = "" if len(t_star) == len(boot) else (f"studentized from {len(t_star)} of {len(boot)} draws "
                                                 "(the others have a rank-deficient design)")
    return _Bounds(theta_hat - q[1] * se_hat, theta_hat - q[0] * se_hat, float(mc[1]), float(mc[0]), note=note)


@dataclass(frozen=True)
class OLSFit:
    """Closed-form least squares on the original rows, with classical and HC3 standard errors."""

    coef: np.ndarray
    se: np.ndarray
    se_hc3: np.ndarray
    df: int
    cov: Optional[np.ndarray] = None  # s^2 (X'X)^-1
    cov_hc3: Optional[np.ndarray] = None

    def mapped(self, matrix: np.ndarray) -> "OLSFit":
        """The same fit of M theta: coefficients M coef, covariances M cov M^T (classical and
        HC3 alike, as both are invariant to the reparametrisation X -> X M^-1)."""
        cov, cov_hc3 = matrix @ self.cov @ matrix.T, matrix @ self.cov_hc3 @ matrix.T
        return OLSFit(matrix @ self.coef, np.sqrt(np.diag(cov)), np.sqrt(np.diag(cov_hc3)), self.df, cov, cov_hc3)


def ols_fit(X: np.ndarray, y: np.ndarray) -> OLSFit:
    """OLS by QR; the classical se from s^2 (X'X)^-1, HC3 from residuals scaled by 1 / (1 - h)."""
    n, p = X.shape
    q, r = np.linalg.qr(X)
    coef = solve_triangular(r, q.T @ y)
    resid = y - X @ coef
    r_inv = solve_triangular(r, np.eye(p))
    xtx_inv = r_inv @ r_inv.T
    s2 = resid @ resid / (n - p)
    leverage = np.sum(q**2, axis=1)
    scaled = X * (resid / (1 - leverage))[:, None]
    cov_hc3 = xtx_inv @ (scaled.T @ scaled) @ xtx_inv
    return OLSFit(coef, np.sqrt(s2 * np.diag(xtx_inv)), np.sqrt(np.diag(cov_hc3)), n - p, s2 * xtx_inv, cov_hc3)


def closed_form_bounds(fit: OLSFit, method: str, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(se, lower, upper) of every coefficient for `t` or `hc3`."""
    if method == "t":
        se, crit = fit.se, stats.t.ppf(1 - alpha / 2, fit.df)
    else:
        se, crit = fit.se_hc3, ndtri(1 - alpha / 2)
    return se, fit.coef - crit * se, fit.coef + crit * se
