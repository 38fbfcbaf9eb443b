"""The interval formulas on plain arrays: bootstrap quantiles, BCa, bootstrap-t, and OLS.

Split from `pipeline.intervals` (which builds the table and re-exports these names);
see its docstring for the definitions. numpy and scipy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from pipeline.stats.studentized import studentized_quantiles


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
        return _Bounds(
            z0=z0,
            acceleration=a,
            note="bca undefined: the estimate lies outside the bootstrap distribution (z0 infinite)",
        )
    if not all(np.isfinite(levels)):
        return _Bounds(
            z0=z0, acceleration=a, note="bca undefined: the jackknife values are all equal (no acceleration)"
        )
    bounds = _quantile_bounds(boot, np.array(levels))
    bounds.z0, bounds.acceleration = z0, a
    return bounds


def studentized_bounds(boot: np.ndarray, boot_se: np.ndarray, theta_hat: float, se_hat: float, alpha: float) -> _Bounds:
    """Bootstrap-t: the quantiles of t* = (theta* - theta_hat) / se* turned around theta_hat by se_hat."""
    probs = np.array([alpha / 2, 1 - alpha / 2])
    q, t_star = studentized_quantiles(boot, boot_se, theta_hat, probs)
    if not np.isfinite(q).all() or not np.isfinite(se_hat):
        return _Bounds(note="studentized undefined: fewer than 2 draws with a finite OLS standard error")
    mc = _quantile_mc_se(t_star, probs, q) * se_hat
    note = (
        ""
        if len(t_star) == len(boot)
        else (f"studentized from {len(t_star)} of {len(boot)} draws (the others have a rank-deficient design)")
    )
    return _Bounds(theta_hat - q[1] * se_hat, theta_hat - q[0] * se_hat, float(mc[1]), float(mc[0]), note=note)
