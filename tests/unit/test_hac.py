"""Issue 23: the HAC (Newey-West) closed-form interval against statsmodels, in fitted and raw
units, for parameters and for the mean response; its lag rule; the dependence note."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy.special import ndtri

from pipeline.stats.intervals import bootstrap_intervals
from pipeline.stats.ols import default_hac_lags, fit_design
from pipeline.stats.raw_units import FeatureSpec, feature_matrix, raw_unit_matrix

NAMES = ["w", "b"]


def ar1(n: int, phi: float, rng: np.random.Generator) -> np.ndarray:
    e = np.empty(n)
    e[0] = rng.normal() / np.sqrt(1 - phi**2)
    for t in range(1, n):
        e[t] = phi * e[t - 1] + rng.normal()
    return e


@pytest.fixture(scope="module")
def trend():
    """A GISTEMP-sized trend (143 rows in time order) with AR(1) errors, x as fitted and raw."""
    rng = np.random.default_rng(23)
    year = np.arange(1880, 2023, dtype=float)
    y = -0.3 + 0.008 * (year - 1880) + 0.1 * ar1(len(year), 0.6, rng)
    return year, y


def one_row_estimates() -> pd.DataFrame:
    return pd.DataFrame({"resample": [0], "status": ["ok"], **{n: [0.0] for n in NAMES}})


def test_default_lags_are_newey_wests_rule():
    assert [default_hac_lags(n) for n in (20, 100, 143, 1000, 10_000)] == [2, 4, 4, 6, 11]


@pytest.mark.parametrize("lags", [None, 0, 1, 7])
@pytest.mark.parametrize("level", [0.95, 0.8])
def test_hac_equals_statsmodels_in_fitted_and_raw_units(trend, lags, level):
    """Fitted units: x standardised as the pipeline fits it; raw units: the same rows mapped by
    the raw-unit matrix M (cov -> M cov M^T), against statsmodels on the raw design itself."""
    year, y = trend
    shift, scale = year.mean(), year.std()
    spec = FeatureSpec(inputs=1, degree=1)
    X = feature_matrix(spec, (year - shift) / scale)
    M = raw_unit_matrix(spec, shift, scale).matrix
    table = bootstrap_intervals(
        one_row_estimates(), params=NAMES, method="hac", level=level, X=X, y=y, by=(), raw_units=M, hac_lags=lags
    )
    maxlags = default_hac_lags(len(y)) if lags is None else lags
    for units, design in (("fitted", X), ("raw", feature_matrix(spec, year))):
        fit = sm.OLS(y, design).fit(cov_type="HAC", cov_kwds={"maxlags": maxlags})
        rows = table[table["units"] == units]
        np.testing.assert_allclose(rows["estimate"], fit.params, atol=1e-8, rtol=1e-10)
        np.testing.assert_allclose(rows["se"], fit.bse, atol=1e-8, rtol=1e-8)
        np.testing.assert_allclose(rows[["lower", "upper"]], fit.conf_int(alpha=1 - level), atol=1e-8, rtol=1e-8)
        assert rows["note"].str.contains(f"{maxlags} lag").all()


def test_hac_of_a_quadratic_with_several_columns_equals_statsmodels():
    rng = np.random.default_rng(5)
    x = np.sort(rng.uniform(-2, 2, 80))
    X = np.column_stack([np.ones_like(x), x, x**2])
    y = X @ [1.0, -0.5, 0.3] + ar1(80, 0.4, rng) * (1 + 0.5 * np.abs(x))
    names = ["beta0", "beta1", "beta2"]
    est = pd.DataFrame({"resample": [0], "status": ["ok"], **{n: [0.0] for n in names}})
    ours = bootstrap_intervals(est, params=names, method=["t", "hc3", "hac"], X=X, y=y, by=(), hac_lags=3)
    fit = sm.OLS(y, X).fit(cov_type="HAC", cov_kwds={"maxlags": 3})
    rows = ours[ours["method"] == "hac"]
    np.testing.assert_allclose(rows[["lower", "upper"]], fit.conf_int(0.05), atol=1e-8, rtol=1e-8)


def test_hac_mean_response_equals_statsmodels(trend):
    year, y = trend
    X = feature_matrix(FeatureSpec(inputs=1, degree=1), (year - 1880) / 100)
    F0 = np.array([[0.0, 1.0], [1.42, 1.0], [2.0, 1.0]])
    res = sm.OLS(y, X).fit(cov_type="HAC", cov_kwds={"maxlags": 4})
    form = fit_design(X, y, 4).interval("hac", 0.05, F0)
    est, se, lo, hi, note = form.estimate, form.se, form.lower, form.upper, form.note
    se_sm = np.sqrt(np.einsum("ij,jk,ik->i", F0, res.cov_params(), F0))
    np.testing.assert_allclose(est, F0 @ res.params, atol=1e-10)
    np.testing.assert_allclose(se, se_sm, atol=1e-8, rtol=1e-8)
    np.testing.assert_allclose(lo, F0 @ res.params - ndtri(0.975) * se_sm, atol=1e-8)
    np.testing.assert_allclose(
        np.column_stack([lo, hi]), res.get_prediction(F0).conf_int(alpha=0.05), atol=1e-8, rtol=1e-8
    )
    assert note == ""


def test_hac_lags_zero_is_hc0_and_bad_lags_are_refused(trend):
    year, y = trend
    X = feature_matrix(FeatureSpec(inputs=1, degree=1), (year - 1880) / 100)
    hac0 = fit_design(X, y, 0).fit.covariance("hac")
    np.testing.assert_allclose(hac0, sm.OLS(y, X).fit(cov_type="HC0").cov_params(), rtol=1e-10)
    with pytest.raises(ValueError, match="`hac_lags` must be a whole number >= 0"):
        bootstrap_intervals(one_row_estimates(), params=NAMES, method="hac", X=X, y=y, by=(), hac_lags=-1)


def test_dependent_residuals_put_a_note_on_the_intervals_that_assume_independent_rows(trend):
    year, y = trend
    X = feature_matrix(FeatureSpec(inputs=1, degree=1), (year - 1880) / 100)
    rng = np.random.default_rng(0)
    draws = pd.DataFrame({"resample": np.arange(0, 41), "status": "ok", "w": rng.normal(size=41), "b": 0.0})
    note = "rows look dependent"
    for scheme, flagged in (("case", {"percentile", "normal", "t", "hc3"}), ("moving_block", {"t", "hc3"})):
        table = bootstrap_intervals(
            draws.assign(scheme=scheme),
            params=NAMES,
            method=["percentile", "normal", "t", "hc3", "hac"],
            X=X,
            y=y,
            by=(),
        )
        noted = set(table.loc[table["note"].str.contains(note), "method"])
        assert noted == flagged, scheme
    lag1 = np.corrcoef(y[1:] - X[1:] @ fit_design(X, y).fit.coef, y[:-1] - X[:-1] @ fit_design(X, y).fit.coef)[0, 1]
    assert lag1 > 0.4  # AR(1) 0.6 errors: clearly dependent
    shuffled = rng.permutation(len(y))  # the same rows in another order: independent-looking residuals
    table = bootstrap_intervals(draws, params=NAMES, method=["percentile", "t"], X=X[shuffled], y=y[shuffled], by=())
    assert not table["note"].str.contains(note).any()
