"""Issue 23: rows as a series. `data.order` sorts the rows; a sweep of GISTEMP (an annual
series whose residuals around a trend are autocorrelated) gets the hac interval, with
`intervals.hac_lags`, and a note on the intervals that assume independent rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import statsmodels.api as sm

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
