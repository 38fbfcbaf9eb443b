"""Issue 6: interval methods against scipy and statsmodels, diagnostics, jackknife and
residual resampling in the plan, and a whole sweep with every method and its plots."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

from pipeline.core.errors import ConfigError, DegenerateCellWarning, DroppedRunsWarning
from pipeline.core.resampling import resample_rows
from pipeline.data.load import load_dataset
from pipeline.launch.prepare import validate
from pipeline.stats.bounds import _density, percentile_bounds
from pipeline.stats.intervals import COLUMNS, bootstrap_intervals
from pipeline.sweep.plan import plan
from pipeline.train.problem import resample_data
from tests.conftest import REPO, make_config, problem_from, run_sweep


def quadratic_coef(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """beta2 of the OLS fit y ~ 1 + x + x^2, vectorised over leading axes (scipy's `axis=-1` convention)."""
    X = np.stack([np.ones_like(x), x, x**2], axis=-1)
    xtx = np.einsum("...ni,...nj->...ij", X, X)
    xty = np.einsum("...ni,...n->...i", X, y)
    return np.linalg.solve(xtx, xty[..., None])[..., 2, 0]


@pytest.fixture(scope="module")
def quadratic_sample():
    rng = np.random.default_rng(20230309)
    x = rng.uniform(-3, 3, 60)
    return x, 2 - 1.5 * x + 0.8 * x**2 + rng.normal(0, 1 + 0.3 * np.abs(x))  # heteroskedastic on purpose


def estimates_table(theta_hat: float, boot: np.ndarray, jack: np.ndarray, name: str = "beta2") -> pd.DataFrame:
    """Our table convention: resample 0, bootstrap draws 1..B, jackknife fits -1..-n."""
    return pd.DataFrame(
        {
            "resample": np.r_[0, np.arange(1, len(boot) + 1), -np.arange(1, len(jack) + 1)],
            "status": "ok",
            name: np.r_[theta_hat, boot, jack],
        }
    )


@pytest.mark.parametrize("level", [0.95, 0.9])
@pytest.mark.parametrize("method", ["percentile", "basic", "bca"])
def test_percentile_basic_bca_equal_scipy_bootstrap(quadratic_sample, method, level):
    """Same resamples for both: scipy's paired bootstrap draws its row indices with
    `rng.integers(0, n, (n_resamples, n))` from the Generator it is given (one batch), so
    the same call on a Generator with the same seed gives us its resamples; its jackknife
    leaves out one row at a time, as our jackknife runs do."""
    x, y = quadratic_sample
    n, B, seed = len(x), 1999, 7
    rows = np.random.default_rng(seed).integers(0, n, (B, n))
    boot = quadratic_coef(x[rows], y[rows])
    jack = np.array([quadratic_coef(np.delete(x, j), np.delete(y, j)) for j in range(n)])
    ours = bootstrap_intervals(
        estimates_table(quadratic_coef(x, y), boot, jack), params=["beta2"], method=method, level=level, by=()
    ).iloc[0]
    ref = stats.bootstrap(
        (x, y),
        quadratic_coef,
        paired=True,
        vectorized=True,
        n_resamples=B,
        method=method,
        confidence_level=level,
        rng=np.random.default_rng(seed),
    )
    np.testing.assert_array_equal(ref.bootstrap_distribution, boot)  # the resamples really are the same
    assert ours["lower"] == pytest.approx(ref.confidence_interval.low, abs=1e-10, rel=0)
    assert ours["upper"] == pytest.approx(ref.confidence_interval.high, abs=1e-10, rel=0)
    assert ours["se"] == pytest.approx(ref.standard_error, abs=1e-12)
    assert ours["lower"] < ours["estimate"] < ours["upper"]


def test_bca_counts_ties_with_the_estimate_as_scipy_does():
    """A discrete statistic (the median of integers) puts many bootstrap values on the estimate."""
    data = np.random.default_rng(1).integers(0, 6, 31).astype(float)
    B, seed = 999, 3
    boot = np.median(data[np.random.default_rng(seed).integers(0, len(data), (B, len(data)))], axis=-1)
    jack = np.array([np.median(np.delete(data, j)) for j in range(len(data))])
    theta = float(np.median(data))
    assert (boot == theta).sum() > 100
    ours = bootstrap_intervals(estimates_table(theta, boot, jack, "m"), params=["m"], method="bca", by=()).iloc[0]
    ref = stats.bootstrap((data,), np.median, n_resamples=B, method="bca", rng=np.random.default_rng(seed))
    assert (ours["lower"], ours["upper"]) == pytest.approx(tuple(ref.confidence_interval), abs=1e-10)


@pytest.mark.parametrize("level", [0.95, 0.8])
def test_t_and_hc3_equal_statsmodels(level):
    frame = pd.read_csv(REPO / "data" / "tdm" / "train.csv")
    x, y = frame["x"].to_numpy(), frame["y"].to_numpy()
    X = np.column_stack([np.ones_like(x), x, x**2])
    names = ["beta0", "beta1", "beta2"]
    est = pd.DataFrame({"resample": [0], "status": ["ok"], **{n: [0.0] for n in names}})
    ours = bootstrap_intervals(est, params=names, method=["t", "hc3"], level=level, X=X, y=y, by=())
    for method, kwargs in (("t", {}), ("hc3", {"cov_type": "HC3"})):
        fit = sm.OLS(y, X).fit(**kwargs)
        rows = ours[ours["method"] == method]
        np.testing.assert_allclose(
            rows[["lower", "upper"]].to_numpy(), fit.conf_int(alpha=1 - level), atol=1e-8, rtol=0
        )
        np.testing.assert_allclose(rows["se"].to_numpy(), fit.bse, atol=1e-8, rtol=0)
        np.testing.assert_allclose(rows["estimate"].to_numpy(), fit.params, atol=1e-8, rtol=0)
        assert (rows["mc_se_lower"] == 0).all()


def test_cell_where_every_run_diverged_gives_rows_with_the_reason():
    ok = pd.DataFrame(
        {
            "lr": 0.1,
            "init_index": 0,
            "resample": range(11),
            "status": "ok",
            "w": np.random.default_rng(0).normal(2, 0.1, 11),
        }
    )
    bad = pd.DataFrame({"lr": 10.0, "init_index": 0, "resample": range(11), "status": "diverged", "w": np.nan})
    with pytest.warns(DegenerateCellWarning, match="diverged"), pytest.warns(DroppedRunsWarning, match="10 of 10"):
        table = bootstrap_intervals(pd.concat([ok, bad]), params=["w"], method=["percentile", "basic", "normal"])
    assert list(table.columns) == ["lr", "init_index", *COLUMNS]
    dead = table[table["lr"] == 10.0]
    assert len(dead) == 3 and dead["lower"].isna().all() and dead["upper"].isna().all()
    assert (dead["n_used"] == 0).all() and (dead["n_dropped_diverged"] == 10).all()
    assert dead["note"].str.contains("0 usable resample").all()
    assert dead["note"].str.contains("original rows is diverged").all()
    assert table.loc[table["lr"] == 0.1, "lower"].notna().all()


def test_dropped_runs_are_left_out_counted_by_reason_and_warned():
    rng = np.random.default_rng(5)
    statuses = ["ok"] + ["ok"] * 40 + ["diverged"] * 3 + ["not_converged"] * 7
    est = pd.DataFrame(
        {"lr": 0.1, "init_index": 0, "resample": range(51), "status": statuses, "w": rng.normal(size=51)}
    )
    est.loc[est["status"] != "ok", "w"] = 1e6  # would wreck the interval if it were used
    with pytest.warns(DroppedRunsWarning, match="10 of 50"):
        row = bootstrap_intervals(est, params=["w"], method="percentile", max_dropped_share=0.1).iloc[0]
    assert (row["n_used"], row["n_dropped"], row["n_dropped_diverged"], row["n_dropped_not_converged"]) == (
        40,
        10,
        3,
        7,
    )
    assert row["dropped"] == "diverged: 3; not_converged: 7"
    assert "max_dropped_share=0.1" in row["note"]
    used = est.loc[1:40, "w"].to_numpy()
    assert (row["lower"], row["upper"]) == pytest.approx(tuple(np.quantile(used, [0.025, 0.975])))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        relaxed = bootstrap_intervals(est, params=["w"], method="percentile", max_dropped_share=0.25).iloc[0]
    assert "max_dropped_share" not in relaxed["note"]
    kept = bootstrap_intervals(est, params=["w"], method="percentile", statuses=["ok", "not_converged"]).iloc[0]
    assert (kept["n_used"], kept["n_dropped_not_converged"]) == (47, 0)
    assert "did not converge" in kept["note"]


def test_endpoint_mc_error_matches_its_spread_over_repeated_bootstraps():
    """The asymptotic quantile formula sqrt(p(1-p)/B)/f(q) against the endpoints' sd over 400
    independent bootstrap distributions of B = 400 draws from a known (gamma) distribution."""
    rng = np.random.default_rng(11)
    values = rng.gamma(3.0, size=(400, 400))
    assert _density(values[0], np.array([1.0, 4.0])) == pytest.approx(
        stats.gaussian_kde(values[0])(np.array([1.0, 4.0])), rel=1e-12
    )
    bounds = [percentile_bounds(v, 0.05) for v in values]
    lower, mc = np.array([b.lower for b in bounds]), np.array([b.mc_se_lower for b in bounds])
    upper, mc_up = np.array([b.upper for b in bounds]), np.array([b.mc_se_upper for b in bounds])
    # sd of an sd estimate from 400 values is ~3.5%; the KDE adds a little bias
    assert np.median(mc) == pytest.approx(np.std(lower, ddof=1), rel=0.2)
    assert np.median(mc_up) == pytest.approx(np.std(upper, ddof=1), rel=0.2)


def test_gap_to_ols_is_reported_and_unconverged_estimates_are_flagged():
    rng = np.random.default_rng(2)
    est = pd.DataFrame(
        {
            "lr": 3e-4,
            "init_index": 0,
            "resample": range(31),
            "status": "ok",
            "w": rng.normal(1.0, 0.05, 31),
            "ols_w": 1.0,
        }
    )
    est.loc[0, ["w", "status"]] = [1.2, "not_converged"]
    with pytest.warns(DegenerateCellWarning, match="original rows is not_converged"):
        table = bootstrap_intervals(est, params=["w"], method=["percentile", "basic"])
    assert table["gap_to_ols"].tolist() == pytest.approx([0.2, 0.2])
    assert table["note"].str.contains("describes the optimiser, not the data").all()
    assert table.loc[table["method"] == "basic", "lower"].isna().all()  # built around an unconverged estimate
    est.loc[0, ["w", "status"]] = [1.0 + 1e-6, "ok"]
    clean = bootstrap_intervals(est, params=["w"], method="basic")
    assert clean["note"].iloc[0] == "" and clean["gap_to_ols"].iloc[0] == pytest.approx(1e-6)


def test_methods_are_checked_and_lower_cased():
    est = estimates_table(0.0, np.arange(10.0), np.arange(5.0), "w")
    assert bootstrap_intervals(est, params=["w"], method="BCa", by=())["method"].tolist() == ["bca"]
    with pytest.raises(ValueError, match="percentile, basic, bca, normal, t, hc3, hac, studentized; got 'wild'"):
        bootstrap_intervals(est, params=["w"], method="wild", by=())
    for needs_design in ("t", "hac", "studentized"):
        with pytest.raises(ValueError, match="pass it as X="):
            bootstrap_intervals(est, params=["w"], method=needs_design, by=())
    auto = bootstrap_intervals(est, params=["w"], by=())
    assert auto["method"].tolist() == ["percentile", "basic", "normal", "bca"]
    with pytest.warns(DegenerateCellWarning, match="bca needs jackknife fits"):
        no_jack = bootstrap_intervals(est[est["resample"] >= 0], params=["w"], method="bca", by=())
    assert np.isnan(no_jack["lower"].iloc[0]) and "sweep.jackknife=true" in no_jack["note"].iloc[0]


def test_jackknife_runs_and_residual_scheme_in_the_plan(tmp_path):
    base = ("experiment=linear_synthetic", "sweep=bootstrap", "sweep.resamples=3")
    cfg = make_config(tmp_path, *base, "intervals.methods=[percentile,bca]")
    dataset = load_dataset(cfg["data"])
    runs = plan(cfg, dataset.digest(), dataset.n_rows)
    assert cfg["sweep"]["jackknife"] is True  # bca asked for: jackknife runs planned
    assert [r.kind for r in runs].count("jackknife") == dataset.n_rows == 80
    assert {r.resample for r in runs if r.kind == "jackknife"} == set(range(-80, 0))
    assert np.array_equal(resample_rows(5, 0, -3), [0, 1, 3, 4])
    case = {r.resample: r.run_id for r in runs}
    residual = {
        r.resample: r.run_id
        for r in plan(
            make_config(tmp_path, *base, "sweep.scheme=residual", "sweep.jackknife=true"),
            dataset.digest(),
            dataset.n_rows,
        )
    }
    # the scheme changes the bootstrap draws only: resample 0 and the jackknife fits are shared
    assert all((case[k] == residual[k]) == (k <= 0) for k in case)


def test_residual_resampling_adds_drawn_residuals_to_the_fitted_values(tmp_path):
    cfg = make_config(
        tmp_path, "experiment=linear_synthetic", "sweep.resamples=2", "sweep.scheme=residual", "train.dtype=float64"
    )
    dataset = load_dataset(cfg["data"])
    problem = problem_from(cfg, dataset)
    run = next(r for r in plan(cfg, dataset.digest()) if r.resample == 2)
    x, y = resample_data(problem, run)
    X = np.column_stack([np.ones(dataset.n_rows), dataset.x[:, 0]])
    beta = np.linalg.lstsq(X, dataset.y[:, 0], rcond=None)[0]
    resid = dataset.y[:, 0] - X @ beta
    expected = X @ beta + resid[resample_rows(dataset.n_rows, run.seed, 2)]
    np.testing.assert_allclose(x.numpy(), dataset.x)
    np.testing.assert_allclose(y.numpy()[:, 0], expected, atol=1e-12)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["intervals.methods=[percentile,bca]", "sweep.jackknife=false"], "needs jackknife runs"),
        (["intervals.methods=[percentile,wild]"], "got 'wild'"),
        (
            [
                "intervals.methods=[studentized]",
                "~model.degree",
                "~model.names",
                "model._target_=torch.nn.Linear",
                "+model.in_features=1",
                "+model.out_features=1",
                "init=null",
            ],
            "studentized need a model linear",
        ),
        (
            ["sweep.scheme=bayes"],
            "`sweep.scheme` must be one of case, residual, moving_block, circular_block, stationary, wild; got 'bayes'",
        ),
        (["intervals.max_dropped_share=1.5"], "`intervals.max_dropped_share` must be between 0 and 1"),
        (["intervals.statuses=[ok,finished]"], "`intervals.statuses` must hold names from ok, not_converged"),
        (
            [
                "sweep.scheme=residual",
                "~model.degree",
                "~model.names",
                "model._target_=torch.nn.Linear",
                "+model.in_features=1",
                "+model.out_features=1",
                "init=null",
            ],
            "residual needs a model linear",
        ),
    ],
)
def test_interval_settings_are_validated(tmp_path, overrides, message):
    cfg = make_config(tmp_path, "experiment=linear_synthetic", *overrides)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate(cfg)


