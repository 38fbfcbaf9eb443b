"""Prediction intervals at intervals.at (predictions.parquet)."""

import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipeline.config.points import read_points
from pipeline.core.errors import ConfigError
from pipeline.results.prediction_table import write_predictions
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


@pytest.mark.slow  # whole sweeps: the full suite's tier
def test_mlp_predictions(tmp_path):
    run_sweep(
        tmp_path,
        "experiment=toy_mlp",
        "sweep.resamples=3",
        "train.epochs=20",
        "launcher=debug",
        "intervals.statuses=[ok,not_converged]",
    )
    at = np.array([[0.0, 0.0, 0.0], [1.0, 0.5, -1.0]])
    write_predictions(tmp_path, at=at.tolist(), statuses=["ok", "not_converged"])
    table = pd.read_parquet(tmp_path / "predictions.parquet")
    assert set(table["output"]) == {"y1", "y2"} and table["estimate"].notna().all()
    # the values: each run's own network, rebuilt from config.yaml and its estimates row, at `at`
    est = pd.read_parquet(tmp_path / "estimates.parquet")
    direct = direct_forward(tmp_path, est, at)  # (runs, points, outputs)
    original = int(np.flatnonzero(est["resample"].to_numpy() == 0)[0])
    draws = direct[(est["kind"] == "bootstrap").to_numpy()]
    for row in table[table["method"] == "percentile"].itertuples():
        j = ["y1", "y2"].index(row.output)
        assert row.estimate == pytest.approx(direct[original, row.point, j], rel=1e-9, abs=1e-12)
        lower, upper = np.quantile(draws[:, row.point, j], [0.025, 0.975])
        assert (row.lower, row.upper) == pytest.approx((lower, upper), rel=1e-9, abs=1e-12)


def direct_forward(out_dir, est: pd.DataFrame, at: np.ndarray) -> np.ndarray:
    """A forward pass of every run's model at raw x `at`, as a user would write it."""
    import json

    import torch
    import yaml
    from hydra.utils import instantiate

    meta = json.loads((out_dir / "sweep.json").read_text())
    model = instantiate(yaml.safe_load((out_dir / "config.yaml").read_text())["model"]).double()
    shift, scale = np.asarray(meta["x_shift"] or 0.0), np.asarray(meta["x_scale"] or 1.0)
    x = torch.tensor((at - shift) / scale)
    out = []
    with torch.no_grad():
        for vector in est[meta["param_names"]].to_numpy(dtype=float):
            torch.nn.utils.vector_to_parameters(torch.tensor(vector), model.parameters())
            out.append(model(x).numpy())
    return np.stack(out)


@pytest.mark.slow  # whole sweeps: the full suite's tier
def test_a_model_not_linear_in_its_parameters_answers_with_its_predictions_at_the_data(tmp_path):
    """toy_mlp: the launch finds the MLP not linear in its parameters and saves the data's x; the
    aggregation writes predictions there without intervals.at; the answer table leads with them."""
    from pipeline.api import aggregate_sweep
    from pipeline.report.answer import fmt
    from pipeline.report.summary import sweep_summary

    run_sweep(tmp_path, "experiment=toy_mlp", "sweep.resamples=4", "train.epochs=100", "launcher=debug")
    assert json.loads((tmp_path / "sweep.json").read_text())["linear_in_params"] is False
    points = pd.read_parquet(tmp_path / "data_points.parquet")
    assert list(points.columns) == ["x1", "x2", "x3"] and len(points) == 20  # the data's own 20 rows
    aggregate_sweep(tmp_path, statuses=["ok", "not_converged"], report=False)  # at=None: the data's x
    table = pd.read_parquet(tmp_path / "predictions.parquet")
    assert table["point"].nunique() == 20 and set(table["output"]) == {"y1", "y2"}
    text = sweep_summary(tmp_path, intervals={"statuses": ["ok", "not_converged"]})
    lines = text.splitlines()
    assert lines[0].startswith("toy_mlp is not linear in its parameters")
    header = next(line for line in lines if line.startswith("lr "))
    assert "prediction" in header and "parameter" not in header
    first = table[(table["point"] == 0) & (table["output"] == "y1")].iloc[0]
    x = points.iloc[0]
    label = f"y1({x['x1']:.3g}, {x['x2']:.3g}, {x['x3']:.3g})"
    assert label in text and "weight[" not in text
    assert re.search(re.escape(label) + " +" + re.escape(fmt(first["estimate"])), text)  # y1 at the first row


