"""The draw rule (pipeline/core/resampling.py): a draw depends on (seed, resample) alone, its
counts are the histogram of the rows the textbook loop trains on, and each rule is pinned."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.core import schemes as rules
from pipeline.core.resampling import (
    BLOCK_LENGTH_STREAM,
    BLOCK_START_STREAM,
    DRAW_RULE,
    KEYED_RULE,
    LEGACY_RULE,
    WILD_STREAM,
    bootstrap_indices,
    draw,
    draw_arrays,
    keyed_uniforms,
    resample_rows,
    residual_fit,
)
from pipeline.core.runs import (
    BLOCK_SCHEMES,
    CASE,
    CIRCULAR_BLOCK,
    MOVING_BLOCK,
    RADEMACHER,
    RESIDUAL,
    STATIONARY,
    WILD,
    Run,
)

SETTINGS = {"block_length": 4, "wild_weights": "mammen"}  # a stationary mean of 4 too


def definition_rows(scheme: str, n: int, seed: int, k: int, length: float = 4) -> np.ndarray:
    """A block scheme's rows of draw k, from its index rule (`core.schemes`) on the keyed uniforms
    of its streams, as the module docstring defines them."""
    if scheme == STATIONARY:
        starts = keyed_uniforms(seed, [k], n, BLOCK_START_STREAM)
        return rules.stationary_rows(starts, keyed_uniforms(seed, [k], n, BLOCK_LENGTH_STREAM), n, length)[0]
    starts = keyed_uniforms(seed, [k], rules.blocks_needed(n, int(length)), BLOCK_START_STREAM)
    rule = rules.moving_block_rows if scheme == MOVING_BLOCK else rules.circular_block_rows
    return rule(starts, n, int(length))[0]


def test_todays_rule_is_the_keyed_generator():
    assert DRAW_RULE == KEYED_RULE != LEGACY_RULE


def test_the_legacy_rule_is_numpys_generator_per_draw():
    for k in (1, 2, 17):
        expected = np.random.default_rng([5, k]).integers(0, 30, size=30)
        assert np.array_equal(resample_rows(30, 5, k, LEGACY_RULE), expected)


M64 = (1 << 64) - 1


def _mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def splitmix64_rows(n: int, seed: int, k: int) -> list[int]:
    """The keyed rule written out in plain Python integers, from its definition."""
    key = _mix((_mix((seed + 0x9E3779B97F4A7C15) & M64) + k * 0xD1B54A32D192ED03) & M64)
    outputs = [_mix((key + (i + 1) * 0x9E3779B97F4A7C15) & M64) for i in range(n)]
    return [((u >> 32) * n) >> 32 for u in outputs]


def test_the_keyed_rule_is_splitmix64_as_written_and_pinned():
    """A change here re-draws every new-rule sweep's resamples (and must not happen)."""
    for n, seed, k in [(10, 0, 1), (10, 7, 3), (1000, 123456789, 99999), (3, 2**40, 2**31 + 5)]:
        assert resample_rows(n, seed, k, KEYED_RULE).tolist() == splitmix64_rows(n, seed, k)
    assert resample_rows(10, 0, 1, KEYED_RULE).tolist() == [0, 2, 0, 2, 6, 0, 7, 6, 8, 7]


@pytest.mark.parametrize("rule", [LEGACY_RULE, KEYED_RULE])
def test_a_draw_depends_on_seed_and_resample_alone(rule):
    together = bootstrap_indices(50, 7, [3, 1, 9, 4], rule)
    for i, k in enumerate([3, 1, 9, 4]):
        assert np.array_equal(together[i], bootstrap_indices(50, 7, [k], rule)[0])
        assert np.array_equal(together[i], resample_rows(50, 7, k, rule))
    assert not np.array_equal(resample_rows(50, 7, 3, rule), resample_rows(50, 8, 3, rule))
    assert not np.array_equal(resample_rows(50, 7, 3, rule), resample_rows(50, 7, 4, rule))
    mixed = draw(50, [7] * 5, [0, 3, 0, 9, 3], [CASE, CASE, RESIDUAL, RESIDUAL, RESIDUAL], rule)
    assert np.array_equal(mixed.rows[0], np.arange(50)) and np.array_equal(mixed.rows[1], together[0])
    assert mixed.rows[3].tolist() == list(range(50)) and np.array_equal(mixed.residual_rows[4], together[0])
    assert mixed.rebuilt.tolist() == [False, False, False, True, True]  # resample 0 keeps y's own rows


