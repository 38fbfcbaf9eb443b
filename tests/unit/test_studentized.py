"""Studentized (bootstrap-t) intervals: each draw's OLS se from its own rows, checked
against a direct computation (statsmodels on each draw's rows) on the same draws."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from pipeline.core.resampling import resample_rows
from pipeline.stats.intervals import bootstrap_intervals
from pipeline.stats.raw_units import FeatureSpec, raw_unit_matrix
from pipeline.stats.studentized import draw_covariances

B, N = 199, 40


def _data(seed: int = 2):
    rng = np.random.default_rng(seed)
    x = rng.uniform(5, 15, N)
    X = np.column_stack([np.ones(N), x])
    y = 3 + 0.7 * x + rng.normal(0, 0.2 * x, N)  # heteroskedastic: bootstrap-t differs from t
    return X, y


def _estimates(X: np.ndarray, y: np.ndarray, scheme: str) -> pd.DataFrame:
    """One run per draw with exactly the OLS fit on its rows (what converged GD gives)."""
    beta = np.linalg.lstsq(X, y, rcond=None)[0]
    rows = []
    for k in range(B + 1):
        idx = resample_rows(N, 11, k)
        Xk, yk = (X, X @ beta + (y - X @ beta)[idx]) if scheme == "residual" and k else (X[idx], y[idx])
        b, w = np.linalg.lstsq(Xk, yk, rcond=None)[0]
        rows.append({"resample": k, "seed": 11, "scheme": scheme, "status": "ok", "b": b, "w": w})
    return pd.DataFrame(rows)


def _direct(
    X: np.ndarray, y: np.ndarray, est: pd.DataFrame, scheme: str, j: int, level: float, matrix=None
) -> tuple[float, float]:
    """Bootstrap-t written out: statsmodels' se on every draw's rows, t*, its quantiles."""
    M = np.eye(2) if matrix is None else matrix
    beta = np.linalg.lstsq(X, y, rcond=None)[0]
    fit = sm.OLS(y, X).fit()
    theta_hat, se_hat = (M @ fit.params)[j], np.sqrt((M @ fit.cov_params() @ M.T)[j, j])
    t_star = []
    for k in range(1, B + 1):
        idx = resample_rows(N, 11, k)
        Xk, yk = (X, X @ beta + (y - X @ beta)[idx]) if scheme == "residual" else (X[idx], y[idx])
        draw = sm.OLS(yk, Xk).fit()
        value = (M @ est.loc[k, ["b", "w"]].to_numpy(dtype=float))[j]
        t_star.append((value - theta_hat) / np.sqrt((M @ draw.cov_params() @ M.T)[j, j]))
    q = np.quantile(t_star, [(1 - level) / 2, (1 + level) / 2])
    return theta_hat - q[1] * se_hat, theta_hat - q[0] * se_hat


@pytest.mark.parametrize("scheme", ["case", "residual"])
def test_studentized_equals_a_direct_computation_on_the_same_draws(scheme):
    X, y = _data()
    est = _estimates(X, y, scheme)
    ci = bootstrap_intervals(est, params=["b", "w"], method=["studentized", "t"], level=0.9, by=(), X=X, y=y)
    for j, name in enumerate(("b", "w")):
        row = ci[(ci["parameter"] == name) & (ci["method"] == "studentized")].iloc[0]
        assert [row["lower"], row["upper"]] == pytest.approx(_direct(X, y, est, scheme, j, 0.9), rel=1e-10)
        assert row["n_used"] == B and row["mc_se_lower"] > 0 and row["note"] == ""
    t_w = ci[(ci["parameter"] == "w") & (ci["method"] == "t")].iloc[0]
    stud_w = ci[(ci["parameter"] == "w") & (ci["method"] == "studentized")].iloc[0]
    assert stud_w["lower"] != pytest.approx(t_w["lower"], rel=1e-3)  # a different interval, not t relabelled


def test_studentized_in_raw_units_maps_each_draws_covariance():
    X, y = _data(3)
    est = _estimates(X, y, "case")
    shift, scale = X[:, 1].mean(), X[:, 1].std()
    Z = np.column_stack([np.ones(N), (X[:, 1] - shift) / scale])
    est_z = _estimates(Z, y, "case")  # the same draws fitted on standardised x
    matrix = raw_unit_matrix(FeatureSpec.polynomial(1), shift, scale).matrix
    ci = bootstrap_intervals(est_z, params=["b", "w"], method="studentized", by=(), X=Z, y=y, raw_units=matrix)
    raw = ci[ci["units"] == "raw"].set_index("parameter")
    on_raw_x = bootstrap_intervals(est, params=["b", "w"], method="studentized", by=(), X=X, y=y).set_index("parameter")
    np.testing.assert_allclose(raw[["lower", "upper"]], on_raw_x[["lower", "upper"]], rtol=1e-9)
    assert raw.loc["w", ["lower", "upper"]].tolist() == pytest.approx(
        _direct(Z, y, est_z, "case", 1, 0.95, matrix), rel=1e-9
    )


def test_draw_covariances_solve_each_draw_once_and_flag_rank_deficient_draws():
    X = np.column_stack([np.ones(6), [0.0, 0, 0, 0, 0, 1]])  # some draws miss the one x = 1
    y = np.arange(6.0)
    runs = pd.DataFrame({"resample": list(range(1, 41)) * 2, "seed": 0})
    covs = draw_covariances(runs, X, y)
    assert covs.shape == (80, 2, 2)
    np.testing.assert_array_equal(covs[:40], covs[40:])  # shared draws, one solve
    missing = [k for k in range(1, 41) if 5 not in resample_rows(6, 0, k)]
    assert missing and np.isnan(covs[[k - 1 for k in missing]]).all()
    kept = [k for k in range(1, 41) if k not in missing and len(set(resample_rows(6, 0, k))) > 2]
    k = kept[0]
    idx = resample_rows(6, 0, k)
    np.testing.assert_allclose(covs[k - 1], sm.OLS(y[idx], X[idx]).fit().cov_params(), rtol=1e-9, atol=1e-12)
