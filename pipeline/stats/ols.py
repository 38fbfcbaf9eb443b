"""Closed-form least squares for the `t`, `hc3` and `hac` intervals, and why a design cannot give it.

Pure numpy/scipy on the design of the original rows (features and response, as saved in
`design.parquet`, rows in their order: HAC reads it as a series): no torch, so the readers
of a sweep folder can use it.

HAC is Newey and West's (1987) covariance, as statsmodels'
`OLS(y, X).fit(cov_type="HAC", cov_kwds={"maxlags": L})` forms it: with u_t = x_t e_t,

    S = sum_t u_t u_t' + sum_{l=1}^{L} (1 - l / (L + 1)) sum_t (u_t u_{t-l}' + u_{t-l} u_t'),
    cov = (X'X)^-1 S (X'X)^-1,

Bartlett weights, no small-sample factor (statsmodels' default `use_correction=False`),
and the normal quantile for the interval; L = floor(4 (n / 100)^(2/9)) unless
`intervals.hac_lags` says otherwise (statsmodels' and Newey and West's (1994) rule). A design that
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

from pipeline.stats.block_length import lag1_autocorrelation

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
    cov_hac: Optional[np.ndarray] = None  # Newey-West, `hac_lags` lags
    hac_lags: int = 0
    residual_lag1: float = np.nan  # lag-1 autocorrelation of the residuals, rows in their order

    def mapped(self, matrix: np.ndarray) -> "OLSFit":
        """The same fit of M theta: coefficients M coef, covariances M cov M^T (classical, HC3
        and HAC alike, as all three are invariant to the reparametrisation X -> X M^-1)."""
        cov, cov_hc3, cov_hac = (matrix @ c @ matrix.T for c in (self.cov, self.cov_hc3, self.cov_hac))
        return OLSFit(
            matrix @ self.coef,
            np.sqrt(np.diag(cov)),
            np.sqrt(np.diag(cov_hc3)),
            self.df,
            self.max_leverage,
            cov,
            cov_hc3,
            cov_hac,
            self.hac_lags,
            self.residual_lag1,
        )

    def covariance(self, method: str) -> np.ndarray:
        """The covariance a closed-form method uses: `t` classical, `hc3`, `hac`."""
        return {"t": self.cov, "hc3": self.cov_hc3, "hac": self.cov_hac}[method]


def default_hac_lags(n_rows: int) -> int:
    """floor(4 (n / 100)^(2/9)): Newey and West's (1994) rule, statsmodels' default."""
    return int(np.floor(4 * (n_rows / 100) ** (2 / 9)))


def newey_west_meat(scores: np.ndarray, lags: int) -> np.ndarray:
    """sum_l w_l (Gamma_l + Gamma_l'), Bartlett weights w_l = 1 - l / (lags + 1), of the rows
    u_t of `scores` (rows in their order), Gamma_l = sum_t u_t u_{t-l}'."""
    meat = scores.T @ scores
    for lag in range(1, min(lags, len(scores) - 1) + 1):
        gamma = scores[lag:].T @ scores[:-lag]
        meat += (1 - lag / (lags + 1)) * (gamma + gamma.T)
    return meat


def ols_fit(X: np.ndarray, y: np.ndarray, hac_lags: Optional[int] = None) -> OLSFit:
    """OLS by QR; the classical se from s^2 (X'X)^-1, HC3 from residuals scaled by 1 / (1 - h),
    HAC from Newey-West with `hac_lags` lags (None: `default_hac_lags`)."""
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
    lags = default_hac_lags(n) if hac_lags is None else int(hac_lags)
    cov_hac = xtx_inv @ newey_west_meat(X * resid[:, None], lags) @ xtx_inv
    return OLSFit(
        coef,
        np.sqrt(s2 * np.diag(xtx_inv)),
        np.sqrt(np.diag(cov_hc3)),
        n - p,
        float(leverage.max()),
        s2 * xtx_inv,
        cov_hc3,
        cov_hac,
        lags,
        lag1_autocorrelation(resid),
    )


def critical_value(fit: OLSFit, method: str, alpha: float) -> float:
    """t(n - p) for the classical interval; the normal quantile for hc3 and hac, as statsmodels."""
    return float(stdtrit(fit.df, 1 - alpha / 2) if method == "t" else ndtri(1 - alpha / 2))


@dataclass(frozen=True)
class ClosedFormInterval:
    """`t`, `hc3` or `hac` intervals, one per coefficient or point: NaN bounds and the reason in
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
        """`t`, `hc3` or `hac` of the mean response f0' b at each row f0 of `features`: f0' b -/+ c
        sqrt(f0' V f0), V the method's covariance (`OLSFit.covariance`) and c its critical value.
        At the unit vectors (`np.eye(p)`) these are the coefficients' own intervals."""
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
        cov, crit = fit.covariance(method), critical_value(fit, method, alpha)
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


def fit_design(X: np.ndarray, y: np.ndarray, hac_lags: Optional[int] = None) -> ClosedFormDesign:
    """The OLS fit of a (rows, parameters) design, or the reason it has none."""
    problem = closed_form_problem(X, y)
    if problem:
        return ClosedFormDesign(None, problem)
    with np.errstate(all="ignore"):  # overflow or leverage 1 give non-finite values, reported per method
        return ClosedFormDesign(ols_fit(X, y, hac_lags))
