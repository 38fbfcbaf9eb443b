"""Raw-unit columns and rows of a sweep fitted on standardised x (pipeline/units.py).

Real sweeps (launcher=debug, the gram engine in float64): the raw-unit tables must equal
statsmodels on the raw design, and for NIST's StRD data sets the certified values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from pipeline.core.meta import SweepMeta
from pipeline.data.nist import read_strd
from pipeline.results.raw_columns import feature_spec, folder_units, sweep_units, with_raw_columns
from pipeline.stats.raw_units import FeatureSpec, raw_unit_matrix, to_raw
from pipeline.store.folder import read_meta
from tests.conftest import run_sweep

NIST_DIR = Path(__file__).resolve().parents[2] / "data" / "nist"
FAST = ("launcher=debug", "train.engine=gram", "train.dtype=float64", "intervals.plots=false", "report=false")


def _plants(path: Path, n: int = 60) -> pd.DataFrame:
    """Two x columns far from mean 0 / sd 1, so the conversion has work to do."""
    rng = np.random.default_rng(5)
    light, water = rng.uniform(20, 80, n), rng.uniform(-3, 9, n)
    growth = 2 + 0.05 * light - 0.8 * water + 0.02 * water**2 + rng.normal(0, 0.3 + 0.05 * water.clip(0), n)
    frame = pd.DataFrame({"light": light, "water": water, "growth": growth})
    frame.to_csv(path, index=False)
    return frame


@pytest.fixture(scope="module")
def plants_sweep(tmp_path_factory):
    """w1 light + w2 light^2 + w3 water + w4 water^2 + b on standardised x, 8 case draws."""
    root = tmp_path_factory.mktemp("plants")
    frame = _plants(root / "plants.csv")
    out = root / "sweep"
    _, est = run_sweep(
        out,
        "experiment=user_data",
        f"data.path={root / 'plants.csv'}",
        "data.x=[light,water]",
        "data.y=growth",
        "model.degree=2",
        "sweep=bootstrap",
        "sweep.resamples=8",
        "sweep.lr=[0.1]",
        "train.epochs=3000",
        "train.log_every=500",
        "train.grad_tol=1e-9",
        "intervals.methods=[percentile,basic,normal,t,hc3,studentized]",
        *FAST,
    )
    return frame, est, pd.read_parquet(out / "intervals.parquet")


def test_estimates_get_raw_columns_beside_the_fitted_ones(plants_sweep):
    frame, est, _ = plants_sweep
    names = ["w1", "w2", "w3", "w4", "b"]
    assert list(est.columns[list(est.columns).index("b") + 1 :][:5]) == [f"{n}_raw" for n in names]
    x = frame[["light", "water"]].to_numpy()
    raw = raw_unit_matrix(FeatureSpec(inputs=2, degree=2), x.mean(axis=0), x.std(axis=0))
    np.testing.assert_allclose(est[[f"{n}_raw" for n in names]], to_raw(est[names].to_numpy(), raw.matrix), rtol=1e-12)
    np.testing.assert_allclose(
        est[[f"ols_{n}_raw" for n in names]],
        to_raw(est[[f"ols_{n}" for n in names]].to_numpy(), raw.matrix),
        rtol=1e-12,
    )
    assert (est["status"] == "ok").all()


def test_raw_closed_form_rows_equal_statsmodels_on_raw_x(plants_sweep):
    frame, _, ci = plants_sweep
    x, y = frame[["light", "water"]].to_numpy(), frame["growth"].to_numpy()
    design = np.column_stack([x[:, 0], x[:, 0] ** 2, x[:, 1], x[:, 1] ** 2, np.ones(len(y))])
    assert list(ci["units"].unique()) == ["raw", "fitted"]  # raw rows first: what a reader wants
    for method, fit in (("t", sm.OLS(y, design).fit()), ("hc3", sm.OLS(y, design).fit(cov_type="HC3"))):
        rows = ci[(ci["units"] == "raw") & (ci["method"] == method)]
        np.testing.assert_allclose(rows["estimate"], fit.params, rtol=1e-9)
        np.testing.assert_allclose(rows["se"], fit.bse, rtol=1e-9)
        np.testing.assert_allclose(rows[["lower", "upper"]], fit.conf_int(0.05), rtol=1e-9)


def test_raw_bootstrap_rows_come_from_each_draws_raw_values(plants_sweep):
    _, est, ci = plants_sweep
    boot = est[est["kind"] == "bootstrap"]
    original = est[est["kind"] == "original"].iloc[0]
    for name in ("w1", "w4", "b"):
        values = boot[f"{name}_raw"].to_numpy()
        rows = ci[(ci["units"] == "raw") & (ci["parameter"] == name)].set_index("method")
        lo, hi = np.quantile(values, [0.025, 0.975])
        assert rows.loc["percentile", ["lower", "upper"]].tolist() == pytest.approx([lo, hi], rel=1e-12)
        theta = original[f"{name}_raw"]
        assert rows.loc["basic", ["lower", "upper"]].tolist() == pytest.approx(
            [2 * theta - hi, 2 * theta - lo], rel=1e-12
        )
        assert rows.loc["percentile", "se"] == pytest.approx(np.std(values, ddof=1), rel=1e-12)
        # the raw rows are not the fitted rows relabelled
        fitted = ci[(ci["units"] == "fitted") & (ci["parameter"] == name) & (ci["method"] == "percentile")]
        assert not np.isclose(fitted["lower"].iloc[0], lo)


def test_an_untransformed_sweep_has_raw_rows_only(tmp_path):
    _, est = run_sweep(
        tmp_path / "s", "experiment=linear_synthetic", "sweep=bootstrap", "sweep.resamples=3", "train.epochs=300", *FAST
    )
    ci = pd.read_parquet(tmp_path / "s" / "intervals.parquet")
    assert set(ci["units"]) == {"raw"} and len(ci) == 2 * 6
    assert "b_raw" not in est.columns


def test_a_model_not_linear_in_its_parameters_is_per_sd_only(tmp_path):
    csv = tmp_path / "plants.csv"
    _plants(csv)
    _, est = run_sweep(
        tmp_path / "s",
        "experiment=user_data",
        f"data.path={csv}",
        "data.x=light",
        "data.y=growth",
        "~model",
        "+model={_target_: torch.nn.Linear, in_features: 1, out_features: 1}",
        "sweep=bootstrap",
        "sweep.resamples=3",
        "train.epochs=300",
        "launcher=debug",
        "intervals.plots=false",
        "report=false",
    )
    ci = pd.read_parquet(tmp_path / "s" / "intervals.parquet")
    assert set(ci["units"]) == {"fitted"} and ci["note"].str.contains("per-sd only").all()
    assert not any(c.endswith("_raw") for c in est.columns)


# --- NIST StRD through the pipeline --------------------------------------------------------------

# data set -> (model overrides, x transform, NIST's parameter order as estimates columns)
NIST_SWEEPS = {
    "Norris": (["model.degree=1"], ["data.standardize=true"], ["b", "w"]),
    "Pontius": (["model.degree=2"], ["data.standardize=true"], ["b", "w1", "w2"]),
    # through the origin: a shift needs a constant the model lacks, so scale only
    "NoInt1": (
        ["model.intercept=false"],
        ["data.standardize=false", "data.x_shift=0", "data.x_scale=3.1622776601683795"],
        ["w"],
    ),
}


@pytest.mark.parametrize("name", NIST_SWEEPS)
def test_nist_certified_values_through_a_standardised_sweep(tmp_path, name):
    model, transform, order = NIST_SWEEPS[name]
    data = read_strd(NIST_DIR / f"{name}.dat")
    out = tmp_path / name
    _, est = run_sweep(
        out,
        "experiment=user_data",
        f"data.path={NIST_DIR / (name.lower() + '.csv')}",
        *model,
        *transform,
        "sweep=single",
        "sweep.lr=auto",
        "train.epochs=20000",
        "train.log_every=1000",
        "train.grad_tol=1e-10",
        *FAST,
    )
    ci = pd.read_parquet(out / "intervals.parquet")
    assert est["lr"].nunique() >= 4  # the auto grid around the stability bound
    for _, cell in ci[(ci["units"] == "raw") & (ci["method"] == "t")].groupby("lr"):
        t_rows = cell.set_index("parameter").loc[order]
        np.testing.assert_allclose(t_rows["estimate"], data.estimates, rtol=1e-9)
        np.testing.assert_allclose(t_rows["se"], data.std_devs, rtol=1e-9)
    # gradient descent, to its convergence tolerance: |theta - theta*| <= |grad| / lambda_min in
    # fitted units, times |M| in raw units (plus the certified values' own 1e-9)
    units = folder_units(out, read_meta(out))
    design = pd.read_parquet(out / "design.parquet").drop(columns="__y__").to_numpy()
    lam_min = np.linalg.eigvalsh(2 / len(design) * design.T @ design)[0]
    for run in est[est["status"] == "ok"].itertuples():
        bound = np.linalg.norm(units.matrix, 2) * run.grad_norm / lam_min
        got = np.array([getattr(run, f"{p}_raw") for p in order])
        assert np.all(np.abs(got - data.estimates) <= bound + 1e-9 * np.abs(data.estimates)), (run.lr, got)
    assert (est["status"] == "ok").any()


def test_feature_spec_reads_the_config_models():
    assert feature_spec(
        {"_target_": "pipeline.models.Polynomial", "degree": 2, "names": ["a", "b", "c"]}
    ) == FeatureSpec.polynomial(2)
    assert feature_spec({"_target_": "pipeline.models.Features", "inputs": 2, "knots": [0.5]}) == FeatureSpec(
        inputs=2, degree=1, knots=(0.5,)
    )
    assert feature_spec({"_target_": "torch.nn.Linear", "in_features": 1}) is None


def test_with_raw_columns_leaves_untransformed_sweeps_alone():
    meta = SweepMeta("e", ("b", "w"), True, "d", "s", 3, ("x",), ("y",), (0.0,), (1.0,))
    units = sweep_units(meta, {"model": {"_target_": "pipeline.models.Polynomial", "degree": 1}})
    est = pd.DataFrame({"b": [1.0], "w": [2.0]})
    assert not units.transformed and with_raw_columns(est, ("b", "w"), units).equals(est)