def test_jackknife_draws_leave_one_row_out_and_sizes_do_not_mix():
    assert resample_rows(5, 0, -3).tolist() == [0, 1, 3, 4]
    with pytest.raises(ValueError, match="one size"):
        draw(5, [0, 0], [1, -1], [CASE, CASE])
    with pytest.raises(ValueError, match="leaves out row 5"):
        resample_rows(5, 0, -6)


def test_keyed_draws_are_uniform():
    """Rows of 2,000 draws of 1,000 rows: every row about equally often (chi-square), and the
    counts of a draw spread as a multinomial's (about 36.8% of rows left out)."""
    rows = bootstrap_indices(1000, 11, np.arange(1, 2001), KEYED_RULE)
    per_row = np.bincount(rows.ravel(), minlength=1000)
    chi2 = ((per_row - 2000) ** 2 / 2000).sum()
    assert 1000 - 5 * np.sqrt(2000) < chi2 < 1000 + 5 * np.sqrt(2000)  # df 999: mean 999, sd 44.7
    counts = draw(1000, [11] * 2000, np.arange(1, 2001), [CASE] * 2000, KEYED_RULE).counts(1000)
    assert abs((counts == 0).mean() - (1 - 1 / 1000) ** 1000) < 0.002
    u = keyed_uniforms(11, [1, 2], 100_000, stream=1)
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.005


@pytest.mark.parametrize("scheme", [CASE, RESIDUAL, MOVING_BLOCK, CIRCULAR_BLOCK, STATIONARY, WILD])
def test_a_resamples_counts_are_the_counts_of_the_rows_the_reference_loop_trains_on(scheme):
    """x is the row number, so the rows a run trains on name themselves."""
    from pipeline.data.load import Dataset
    from pipeline.train.problem import build_problem, build_problem_parts, resample_data, run_draws

    n = 40
    x = np.arange(n, dtype=float)[:, None]
    dataset = Dataset(x, (1 + 0.5 * x + np.sin(x)), None, None, ("x",), ("y",), "rows")
    model = {"_target_": "pipeline.models.Features", "degree": 1}
    parts = build_problem_parts(model, {"_target_": "torch.nn.MSELoss"}, {"_target_": "torch.optim.SGD"}, dataset)
    problem = build_problem(parts, dataset, device="cpu", dtype="float64", draw_settings=SETTINGS)
    runs = [Run(f"r{k}", 0.1, 0, None, k, 3, scheme) for k in (0, 1, 2, 5, -4)]
    for run in runs:
        trained_x, trained_y = resample_data(problem, run)
        counts = run_draws(problem, [run]).counts(n)[0]
        drawn = (
            resample_rows(n, run.seed, run.resample)
            if scheme in (CASE, RESIDUAL) or run.resample <= 0
            else definition_rows(scheme, n, run.seed, run.resample)
        )
        fitted, resid = problem.residual_parts
        if scheme == RESIDUAL and run.resample > 0:  # every x; y = fitted + the drawn rows' residuals
            assert torch.equal(trained_x[:, 0], torch.arange(n, dtype=torch.float64))
            assert np.allclose(trained_y[:, 0].numpy(), fitted + resid[drawn], rtol=0, atol=1e-12)
            assert counts.tolist() == [1] * n
        elif scheme == WILD and run.resample > 0:  # every x; y = fitted + residual * v
            assert torch.equal(trained_x[:, 0], torch.arange(n, dtype=torch.float64))
            v = rules.mammen_weights(keyed_uniforms(run.seed, [run.resample], n, WILD_STREAM)[0])
            assert np.allclose(trained_y[:, 0].numpy(), fitted + resid * v, rtol=0, atol=1e-12)
            assert counts.tolist() == [1] * n
        else:
            assert np.array_equal(counts, np.bincount(trained_x[:, 0].long().numpy(), minlength=n))
            assert np.array_equal(counts, np.bincount(drawn, minlength=n))


