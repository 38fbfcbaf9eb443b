"""Prediction intervals at intervals.at (predictions.parquet)."""

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import ConfigError
from pipeline.prediction_points import read_points
from pipeline.predict import write_predictions
from tests.conftest import run_sweep


def test_bad_at_names_the_key(tmp_path):
    for bad in ([[1, 2]], ["a"], str(tmp_path / "none.csv"), []):
        with pytest.raises(ConfigError, match="intervals.at"):
            read_points(bad, ["x"])


def test_csv_points(tmp_path):
    pd.DataFrame({"x": [0.1, 0.5]}).to_csv(tmp_path / "p.csv", index=False)
    assert read_points(str(tmp_path / "p.csv"), ["x"]).tolist() == [[0.1], [0.5]]


def test_linear_sweep_predictions(tmp_path):
    run_sweep(tmp_path, "experiment=linear_synthetic", "sweep.resamples=5", "launcher=debug")
    write_predictions(tmp_path, at=[0.0, 0.5])
    table = pd.read_parquet(tmp_path / "predictions.parquet")
    assert {"percentile", "t", "hc3"} <= set(table["method"])
    assert table["lower"].notna().all()


def test_mlp_predictions(tmp_path):
    run_sweep(tmp_path, "experiment=toy_mlp", "sweep.resamples=3", "train.epochs=20", "launcher=debug",
              "intervals.statuses=[ok,not_converged]")
    write_predictions(tmp_path, at=[[0, 0, 0], [1, 1, 1]], statuses=["ok", "not_converged"])
    table = pd.read_parquet(tmp_path / "predictions.parquet")
    assert set(table["output"]) == {"y1", "y2"} and table["estimate"].notna().all()


def test_t_and_hc3_match_statsmodels():
    import statsmodels.api as sm
    from scipy.special import ndtri
    from pipeline.closed_form import fit_design
    from pipeline.prediction_intervals import _closed_form

    rng = np.random.default_rng(0)
    X = np.column_stack([np.ones(30), rng.normal(size=30)])
    y = X @ [1.0, 2.0] + rng.normal(size=30)
    F0 = np.array([[1.0, 0.0], [1.0, 1.5]])
    res = sm.OLS(y, X).fit()
    est, se, lo, hi, _ = _closed_form(fit_design(X, y), F0, "t", 0.05)
    np.testing.assert_allclose(np.column_stack([lo, hi]), res.get_prediction(F0).conf_int(alpha=0.05), atol=1e-8)
    est, se, lo, hi, _ = _closed_form(fit_design(X, y), F0, "hc3", 0.05)
    se_sm = np.sqrt(np.einsum("ij,jk,ik->i", F0, res.cov_HC3, F0))
    np.testing.assert_allclose(lo, F0 @ res.params - ndtri(0.975) * se_sm, atol=1e-8)
