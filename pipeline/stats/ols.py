"""Closed-form least squares for the `t` and `hc3` intervals, and why a design cannot give it.

Pure numpy/scipy on the design of the original rows (features and response, as saved in
`design.parquet`): no torch, so the readers of a sweep folder can use it. A design that
cannot be fitted (rank-deficient, no more rows than parameters, non-finite values) is a
property of the data, reported as a reason, never raised: `prepare` warns with it before
launch, and the intervals table writes NaN bounds with it as the note.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy.linalg import solve_triangular
from scipy.special import ndtri, stdtrit  # stdtrit is stats.t.ppf, without importing scipy.stats (0.5 s)

# A leverage this close to 1 is 1 up to rounding: the HC3 scaling 1 / (1 - h) is then noise.
LEVERAGE_TOL = 1e-8


@dataclass(frozen=True)
class OLSFit:
    """Closed-form least squares on the original rows, with classical and HC3 standard errors."""

    coef: np.ndarray
    se: np.ndarray
    se_hc3: np.ndarray
    df: int
    max_leverage: float = np.nan  # 1: a row alone fixes a coefficient, and its HC3 residual is 0 / 0
    cov: Optional[np.ndarray] = None  # s^2 (X'X)^-1
    cov_hc3: Optional[np.ndarray] = None

    def mapped(self, matrix: np.ndarray) -> "OLSFit":
        """The same fit of M theta: coefficients M coef, covariances M cov M^T (classical and
        HC3 alike, as both are invariant to the reparametrisation X -> X M^-1)."""
        cov, cov_hc3 = matrix @ self.cov @ matrix.T, matrix @ self.cov_hc3 @ matrix.T
        return OLSFit(
            matrix @ self.coef,
            np.sqrt(np.diag(cov)),
            np.sqrt(np.diag(cov_hc3)),
            self.df,
            self.max_leverage,
            cov,
            cov_hc3,
        )


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
    return OLSFit(
        coef,
        np.sqrt(s2 * np.diag(xtx_inv)),
        np.sqrt(np.diag(cov_hc3)),
        n - p,
        float(leverage.max()),
        s2 * xtx_inv,
        cov_hc3,
    )


@dataclass(frozen=True)
class ClosedFormInterval:
    """`t` or `hc3` intervals, one per coefficient or point: NaN bounds and the reason in
    `note` where the design cannot give them."""

    estimate: np.ndarray
    se: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    note: str = ""


@dataclass(frozen=True)
class ClosedFormDesign:
    """The closed-form fit of a given design, or (fit None) why the design cannot give one."""

    fit: Optional[OLSFit]
    note: str = ""

    def mapped(self, matrix: np.ndarray) -> "ClosedFormDesign":
        """The design's fit of M theta (raw units), or the same reason it has none."""
        return ClosedFormDesign(None if self.fit is None else self.fit.mapped(matrix), self.note)

    def interval(self, method: str, alpha: float, features: np.ndarray) -> ClosedFormInterval:
        """`t` or `hc3` of the mean response f0' b at each row f0 of `features`: f0' b -/+ c
        sqrt(f0' V f0), V the classical covariance with c = t(n - p) or the HC3 one with
        c = z(1 - alpha/2) (statsmodels' HC3 intervals use the normal quantile). At the unit
        vectors (`np.eye(p)`) these are the coefficients' own intervals."""
        features = np.asarray(features, dtype=float)
        nan = np.full(len(features), np.nan)
        if self.fit is None:
            return ClosedFormInterval(nan, nan, nan, nan, f"{method} undefined: {self.note}")
        fit = self.fit
        estimate = features @ fit.coef
        if method == "hc3" and fit.max_leverage > 1 - LEVERAGE_TOL:
            return ClosedFormInterval(
                estimate,
                nan,
                nan,
                nan,
                "hc3 undefined: a row of the design has leverage 1 (it alone fixes a coefficient, "
                "so its HC3 residual is 0 / 0)",
            )
        cov, crit = (fit.cov, stdtrit(fit.df, 1 - alpha / 2)) if method == "t" else (fit.cov_hc3, ndtri(1 - alpha / 2))
        with np.errstate(all="ignore"):
            se = np.sqrt(np.einsum("ij,jk,ik->i", features, cov, features))
            lower, upper = estimate - crit * se, estimate + crit * se
        if np.isfinite(se).all() and np.isfinite(lower).all() and np.isfinite(upper).all():
            return ClosedFormInterval(estimate, se, lower, upper)
        return ClosedFormInterval(
            estimate, nan, nan, nan, f"{method} undefined: the design is too badly scaled for finite standard errors"
        )


def closed_form_problem(X: np.ndarray, y: np.ndarray) -> str:
    """Why the closed-form fit (t, hc3) cannot be formed from this design; '' when it can."""
    X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float).reshape(-1)
    n, p = X.shape
    if not (np.isfinite(X).all() and np.isfinite(y).all()):
        return "the closed-form design (features of the original rows) holds non-finite values (x too large?)"
    if n <= p:
        return f"the closed-form fit needs more rows than parameters; the design has {n} row(s) for {p}"
    try:
        rank = int(np.linalg.matrix_rank(X))
    except np.linalg.LinAlgError as err:
        return f"the rank of the closed-form design cannot be computed ({err})"
    if rank < p:
        return (
            f"the closed-form design ({n} rows x {p} features) has rank {rank} < {p}: a constant or "
            "collinear feature (a constant x with data.standardize=false?) or features of very "
            "different scale (x far from 0?), so its coefficients are not identified"
        )
    return ""


def fit_design(X: np.ndarray, y: np.ndarray) -> ClosedFormDesign:
    """The OLS fit of a (rows, parameters) design, or the reason it has none."""
    problem = closed_form_problem(X, y)
    if problem:
        return ClosedFormDesign(None, problem)
    with np.errstate(all="ignore"):  # overflow or leverage 1 give non-finite values, reported per method
        return ClosedFormDesign(ols_fit(X, y))
