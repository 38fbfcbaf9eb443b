"""Issue 23: rows as a series. `data.order` sorts the rows; a sweep of GISTEMP (an annual
series whose residuals around a trend are autocorrelated) gets the hac interval, with
`intervals.hac_lags`, and a note on the intervals that assume independent rows; its block
bootstrap intervals equal a direct computation on the same rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from pipeline.core.resampling import KEYED_RULE, draw
from pipeline.data.load import load_dataset
from tests.conftest import REPO, make_config, run_sweep

FAST = ("launcher=debug", "train.epochs=200", "train.log_every=100", "intervals.plots=false")


def test_data_order_sorts_the_rows_by_its_column(tmp_path):
    years = np.arange(1950, 1970)
    shuffled = np.random.default_rng(0).permutation(len(years))
    frame = pd.DataFrame({"year": years, "x": years * 0.1, "y": np.sin(years)})
    frame.iloc[shuffled].to_csv(tmp_path / "shuffled.csv", index=False)
    frame.to_csv(tmp_path / "sorted.csv", index=False)

    def rows_of(name: str, *more: str):
        cfg = make_config(
            tmp_path, "experiment=user_data", f"data.path={tmp_path / name}", "data.standardize=false", *more
        )
        return load_dataset(cfg["data"])

    ordered = rows_of("shuffled.csv", "data.order=year")
    np.testing.assert_array_equal(ordered.x[:, 0], frame["x"].to_numpy())
    assert ordered.digest() == rows_of("sorted.csv").digest()  # the same rows in the same order
    np.testing.assert_array_equal(rows_of("shuffled.csv").x[:, 0], frame["x"].to_numpy()[shuffled])  # as read


def test_gistemp_sweep_gives_hac_and_notes_the_dependence(tmp_path):
    out = tmp_path / "sweep"
    run_sweep(out, "experiment=gistemp_line", "sweep=bootstrap", "sweep.resamples=5", "intervals.hac_lags=6", *FAST)
    ci = pd.read_parquet(out / "intervals.parquet")
    gistemp = pd.read_csv(REPO / "data" / "gistemp" / "gistemp_annual.csv").query("year <= 2022")
    year, anomaly = gistemp["year"].to_numpy(dtype=float), gistemp["anomaly"].to_numpy()
    for units, x in (("fitted", (year - 1880) / 100), ("raw", year)):
        fit = sm.OLS(anomaly, np.column_stack([x, np.ones_like(x)])).fit(cov_type="HAC", cov_kwds={"maxlags": 6})
        hac = ci[(ci["method"] == "hac") & (ci["units"] == units)]
        np.testing.assert_allclose(hac[["lower", "upper"]], fit.conf_int(0.05), rtol=1e-8, atol=1e-8)
        assert hac["note"].str.contains("6 lag").all()
    dependent = ci["note"].str.contains("rows look dependent")
    assert set(ci.loc[dependent, "method"]) == {"percentile", "basic", "normal", "t", "hc3"}
    assert ci.loc[dependent, "note"].str.contains("lag-1 autocorrelation 0.7").all()
    assert not dependent[ci["method"] == "hac"].any()


def test_block_bootstrap_intervals_equal_a_direct_numpy_computation_on_the_same_rows(tmp_path):
    """A circular-block sweep of GISTEMP: each draw's rows are the draw rule's (`core.resampling`);
    on those rows numpy's least squares gives the engine's closed form, and the percentile and
    studentized intervals of the numpy fits are the table's (the gradient-descent fits converge
    to them)."""
    out = tmp_path / "sweep"
    _, est = run_sweep(
        out,
        "experiment=gistemp_line",
        "sweep=bootstrap",
        "sweep.resamples=40",
        "sweep.scheme=circular_block",
        "sweep.block_length=10",
        "train.dtype=float64",
        "train.epochs=4000",
        "train.grad_tol=1e-9",
        "intervals.methods=[percentile,studentized]",
        "intervals.statuses=[ok,not_converged]",
        "launcher=debug",
        "intervals.plots=false",
    )
    boot = est[est["kind"] == "bootstrap"].sort_values("resample")
    assert (boot["block_length"] == 10).all() and (boot["scheme"] == "circular_block").all()
    gistemp = pd.read_csv(REPO / "data" / "gistemp" / "gistemp_annual.csv").query("year <= 2022")
    x = (gistemp["year"].to_numpy(dtype=float) - 1880) / 100
    X, y = np.column_stack([x, np.ones_like(x)]), gistemp["anomaly"].to_numpy()
    rows = draw(len(y), boot["seed"], boot["resample"], boot["scheme"], KEYED_RULE, {"block_length": 10}).rows
    starts = rows[:, ::10]
    assert (rows[:, :140].reshape(len(boot), 14, 10) == (starts[:, :14, None] + np.arange(10)) % 143).all()
    fits = np.stack([np.linalg.lstsq(X[r], y[r], rcond=None)[0] for r in rows])
    np.testing.assert_allclose(boot[["ols_w", "ols_b"]], fits, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(boot[["w", "b"]], fits, rtol=1e-6, atol=1e-8)
    ci = pd.read_parquet(out / "intervals.parquet").query("units == 'fitted'").set_index(["parameter", "method"])
    resid = [y[r] - X[r] @ f for r, f in zip(rows, fits)]
    se = np.stack([np.sqrt(np.diag(e @ e / (len(e) - 2) * np.linalg.inv(X[r].T @ X[r]))) for r, e in zip(rows, resid)])
    original = np.linalg.lstsq(X, y, rcond=None)[0]
    e0 = y - X @ original
    se0 = np.sqrt(np.diag(e0 @ e0 / (len(y) - 2) * np.linalg.inv(X.T @ X)))
    for j, name in enumerate(["w", "b"]):
        lo, hi = np.quantile(fits[:, j], [0.025, 0.975])
        assert ci.loc[(name, "percentile"), ["lower", "upper"]].tolist() == pytest.approx([lo, hi], rel=1e-6)
        t_star = (fits[:, j] - original[j]) / se[:, j]
        q_lo, q_hi = np.quantile(t_star, [0.025, 0.975])
        expected = [original[j] - q_hi * se0[j], original[j] - q_lo * se0[j]]
        assert ci.loc[(name, "studentized"), ["lower", "upper"]].tolist() == pytest.approx(expected, rel=1e-5)
        assert ci.loc[(name, "percentile"), "block_length"] == 10
