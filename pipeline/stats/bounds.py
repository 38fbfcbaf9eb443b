"""The bootstrap interval formulas on plain arrays: quantiles, basic, normal, BCa, bootstrap-t.

`stats.intervals`' docstring gives the definitions; the closed-form `t` and `hc3` are in
`stats.ols`. numpy and scipy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy.special import ndtr, ndtri

from pipeline.stats.studentized import studentized_quantiles


@dataclass
class Bounds:
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


def _quantile_bounds(values: np.ndarray, probs: np.ndarray) -> Bounds:
    q = np.quantile(values, probs)
    mc = _quantile_mc_se(values, probs, q)
    return Bounds(float(q[0]), float(q[1]), float(mc[0]), float(mc[1]))


def percentile_bounds(boot: np.ndarray, alpha: float) -> Bounds:
    return _quantile_bounds(boot, np.array([alpha / 2, 1 - alpha / 2]))


def basic_bounds(boot: np.ndarray, theta_hat: float, alpha: float) -> Bounds:
    p = percentile_bounds(boot, alpha)
    return Bounds(2 * theta_hat - p.upper, 2 * theta_hat - p.lower, p.mc_se_upper, p.mc_se_lower)


def normal_bounds(boot: np.ndarray, theta_hat: float, alpha: float) -> Bounds:
    se, z = float(np.std(boot, ddof=1)), float(ndtri(1 - alpha / 2))
    mc = z * se / np.sqrt(2 * (len(boot) - 1))
    return Bounds(theta_hat - z * se, theta_hat + z * se, mc, mc)


def bca_bounds(boot: np.ndarray, theta_hat: float, jack: np.ndarray, alpha: float) -> Bounds:
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
        return Bounds(
            z0=z0,
            acceleration=a,
            note="bca undefined: the estimate lies outside the bootstrap distribution (z0 infinite)",
        )
    if not all(np.isfinite(levels)):
        return Bounds(z0=z0, acceleration=a, note="bca undefined: the jackknife values are all equal (no acceleration)")
    bounds = _quantile_bounds(boot, np.array(levels))
    bounds.z0, bounds.acceleration = z0, a
    return bounds


def studentized_bounds(boot: np.ndarray, boot_se: np.ndarray, theta_hat: float, se_hat: float, alpha: float) -> Bounds:
    """Bootstrap-t: the quantiles of t* = (theta* - theta_hat) / se* turned around theta_hat by se_hat."""
    probs = np.array([alpha / 2, 1 - alpha / 2])
    q, t_star = studentized_quantiles(boot, boot_se, theta_hat, probs)
    if not np.isfinite(q).all() or not np.isfinite(se_hat):
        return Bounds(note="studentized undefined: fewer than 2 draws with a finite OLS standard error")
    mc = _quantile_mc_se(t_star, probs, q) * se_hat
    note = (
        ""
        if len(t_star) == len(boot)
        else (f"studentized from {len(t_star)} of {len(boot)} draws (the others have a rank-deficient design)")
    )
    return Bounds(theta_hat - q[1] * se_hat, theta_hat - q[0] * se_hat, float(mc[1]), float(mc[0]), note=note)


def bootstrap_bounds(
    method: str,
    boot: np.ndarray,
    theta_hat: float,
    jack: np.ndarray,
    alpha: float,
    student: Optional[tuple[np.ndarray, float]] = None,
) -> Bounds:
    """The `method` interval of bootstrap values `boot` around `theta_hat` (`jack`: the jackknife
    values, for bca; `student`: each draw's se and the original rows' se, for studentized)."""
    if method == "studentized":
        if student is None:
            return Bounds(note="studentized needs the design (X, y) of a model linear in its parameters")
        return studentized_bounds(boot, student[0], theta_hat, student[1], alpha)
    if method == "percentile":
        return percentile_bounds(boot, alpha)
    if method == "basic":
        return basic_bounds(boot, theta_hat, alpha)
    if method == "normal":
        return normal_bounds(boot, theta_hat, alpha)
    return bca_bounds(boot, theta_hat, jack, alpha)
