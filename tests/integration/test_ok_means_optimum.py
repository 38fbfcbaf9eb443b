"""Issue 22, item 1: `ok` means the run reached the optimum where the optimum is known.

An ill-conditioned polynomial (a quartic on x in [0, 1]: cond(X^T X) = 4e5) is the case
the gradient rule gets wrong: after 10,000 epochs of SGD every gradient norm is far below
`train.grad_tol`, yet the parameters are still most of their own size away from the
least-squares fit. Those runs are `not_converged`, with the reason; given enough epochs
(20 million, cheap for the Gram engine, which applies an epoch's matrix power) the same runs
are `ok` and match the closed form to `train.param_tol`. (Degree 8 on [0, 10], the issue's
example, has cond 4e17: no number of float64 epochs reaches its optimum.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.core.settings import TrainSettings
from pipeline.report.answer import OPTIMISER_MARK
from pipeline.report.summary import sweep_summary
from pipeline.train.engines.divergence import parameter_gap, run_statuses
from tests.conftest import run_sweep

N_ROWS, DEGREE = 40, 4
NAMES = ["w1", "w2", "w3", "w4", "b"]  # pipeline.models.Features: the powers of x, then the intercept


@pytest.fixture(scope="module")
def quartic(tmp_path_factory) -> tuple[str, float]:
    """(csv path, a learning rate at half SGD's stable bound on the original rows)."""
    rng = np.random.default_rng(7)
    x = np.linspace(0.0, 1.0, N_ROWS)
    y = 1.0 + x - 0.5 * x**2 + rng.normal(0.0, 0.1, N_ROWS)
    path = tmp_path_factory.mktemp("quartic") / "quartic.csv"
    pd.DataFrame({"x": x, "y": y}).to_csv(path, index=False)
    features = np.vander(x, DEGREE + 1, increasing=True)
    lam_max = np.linalg.eigvalsh(2 / N_ROWS * features.T @ features).max()
    return str(path), float(1.0 / lam_max)


def quartic_sweep(out_dir, quartic, *overrides):
    path, lr = quartic
    return run_sweep(
        out_dir,
        "experiment=user_data",
        f"data.path={path}",
        "data.standardize=false",
        f"model.degree={DEGREE}",
        f"optim.lr={lr}",
        "train.dtype=float64",
        "intervals.plots=false",
        "launcher=debug",
        *overrides,
    )


# 10,000 epochs: every gradient below grad_tol, no run near its optimum; 20 million: every
# bootstrap draw there (the worst-conditioned draws need about 8 million, `status_note` says)
SHORT = ("train.epochs=10000", "train.log_every=1000", "sweep.resamples=8")
LONG = ("train.epochs=20000000", "train.log_every=5000000", "sweep.resamples=8")


def relative_gap(est: pd.DataFrame) -> np.ndarray:
    return parameter_gap(est[NAMES].to_numpy(float), est[[f"ols_{n}" for n in NAMES]].to_numpy(float))


@pytest.mark.slow  # whole sweeps: the full suite's tier
@pytest.mark.parametrize("engine", ["reference", "gram", "batched"])
def test_runs_ok_by_the_gradient_but_far_from_the_closed_form_are_not_converged(tmp_path, quartic, engine):
    _, est = quartic_sweep(
        tmp_path / engine,
        quartic,
        f"train.engine={engine}",
        "train.epochs=10000",
        "train.log_every=1000",
        "sweep.resamples=1",
    )
    assert len(est) == 2
    assert (est["grad_norm"] < 1e-3).all()  # the gradient rule alone would call every run ok ...
    gap = relative_gap(est)
    assert (gap > 0.1).all()  # ... yet each is more than a tenth of its scale from the optimum
    assert (est["status"] == "not_converged").all()
    for note in est["status_note"]:
        assert "from the closed-form optimum (train.param_tol=0.0003)" in note
        assert "below train.grad_tol" in note
        assert "more epochs at this lr to reach train.param_tol" in note  # where the lr bound knows the rate


def test_given_enough_epochs_the_same_runs_are_ok_and_at_the_closed_form(tmp_path, quartic):
    _, short = quartic_sweep(tmp_path / "short", quartic, *SHORT)
    _, long = quartic_sweep(tmp_path / "long", quartic, *LONG)
    assert set(short["run_id"]).isdisjoint(long["run_id"])  # other epochs, other runs
    assert (short["status"] == "not_converged").all()
    assert (long["status"] == "ok").all() and (long["status_note"] == "").all()
    assert (relative_gap(long) <= 3e-4).all()
    ols = long[[f"ols_{n}" for n in NAMES]].to_numpy(float)
    scale = np.abs(ols).max(axis=1, keepdims=True)
    assert (np.abs(long[NAMES].to_numpy(float) - ols) <= 3e-4 * scale).all()


def test_another_param_tol_is_another_run_and_judges_the_same_fit_by_itself(tmp_path, quartic):
    args = (*SHORT[:2], "sweep.resamples=0", "train.engine=gram")
    _, default = quartic_sweep(tmp_path / "default", quartic, *args)
    _, loose = quartic_sweep(tmp_path / "loose", quartic, *args, "train.param_tol=10")
    assert default["run_id"].iloc[0] != loose["run_id"].iloc[0]  # it sets the stored status: in the id
    assert default["status"].iloc[0] == "not_converged" and loose["status"].iloc[0] == "ok"
    np.testing.assert_array_equal(default[NAMES].to_numpy(), loose[NAMES].to_numpy())


def test_intervals_of_unconverged_draws_say_the_optimiser_sets_their_width(tmp_path, quartic):
    out = tmp_path / "sweep"
    quartic_sweep(out, quartic, *SHORT, "intervals.statuses=[ok,not_converged]")  # use them anyway
    ci = pd.read_parquet(out / "intervals.parquet")
    boot = ci[ci["method"] == "percentile"]
    assert (boot["opt_to_sampling"] > 0.5).all()  # the optimiser's error rivals the sampling error
    assert boot["note"].str.contains("the optimiser, not only the data, sets this width").all()
    assert ci.loc[ci["method"].isin(["t", "hc3"]), "opt_to_sampling"].isna().all()
    assert OPTIMISER_MARK in sweep_summary(out)


def test_intervals_of_converged_draws_are_the_datas(tmp_path, quartic):
    out = tmp_path / "sweep"
    quartic_sweep(out, quartic, *LONG)
    ci = pd.read_parquet(out / "intervals.parquet")
    boot = ci[ci["method"] == "percentile"]
    assert (boot["opt_to_sampling"] < 0.01).all()
    assert not boot["note"].str.contains("optimiser").any()
    assert OPTIMISER_MARK not in sweep_summary(out)


SETTINGS = TrainSettings(grad_tol=1e-3, param_tol=1e-2)


def test_the_status_rule_without_a_closed_form_or_a_unique_one_reads_the_gradient():
    params = np.array([[1.0, 2.0], [1.0, 2.0], [np.nan, 2.0], [1.0, 2.0]])
    status, note = run_statuses(
        np.array([False, False, False, True]),
        np.array([10, 10, 10, 3]),
        np.ones(4),
        params,
        np.array([1e-4, 1.0, 0, 0]),
        SETTINGS,
    )
    assert status.tolist() == ["ok", "not_converged", "diverged", "diverged"]
    assert note[0] == "" and "final gradient norm 1 above train.grad_tol=0.001" in note[1]
    assert note[2] == "final loss or parameters not finite" and "logged epoch 3" in note[3]
    ols = np.array([[5.0, 5.0], [1.0, 2.0]])  # run 0 is far from a unique optimum, run 1 has none (rank 1 < 2)
    status, note = run_statuses(
        np.zeros(2, bool),
        np.full(2, 10),
        np.ones(2),
        params[:2],
        np.array([1e-4, 1e-4]),
        SETTINGS,
        ols,
        np.array([2, 1]),
    )
    assert status.tolist() == ["not_converged", "ok"]
    assert note[0].startswith("parameters 0.8 of their scale from the closed-form optimum")
    assert note[1] == "closed-form optimum not unique (rank-deficient design): judged by the gradient"