def test_a_linear_custom_module_keeps_its_parameters_as_the_answer(tmp_path):
    """linear_in_params is checked numerically: nn.Linear is linear in its parameters (no data_points)."""
    run_sweep(
        tmp_path,
        "experiment=linear_synthetic",
        "~model",
        "+model={_target_: torch.nn.Linear, in_features: 1, out_features: 1}",
        "init=null",
        "sweep.resamples=2",
        "train.epochs=5",
        "launcher=debug",
    )
    assert json.loads((tmp_path / "sweep.json").read_text())["linear_in_params"] is True
    assert not (tmp_path / "data_points.parquet").exists()


def test_t_and_hc3_match_statsmodels():
    import statsmodels.api as sm
    from scipy.special import ndtri

    from pipeline.stats.ols import fit_design

    rng = np.random.default_rng(0)
    X = np.column_stack([np.ones(30), rng.normal(size=30)])
    y = X @ [1.0, 2.0] + rng.normal(size=30)
    F0 = np.array([[1.0, 0.0], [1.0, 1.5]])
    res = sm.OLS(y, X).fit()
    t = fit_design(X, y).interval("t", 0.05, F0)
    lo, hi = t.lower, t.upper
    np.testing.assert_allclose(np.column_stack([lo, hi]), res.get_prediction(F0).conf_int(alpha=0.05), atol=1e-8)
    lo = fit_design(X, y).interval("hc3", 0.05, F0).lower
    se_sm = np.sqrt(np.einsum("ij,jk,ik->i", F0, res.cov_HC3, F0))
    np.testing.assert_allclose(lo, F0 @ res.params - ndtri(0.975) * se_sm, atol=1e-8)


# --- the bootstrap bounds, recomputed from estimates.parquet ------------------------------------


def test_bootstrap_prediction_bounds_match_a_direct_computation(tmp_path):
    """Each draw's prediction b + w x, computed here from estimates.parquet, gives the table's
    percentile / basic / normal bounds by plain numpy, and its bca bounds through the parameter
    intervals' own path on that derived column."""
    import json

    from pipeline.stats.intervals import bootstrap_intervals

    run_sweep(
        tmp_path,
        "experiment=linear_synthetic",
        "sweep.resamples=40",
        "sweep.jackknife=true",
        "launcher=debug",
        "intervals.statuses=[ok,not_converged]",
    )
    at = [-1.0, 0.25, 2.0]
    write_predictions(tmp_path, at=at, statuses=["ok", "not_converged"], level=0.9)
    table = pd.read_parquet(tmp_path / "predictions.parquet")
    meta = json.loads((tmp_path / "sweep.json").read_text())
    shift, scale = np.ravel(meta.get("x_shift") or [0.0])[0], np.ravel(meta.get("x_scale") or [1.0])[0]
    est = pd.read_parquet(tmp_path / "estimates.parquet")
    usable = est["status"].isin(["ok", "not_converged"])
    alpha = 0.1
    for i, x in enumerate(at):
        f = est["b"] + est["w"] * (x - shift) / scale  # Polynomial degree 1: features (1, x)
        boot = f[(est["kind"] == "bootstrap") & usable].to_numpy()
        hat = float(f[est["kind"] == "original"].iloc[0])
        lo, hi = np.percentile(boot, [100 * alpha / 2, 100 * (1 - alpha / 2)])
        z = stats.norm.ppf(1 - alpha / 2)
        se = np.std(boot, ddof=1)
        expected = {
            "percentile": (lo, hi),
            "basic": (2 * hat - hi, 2 * hat - lo),
            "normal": (hat - z * se, hat + z * se),
        }
        ref = bootstrap_intervals(
            est.assign(f=f), params=["f"], method="bca", level=0.9, statuses=("ok", "not_converged")
        )
        expected["bca"] = tuple(ref[["lower", "upper"]].iloc[0])
        rows = table[table["point"] == i].set_index("method")
        assert rows["estimate"].loc["percentile"] == pytest.approx(hat, abs=1e-10)
        for method, (lower, upper) in expected.items():
            got = rows.loc[method, ["lower", "upper"]].to_numpy(dtype=float)
            np.testing.assert_allclose(got, [lower, upper], rtol=0, atol=1e-10, err_msg=f"{method} at x={x}")
        assert rows.loc["bca", "lower"] != pytest.approx(rows.loc["percentile", "lower"], abs=1e-12)


# --- one method rule for parameters and predictions ---------------------------------------------


def test_methods_follow_the_parameter_intervals_rule():
    from pipeline.stats.intervals import applicable_methods
    from pipeline.stats.prediction import methods_for

    runs = pd.DataFrame(
        {"resample": [0, 1, 2, -1], "kind": ["original", "bootstrap", "bootstrap", "jackknife"], "status": ["ok"] * 4}
    )
    for frame in (runs, runs[runs["kind"] != "jackknife"], runs.head(1)):
        for closed in (True, False):
            assert methods_for(None, frame, closed) == applicable_methods(None, frame, closed)
    assert methods_for(None, runs, True) == ["percentile", "basic", "normal", "bca", "t", "hc3", "hac"]
    assert methods_for(["Studentized", "hc3", "percentile"], runs, False) == ["percentile"]
    assert methods_for(["studentized"], runs, True) == []


