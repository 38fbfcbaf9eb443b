"""Issue 23: Politis-White block lengths equal arch's `optimal_block_length` to 1e-8; the lag-1
autocorrelation of the dependence note; `sweep.block_length=auto` per scheme."""

from __future__ import annotations

import numpy as np
import pytest
from arch.bootstrap import optimal_block_length as arch_optimal_block_length

from pipeline.stats.block_length import lag1_autocorrelation, optimal_block_length, scheme_block_length


def ar1(n: int, phi: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = np.empty(n)
    e[0] = rng.normal() / np.sqrt(1 - phi**2)
    for t in range(1, n):
        e[t] = phi * e[t - 1] + rng.normal()
    return e


SERIES = {
    "white noise, 143": np.random.default_rng(1).normal(size=143),
    "AR(1) 0.6, 143": ar1(143, 0.6, 2),
    "AR(1) 0.9, 500": ar1(500, 0.9, 3),
    "AR(1) -0.5, 50": ar1(50, -0.5, 4),
    "random walk, 200": np.cumsum(np.random.default_rng(5).normal(size=200)),
    "AR(1) 0.3, 12": ar1(12, 0.3, 6),
    "AR(1) 0.3, 3000": ar1(3000, 0.3, 7),
    "trend residuals": np.sin(np.arange(143) / 9.0) + 0.1 * np.random.default_rng(8).normal(size=143),
}


@pytest.mark.parametrize("name", list(SERIES))
def test_optimal_block_length_equals_arch(name):
    series = SERIES[name]
    ours = optimal_block_length(series)
    ref = arch_optimal_block_length(series).iloc[0]
    assert ours.stationary == pytest.approx(ref["stationary"], abs=1e-8, rel=1e-12)
    assert ours.circular == pytest.approx(ref["circular"], abs=1e-8, rel=1e-12)


def test_stronger_dependence_gives_longer_blocks_and_the_cap_holds():
    weak, strong = optimal_block_length(ar1(400, 0.2, 9)), optimal_block_length(ar1(400, 0.9, 9))
    assert strong.circular > 3 * weak.circular
    walk = optimal_block_length(np.cumsum(np.random.default_rng(0).normal(size=90)))
    assert walk.circular <= np.ceil(min(3 * np.sqrt(90), 90 / 3))


def test_auto_block_length_per_scheme():
    series = SERIES["AR(1) 0.6, 143"]
    lengths = optimal_block_length(series)
    assert scheme_block_length("stationary", series) == round(lengths.stationary, 2)
    for scheme in ("moving_block", "circular_block"):
        assert scheme_block_length(scheme, series) == round(lengths.circular)
    assert scheme_block_length("circular_block", np.ones(20)) == 1.0  # nothing to read: blocks of one row
    assert scheme_block_length("stationary", SERIES["white noise, 143"]) >= 1.0


def test_lag1_autocorrelation_is_its_definition():
    x = SERIES["AR(1) 0.6, 143"]
    e = x - x.mean()
    assert lag1_autocorrelation(x) == pytest.approx(np.sum(e[1:] * e[:-1]) / np.sum(e * e), rel=1e-14)
    assert 0.4 < lag1_autocorrelation(ar1(2000, 0.6, 11)) < 0.7
    assert np.isnan(lag1_autocorrelation(np.full(5, 2.0)))
    with pytest.raises(ValueError, match="at least 2"):
        optimal_block_length([1.0])