@pytest.mark.e2e
@pytest.mark.slow
def test_sweep_with_jackknife_and_residual_scheme_gives_every_method_and_plots(out_dir):
    """linear_synthetic (80 rows): resample 0, 15 residual draws, 80 jackknife fits, at a
    learning rate that converges and one that diverges; gradient descent reaches OLS, so the
    bootstrap values must equal least squares on the residual-resampled data we build here."""
    _, est = run_sweep(
        out_dir,
        "experiment=linear_synthetic",
        "sweep=bootstrap",
        "sweep.resamples=15",
        "sweep.scheme=residual",
        "sweep.lr=[0.5,5]",
        "train.epochs=300",
        "train.log_every=20",
        "train.dtype=float64",
        "intervals.methods=[percentile,basic,bca,normal,t,hc3]",
        "launcher=debug",
        "launcher.runs_per_task=200",
    )
    assert est.groupby("kind").size().to_dict() == {"bootstrap": 30, "jackknife": 160, "original": 2}
    good = est[est["lr"] == 0.5]
    assert (good["status"] == "ok").all() and (est.loc[est["lr"] == 5, "status"] == "diverged").all()
    data = load_dataset(make_config(out_dir, "experiment=linear_synthetic")["data"])
    X, y = np.column_stack([np.ones(data.n_rows), data.x[:, 0]]), data.y[:, 0]
    beta = np.linalg.lstsq(X, y, rcond=None)[0]
    for row in good[good["kind"] == "bootstrap"].itertuples():
        y_star = X @ beta + (y - X @ beta)[resample_rows(data.n_rows, row.seed, row.resample)]
        assert [row.b, row.w] == pytest.approx(np.linalg.lstsq(X, y_star, rcond=None)[0], abs=1e-6)

    ci = pd.read_parquet(out_dir / "intervals.parquet")
    fine = ci[ci["lr"] == 0.5]
    assert sorted(fine["method"].unique()) == ["basic", "bca", "hc3", "normal", "percentile", "t"]
    assert fine["lower"].notna().all() and (fine["lower"] < fine["upper"]).all()
    assert set(fine.loc[fine["method"] == "bca", "scheme"]) == {"residual"}
    assert fine.loc[fine["method"] == "bca", "acceleration"].notna().all()
    assert (fine.loc[fine["method"] == "percentile", "mc_se_lower"] > 0).all()
    dead = ci[(ci["lr"] == 5) & ci["method"].isin(["percentile", "bca"])]
    assert dead["lower"].isna().all() and dead["note"].str.contains("diverged").all()
    assert (dead["n_dropped_diverged"] == 15).all()
    for name in ("bootstrap_b.png", "bootstrap_w.png", "grid_final_loss.png"):
        assert (out_dir / name).stat().st_size > 10_000, name
