"""The learning-rate bound of SGD on a least-squares fit (pipeline/lr_bound.py): against
torch.optim.SGD itself, and against real sweeps (gram engine, float64)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.core.errors import ConfigError
from pipeline.core.settings import SGDSettings
from pipeline.data.load import load_dataset
from pipeline.launch.prepare import prepare
from pipeline.stats.lr_bound import contraction, curvatures, fastest_lr, max_stable_lr, mode_maps, radii
from tests.conftest import make_config, run_sweep

FAST = ("launcher=debug", "train.engine=gram", "train.dtype=float64", "intervals.plots=false", "report=false")

RULES = {
    "plain": SGDSettings(),
    "momentum": SGDSettings(momentum=0.9),
    "dampening": SGDSettings(momentum=0.5, dampening=0.3),
    "nesterov": SGDSettings(momentum=0.8, nesterov=True),
    "weight_decay": SGDSettings(momentum=0.3, weight_decay=0.5),
}


def _torch_sgd_error(features: np.ndarray, y: np.ndarray, lr: float, rule: SGDSettings, steps: int) -> float:
    """|theta - theta_0| growth of torch.optim.SGD itself on the mean squared error."""
    X, Y = torch.tensor(features), torch.tensor(y)
    theta = torch.zeros(features.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD(
        [theta],
        lr=lr,
        momentum=rule.momentum,
        dampening=rule.dampening,
        weight_decay=rule.weight_decay,
        nesterov=rule.nesterov,
    )
    for _ in range(steps):
        opt.zero_grad()
        ((X @ theta - Y) ** 2).mean().backward()
        opt.step()
    return float(theta.detach().abs().max())


@pytest.mark.parametrize("rule", RULES.values(), ids=RULES.keys())
def test_the_bound_separates_torch_sgd_that_converges_from_sgd_that_diverges(rule):
    rng = np.random.default_rng(0)
    features = np.column_stack([np.ones(40), rng.normal(3, 2, 40), rng.normal(0, 1, 40)])
    y = features @ [1.0, -0.5, 2.0] + rng.normal(0, 0.1, 40)
    lams = curvatures(features.T @ features, 2 / 40, rule)
    bound = max_stable_lr(lams[-1], rule)
    assert contraction(0.98 * bound, lams, rule) < 1 < contraction(1.02 * bound, lams, rule)
    below = _torch_sgd_error(features, y, 0.97 * bound, rule, 3000)
    above = _torch_sgd_error(features, y, 1.03 * bound, rule, 3000)
    assert below < 100 and (not np.isfinite(above) or above > 1e6), (below, above)


@pytest.mark.parametrize("rule", RULES.values(), ids=RULES.keys())
def test_closed_form_radii_equal_the_eigenvalues_of_each_modes_map(rule):
    lams, lrs = np.array([0.3, 1.0, 4.0]), np.array([0.01, 0.2, 0.45, 0.9])
    direct = [
        np.abs(np.linalg.eigvals(mode_maps(lr, lams, rule))).max() if rule.momentum else np.abs(1 - lr * lams).max()
        for lr in lrs
    ]
    np.testing.assert_allclose(radii(lrs, lams, rule), direct, rtol=1e-12)


def test_fastest_lr_minimises_the_contraction():
    lams = np.array([0.5, 2.0, 9.0])
    for rule in (SGDSettings(), SGDSettings(momentum=0.6), SGDSettings(momentum=0.6, nesterov=True)):
        best = fastest_lr(lams, rule)
        grid = np.linspace(0.001, 0.999, 999) * max_stable_lr(9.0, rule)
        assert contraction(best, lams, rule) <= min(contraction(lr, lams, rule) for lr in grid) + 1e-9
    assert fastest_lr(lams, SGDSettings()) == pytest.approx(2 / 9.5)


def _original_bound(cfg: dict, momentum: float) -> float:
    """2 (1 + m) / lambda_max of 2/n F^T F, F = [1, x]: the brief's formula, computed here."""
    data = load_dataset(cfg["data"])
    features = np.column_stack([np.ones(data.n_rows), data.x[:, 0]])
    return 2 * (1 + momentum) / np.linalg.eigvalsh(2 / data.n_rows * features.T @ features)[-1]


@pytest.mark.parametrize("momentum", [0.0, 0.7])
def test_sweep_runs_below_their_bound_stay_finite_and_above_it_diverge(tmp_path, momentum):
    extra = [f"+optim.momentum={momentum}"] if momentum else []
    bound = _original_bound(make_config(tmp_path, "experiment=linear_synthetic"), momentum)
    lrs = [round(bound * share, 8) for share in (0.5, 0.9, 1.15, 1.4)]
    _, est = run_sweep(
        tmp_path / "s",
        "experiment=linear_synthetic",
        "sweep=bootstrap",
        "sweep.resamples=6",
        f"sweep.lr=[{','.join(map(str, lrs))}]",
        "train.epochs=3000",
        "train.log_every=100",
        *extra,
        *FAST,
    )
    original = est[est["resample"] == 0]
    assert original["lr_max_stable"].to_numpy() == pytest.approx(bound, rel=1e-10)
    assert est["lr_max_stable"].nunique() > 1  # each draw from its own rows
    share = est["lr"] / est["lr_max_stable"]
    assert (est.loc[share < 0.95, "status"] != "diverged").all()
    assert (est.loc[share > 1.1, "status"] == "diverged").all() and (share > 1.1).sum() >= 10
    if momentum == 0:  # plain GD: every mode's gradient shrinks by at most `rate` per epoch
        predicted_ok = est[est["epochs_to_tol"] <= 3000]
        assert len(predicted_ok) and (predicted_ok["status"] == "ok").all()


def test_lr_auto_chooses_a_grid_below_the_bound(tmp_path):
    cfg = make_config(tmp_path, "experiment=linear_synthetic", "sweep=single", "sweep.lr=auto")
    prepared = prepare(cfg)
    lrs = prepared.cfg["sweep"]["lr"]
    bound = _original_bound(cfg, 0.0)
    assert len(lrs) >= 4 and all(0 < lr < bound for lr in lrs) and max(lrs) > 0.9 * bound
    assert sorted({r.lr for r in prepared.runs}) == lrs


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["optim._target_=torch.optim.Adam"], "`sweep.lr` auto needs .* 'torch.optim.Adam'"),
        (["loss._target_=torch.nn.L1Loss"], "`sweep.lr` auto needs .* not a model linear"),
        (["sweep.lr=fast"], "`sweep.lr` must be a list of learning rates, null or auto; got 'fast'"),
    ],
)
def test_lr_auto_refuses_what_it_cannot_bound(tmp_path, overrides, message):
    cfg = make_config(tmp_path, "experiment=linear_synthetic", "sweep=single", "sweep.lr=auto", *overrides)
    with pytest.raises(ConfigError, match=message):
        prepare(cfg)


def test_estimates_of_other_optimisers_have_no_bound_columns(tmp_path):
    _, est = run_sweep(
        tmp_path / "s",
        "experiment=linear_synthetic",
        "sweep=single",
        "optim._target_=torch.optim.Adam",
        "train.epochs=50",
        "launcher=debug",
        "intervals.plots=false",
        "report=false",
    )
    assert "lr_max_stable" not in est.columns and isinstance(est, pd.DataFrame)
