"""How long the blocks of a block bootstrap should be: Politis and White (2004), with the
correction of Patton, Politis and White (2009), as `arch.bootstrap.optimal_block_length`.

For a series e_1..e_n (here the residuals of the original fit, rows in their order) with
autocovariances gamma_k = (1/n) sum_t (e_t - mean)(e_{t-k} - mean):

    m       the first lag after which K = max(5, int(log10 n)) autocorrelations in a row lie
            inside +-2 sqrt(log10(n) / n); M = 2 max(m, 1), at most ceil(sqrt n) + K
    lambda  the flat-top kernel: 1 for |k| / M <= 1/2, 2 (1 - |k| / M) above
    G       sum_{|k| <= M} lambda(k / M) |k| gamma_k
    sigma^2 sum_{|k| <= M} lambda(k / M) gamma_k        (the long-run variance)
    b       (2 G^2 / D)^(1/3) n^(1/3), D = 2 sigma^4 (stationary), 4/3 sigma^4 (circular,
            and the moving block bootstrap, whose optimum is the circular one's)

capped at min(3 sqrt(n), n / 3). Two details follow arch rather than the paper, so the
numbers agree with it to rounding (tests/unit/test_block_length.py): the autocorrelation
at lag k divides the lag-k cross product by the root of two lag-(k + 1) sums of squares,
and m is the lag just before the first window of K insignificant ones is complete minus K
(arch's `opt_m = i - kn`). numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from pipeline.core.runs import BLOCK_SCHEMES, STATIONARY, WILD


@dataclass(frozen=True)
class BlockLengths:
    """The estimated optimal (mean) block length of each scheme, before rounding."""

    stationary: float  # the mean of the stationary bootstrap's geometric block lengths
    circular: float  # the circular and the moving block bootstrap's block length


def _bandwidth(eps: np.ndarray) -> tuple[int, np.ndarray]:
    """(M, gamma_0..gamma_{m_max}): the kernel's bandwidth and the autocovariances it reads."""
    n = len(eps)
    kn = max(5, int(math.log10(n)))
    m_max = int(math.ceil(math.sqrt(n))) + kn
    band = 2 * math.sqrt(math.log10(n) / n)
    acv = np.zeros(m_max + 1)
    abs_acorr = np.zeros(m_max + 1)
    first_quiet = None
    for lag in range(m_max + 1):
        cross = eps[lag:] @ eps[: n - lag]
        acv[lag] = cross / n
        sums = (eps[lag + 1 :] @ eps[lag + 1 :]) * (eps[: n - lag - 1] @ eps[: n - lag - 1])
        abs_acorr[lag] = abs(cross) / math.sqrt(sums) if sums > 0 else np.inf
        if first_quiet is None and lag >= kn and np.all(abs_acorr[lag - kn : lag] < band):
            first_quiet = lag - kn
    bandwidth = m_max if first_quiet is None else min(2 * max(first_quiet, 1), m_max)
    return bandwidth, acv


def optimal_block_length(series: np.ndarray) -> BlockLengths:
    """Politis-White's optimal block lengths of one series (rows in their order)."""
    x = np.asarray(series, dtype=float).reshape(-1)
    n = len(x)
    if n < 2:
        raise ValueError(f"a block length needs a series of at least 2 values; got {n}")
    eps = x - x.mean()
    bandwidth, acv = _bandwidth(eps)
    lags = np.arange(1, bandwidth + 1)
    kernel = np.where(lags / bandwidth <= 0.5, 1.0, 2 * (1 - lags / bandwidth))
    g = float(np.sum(2 * kernel * lags * acv[1 : bandwidth + 1]))
    long_run = float(acv[0] + np.sum(2 * kernel * acv[1 : bandwidth + 1]))
    cap = math.ceil(min(3 * math.sqrt(n), n / 3))
    if long_run == 0:  # a constant series: nothing to estimate from
        return BlockLengths(math.nan, math.nan)
    stationary = (2 * g**2 / (2 * long_run**2)) ** (1 / 3) * n ** (1 / 3)
    circular = (2 * g**2 / (4 / 3 * long_run**2)) ** (1 / 3) * n ** (1 / 3)
    return BlockLengths(float(min(stationary, cap)), float(min(circular, cap)))


def lag1_autocorrelation(series: np.ndarray) -> float:
    """r_1 = sum (e_t - mean)(e_{t-1} - mean) / sum (e_t - mean)^2; NaN for a constant series."""
    x = np.asarray(series, dtype=float).reshape(-1)
    eps = x - x.mean()
    total = float(eps @ eps)
    return float(eps[1:] @ eps[:-1] / total) if len(x) >= 2 and total > 0 else math.nan


def scheme_block_length(scheme: str, residuals: np.ndarray) -> float:
    """`sweep.block_length=auto` for a block scheme: the stationary bootstrap's mean length as
    estimated, to 2 decimals (so that rounding differences between machines cannot change the
    draws and their run ids), at least 1; the circular and moving blocks' estimate rounded to
    whole rows, at least 1. A series without autocovariance to read (constant residuals) gives 1."""
    lengths = optimal_block_length(residuals)
    if scheme == STATIONARY:
        return max(1.0, round(lengths.stationary, 2)) if math.isfinite(lengths.stationary) else 1.0
    return float(max(1, round(lengths.circular))) if math.isfinite(lengths.circular) else 1.0


def draw_settings(scheme: str, block_length: Any, wild_weights: str, residuals: Optional[np.ndarray]) -> dict[str, Any]:
    """What the draws of `scheme` read (`SweepMeta.draw_settings`): the block schemes their block
    length (`auto`: `scheme_block_length` of `residuals`, the original fit's, rows in their order;
    whole rows for moving and circular blocks), the wild scheme its weights; nothing otherwise."""
    if scheme in BLOCK_SCHEMES:
        if block_length == "auto":
            if residuals is None:
                raise ValueError("block_length auto needs the residuals of the original fit")
            length = scheme_block_length(scheme, residuals)
        else:
            length = float(block_length)
        return {"block_length": float(length) if scheme == STATIONARY else int(length)}
    if scheme == WILD:
        return {"wild_weights": str(wild_weights)}
    return {}
