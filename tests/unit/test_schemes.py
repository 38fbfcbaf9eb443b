"""Issue 23: the index rules of the block bootstraps and the weights of the wild bootstrap,
tested against their definitions (block starts, wrap, geometric lengths with the stated
mean; Rademacher and Mammen moments)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core import schemes

N = 23


def uniforms(runs: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((runs, width))


def blocks_of(rows: np.ndarray, block_length: int) -> list[np.ndarray]:
    return [rows[i : i + block_length] for i in range(0, len(rows), block_length)]


@pytest.mark.parametrize("b", [1, 3, 5, 23])
def test_moving_blocks_are_runs_of_b_rows_that_never_wrap(b):
    u = uniforms(200, N)
    rows = schemes.moving_block_rows(u, N, b)
    assert rows.shape == (200, N)
    for draw, us in zip(rows, u):
        for j, block in enumerate(blocks_of(draw, b)):
            start = int(np.floor(us[j] * (N - b + 1)))  # the j-th uniform picks the j-th block's start
            np.testing.assert_array_equal(block, np.arange(start, start + len(block)))
            assert 0 <= start <= N - b
    # every start 0..n-b is reachable, and no other
    starts = schemes.moving_block_rows(uniforms(1, 4000, 1), 4000 * b, b)[0][::b]
    assert starts.min() >= 0 and starts.max() <= 4000 * b - b


@pytest.mark.parametrize("b", [1, 4, 7])
def test_circular_blocks_start_anywhere_and_wrap(b):
    u = uniforms(300, N, 2)
    rows = schemes.circular_block_rows(u, N, b)
    wrapped = 0
    for draw, us in zip(rows, u):
        for j, block in enumerate(blocks_of(draw, b)):
            start = int(np.floor(us[j] * N))
            np.testing.assert_array_equal(block, (start + np.arange(len(block))) % N)
            wrapped += int(start + len(block) > N)
    assert wrapped > 0 or b == 1  # some blocks ran past the last row and went on at row 0
    # wrapping makes every row equally likely (the moving blocks under-draw the ends)
    many = schemes.circular_block_rows(uniforms(4000, N, 3), N, b)
    share = np.bincount(many.ravel(), minlength=N) / many.size
    assert np.abs(share - 1 / N).max() < 0.15 / N


def test_block_draws_take_the_counted_number_of_uniforms():
    assert schemes.blocks_needed(23, 5) == 5 and schemes.blocks_needed(20, 5) == 4 and schemes.blocks_needed(3, 1) == 3
    u = uniforms(3, N, 4)
    extra = np.concatenate([u, uniforms(3, 10, 5)], axis=1)  # uniforms past the blocks needed change nothing
    np.testing.assert_array_equal(schemes.moving_block_rows(u, N, 4), schemes.moving_block_rows(extra, N, 4))


@pytest.mark.parametrize("mean", [1.0, 2.5, 6.0])
def test_geometric_lengths_have_the_stated_mean_and_law(mean):
    lengths = schemes.geometric_lengths(np.random.default_rng(6).random(200_000), mean)
    assert lengths.min() >= 1
    assert lengths.mean() == pytest.approx(mean, rel=0.02)
    p = 1 / mean
    for length in (1, 2, 3):
        assert np.mean(lengths == length) == pytest.approx(p * (1 - p) ** (length - 1), abs=0.005)


def test_stationary_draws_follow_their_blocks_and_wrap():
    n, mean = N, 4.0
    start_u, length_u = uniforms(100, n, 7), uniforms(100, n, 8)
    rows = schemes.stationary_rows(start_u, length_u, n, mean)
    lengths = schemes.geometric_lengths(length_u, mean)
    assert rows.shape == (100, n)
    for draw, su, ls in zip(rows, start_u, lengths):
        position = 0
        for j in range(n):  # block j: its start, then consecutive rows modulo n, for ls[j] rows
            if position >= n:
                break
            start = int(np.floor(su[j] * n))
            take = min(ls[j], n - position)
            np.testing.assert_array_equal(draw[position : position + take], (start + np.arange(take)) % n)
            position += take


def test_stationary_blocks_have_the_stated_mean_length():
    """Read back from the draws: a new block begins where a row is not its predecessor + 1 (mod n),
    or (rarely) a new block starts exactly there; the mean run length is close to the stated mean."""
    n, mean = 400, 5.0
    rows = schemes.stationary_rows(uniforms(200, n, 9), uniforms(200, n, 10), n, mean)
    breaks = (rows[:, 1:] != (rows[:, :-1] + 1) % n).sum()
    assert (n - 1) * 200 / breaks == pytest.approx(mean, rel=0.05)
    np.testing.assert_array_equal(
        schemes.stationary_rows(uniforms(2, n, 11), uniforms(2, n, 12), n, 1.0),
        np.floor(uniforms(2, n, 11) * n).astype(int),  # mean 1: every row its own block, i.e. case resampling
    )


def test_rademacher_and_mammen_moments():
    u = np.random.default_rng(13).random(400_000)
    rad = schemes.rademacher_weights(u)
    assert set(np.unique(rad)) == {-1.0, 1.0}
    assert rad.mean() == pytest.approx(0, abs=0.005) and (rad**2).mean() == 1.0
    mam = schemes.mammen_weights(u)
    low, high = -(np.sqrt(5) - 1) / 2, (np.sqrt(5) + 1) / 2
    assert set(np.unique(mam)) == {low, high}
    p = (np.sqrt(5) + 1) / (2 * np.sqrt(5))
    # the exact moments of the two-point law, then the sample's
    assert p * low + (1 - p) * high == pytest.approx(0, abs=1e-15)
    assert p * low**2 + (1 - p) * high**2 == pytest.approx(1, abs=1e-15)
    assert p * low**3 + (1 - p) * high**3 == pytest.approx(1, abs=1e-15)
    assert mam.mean() == pytest.approx(0, abs=0.005)
    assert (mam**2).mean() == pytest.approx(1, abs=0.01) and (mam**3).mean() == pytest.approx(1, abs=0.02)