@pytest.mark.parametrize("scheme", BLOCK_SCHEMES)
def test_block_draws_follow_their_rule_and_depend_on_seed_and_resample_alone(scheme):
    together = draw(60, [7] * 4, [3, 1, 9, 4], [scheme] * 4, KEYED_RULE, SETTINGS)
    assert not together.rebuilt.any()  # (x, y) rows, as case resampling
    for i, k in enumerate([3, 1, 9, 4]):
        alone = draw(60, [7], [k], [scheme], KEYED_RULE, SETTINGS).rows[0]
        assert np.array_equal(together.rows[i], alone)
        assert np.array_equal(alone, definition_rows(scheme, 60, 7, k))
    other_length = draw(60, [7], [3], [scheme], KEYED_RULE, {"block_length": 6}).rows[0]
    assert not np.array_equal(other_length, together.rows[0])
    if scheme != STATIONARY:  # blocks of 4 consecutive rows (circular: modulo n)
        blocks = together.rows[:, :60].reshape(4, 15, 4)
        assert ((np.diff(blocks, axis=2) % 60) == 1).all()


def test_wild_draws_keep_every_row_and_weigh_each_residual():
    n = 30
    x = np.column_stack([np.ones(n), np.linspace(0, 1, n)])
    y = 1 + 2 * x[:, 1] + np.random.default_rng(0).normal(size=n)
    fitted, resid = residual_fit(x, y)
    for weights, values in ((RADEMACHER, {-1.0, 1.0}), ("mammen", {rules.MAMMEN_LOW, rules.MAMMEN_HIGH})):
        drawn = draw(n, [5] * 3, [1, 2, 3], [WILD] * 3, KEYED_RULE, {"wild_weights": weights})
        assert drawn.rebuilt.all() and (drawn.rows == np.arange(n)).all()
        assert set(np.unique(drawn.residual_weights)) == values
        np.testing.assert_array_equal(drawn.responses(y, fitted, resid), fitted + resid * drawn.residual_weights)
    # the mean of y* over draws is the fitted values (E v = 0): within 4 Monte-Carlo errors at every row
    many = np.arange(1, 20_001)
    for weights in (RADEMACHER, "mammen"):
        _, ys = draw_arrays(x, y, [(5, k, WILD) for k in many], KEYED_RULE, (fitted, resid), {"wild_weights": weights})
        error = np.abs(resid) / np.sqrt(len(many))  # sd of y* at a row is |residual| (E v^2 = 1)
        assert (np.abs(ys.mean(axis=0) - fitted) < 4 * error + 1e-12).all()
        np.testing.assert_allclose(ys.var(axis=0), resid**2, rtol=0.05)


def test_block_and_wild_draws_need_the_keyed_rule_and_their_settings():
    with pytest.raises(ValueError, match="splitmix64 rule only"):
        draw(20, [1], [1], [MOVING_BLOCK], LEGACY_RULE, SETTINGS)
    with pytest.raises(ValueError, match="needs its block_length"):
        draw(20, [1], [1], [STATIONARY], KEYED_RULE, {})
    with pytest.raises(ValueError, match="needs its wild_weights"):
        draw(20, [1], [1], [WILD], KEYED_RULE, {"block_length": 3})
    assert draw(20, [1], [0], [WILD], KEYED_RULE, {}).rows[0].tolist() == list(range(20))  # resample 0: no settings