# --- several inputs, end to end -----------------------------------------------------------------


def _plane_csv(path, names=("x1", "x2")):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 2)) * [2.0, 0.5] + [1.0, -3.0]
    y = 1.0 + 0.5 * x[:, 0] - 2.0 * x[:, 1] + rng.normal(scale=0.3, size=40)
    pd.DataFrame({names[0]: x[:, 0], names[1]: x[:, 1], "y": y}).to_csv(path, index=False)
    return x, y


@pytest.mark.slow  # whole sweeps: the full suite's tier
def test_two_inputs_end_to_end_list_and_csv(tmp_path):
    """user_data on (x1, x2): `at` as a list of lists and as a CSV give the same table, the x
    columns are the raw points, and the t estimate is the OLS fit on the raw columns (a
    prediction does not depend on the standardisation the sweep fitted with)."""
    from tests.conftest import run_cli

    x, y = _plane_csv(tmp_path / "plane.csv")
    out = tmp_path / "sweep"
    points = [[0.0, -3.0], [2.5, -2.0]]
    run_sweep(
        out,
        "experiment=user_data",
        f"data.path={tmp_path / 'plane.csv'}",
        "data.x=[x1,x2]",
        "sweep.resamples=8",
        "launcher=debug",
        "intervals.at=[[0.0,-3.0],[2.5,-2.0]]",
    )
    write_predictions(out, at=points)
    listed = pd.read_parquet(out / "predictions.parquet")
    assert listed[["point", "x1", "x2"]].drop_duplicates().to_numpy().tolist() == [[0, 0.0, -3.0], [1, 2.5, -2.0]]
    assert {"percentile", "basic", "normal", "t", "hc3", "hac"} == set(listed["method"])
    design = np.column_stack([np.ones(len(x)), x])
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    t_rows = listed[listed["method"] == "t"]
    np.testing.assert_allclose(t_rows["estimate"], np.column_stack([np.ones(2), points]) @ coef, rtol=1e-8)
    assert (t_rows["lower"] < t_rows["estimate"]).all() and (t_rows["estimate"] < t_rows["upper"]).all()
    # the CSV's columns in another order than data.x, plus one more: read by name
    pd.DataFrame({"x2": [p[1] for p in points], "label": ["a", "b"], "x1": [p[0] for p in points]}).to_csv(
        tmp_path / "at.csv", index=False
    )
    (out / "predictions.parquet").unlink()
    done = run_cli("aggregate", f"out_dir={out}", f"intervals.at={tmp_path / 'at.csv'}", "report=false")
    assert done.returncode == 0, done.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(out / "predictions.parquet"), listed)


def test_bad_at_at_aggregate_time_still_writes_the_tables(tmp_path):
    """pipeline-aggregate with a bad `intervals.at`: estimates, curves, intervals (and the
    report) are written, then one message naming the key, exit code 2, no traceback."""
    from tests.conftest import run_cli

    run_sweep(tmp_path, "experiment=linear_synthetic", "sweep.resamples=3", "launcher=debug")
    for name in ("estimates", "curves", "intervals"):
        (tmp_path / f"{name}.parquet").unlink()
    done = run_cli("aggregate", f"out_dir={tmp_path}", "intervals.at=[[1,2]]")
    assert done.returncode == 2, done.stderr
    assert "`intervals.at`" in done.stderr and "point 0" in done.stderr and "Traceback" not in done.stderr
    for name in ("estimates", "curves", "intervals"):
        assert len(pd.read_parquet(tmp_path / f"{name}.parquet")) > 0, name
    assert (tmp_path / "report.html").is_file() and not (tmp_path / "predictions.parquet").exists()


def test_x_column_named_like_a_table_column_is_refused_before_launch(tmp_path):
    from pipeline.launch.prepare import prepare
    from tests.conftest import make_config

    _plane_csv(tmp_path / "odd.csv", names=("method", "lr"))
    args = ("experiment=user_data", f"data.path={tmp_path / 'odd.csv'}", "data.x=[method,lr]")
    with pytest.raises(ConfigError) as err:
        prepare(make_config(tmp_path / "out", *args, "intervals.at=[[0,0]]"))
    message = str(err.value)
    assert "`data.x`" in message and "'method'" in message and "'lr'" in message
    assert "predictions.parquet" in message
    assert not (tmp_path / "out" / "plan.parquet").exists()
    prepare(make_config(tmp_path / "out2", *args, "launcher=debug"))  # without `at` the names are fine
