"""The rules of the block and wild bootstraps, as pure functions of given uniforms.

The draw of resample k must depend on (seed, k) alone, so these functions draw nothing:
they turn uniforms in [0, 1) (from the keyed generator of `pipeline.core.resampling`, one
row of uniforms per run, which makes the `Draws` of each scheme from them) into what a
draw takes. Rows are the data's rows in their order
(the file's, or `data.order`'s); n rows, a draw has n rows again.

    moving_block    ceil(n / b) blocks of b consecutive rows, each starting at a uniform row
                    in 0..n - b (Kuensch 1989); the first n rows of their concatenation
    circular_block  the same with starts in 0..n - 1, rows taken modulo n: the series wraps,
                    so every row is equally likely (Politis and Romano 1992)
    stationary      blocks of geometric length, P(L = l) = p (1 - p)^(l - 1), mean 1 / p = b,
                    each starting at a uniform row and wrapping (Politis and Romano 1994);
                    as arch's StationaryBootstrap, whose per-row rule (with probability p
                    start a new block) draws the same distribution
    wild            every row kept, its residual times v: Rademacher v = -1 or 1 with
                    probability 1/2 each, or Mammen's two-point v = -(sqrt5 - 1)/2 with
                    probability (sqrt5 + 1) / (2 sqrt5), else (sqrt5 + 1)/2 (E v = 0,
                    E v^2 = 1, E v^3 = 1)

numpy only; every function works on a batch of runs at once (leading axis: runs).
"""

from __future__ import annotations

import math

import numpy as np

SQRT5 = math.sqrt(5.0)
MAMMEN_LOW, MAMMEN_HIGH = -(SQRT5 - 1) / 2, (SQRT5 + 1) / 2
MAMMEN_P_LOW = (SQRT5 + 1) / (2 * SQRT5)  # probability of the low value


def blocks_needed(n_rows: int, block_length: int) -> int:
    """ceil(n / b): how many fixed-length blocks cover n rows (the uniforms a draw reads)."""
    return -(-n_rows // block_length)


def _fixed_blocks(starts: np.ndarray, n_rows: int, block_length: int) -> np.ndarray:
    rows = starts[..., :, None] + np.arange(block_length)
    return rows.reshape(*starts.shape[:-1], -1)[..., :n_rows]


def moving_block_rows(uniforms: np.ndarray, n_rows: int, block_length: int) -> np.ndarray:
    """(runs, n) rows of moving-block draws from (runs, >= ceil(n / b)) uniforms."""
    m = blocks_needed(n_rows, block_length)
    starts = np.floor(np.asarray(uniforms)[..., :m] * (n_rows - block_length + 1)).astype(np.int64)
    return _fixed_blocks(starts, n_rows, block_length)


def circular_block_rows(uniforms: np.ndarray, n_rows: int, block_length: int) -> np.ndarray:
    """(runs, n) rows of circular-block draws from (runs, >= ceil(n / b)) uniforms."""
    m = blocks_needed(n_rows, block_length)
    starts = np.floor(np.asarray(uniforms)[..., :m] * n_rows).astype(np.int64)
    return _fixed_blocks(starts, n_rows, block_length) % n_rows


def geometric_lengths(uniforms: np.ndarray, mean_length: float) -> np.ndarray:
    """Block lengths L >= 1 with P(L = l) = p (1 - p)^(l - 1), p = 1 / mean_length, by inversion:
    L = 1 + floor(log(1 - u) / log(1 - p))."""
    p = 1.0 / float(mean_length)
    u = np.asarray(uniforms, dtype=float)
    if p >= 1.0:
        return np.ones(u.shape, dtype=np.int64)
    return 1 + np.floor(np.log1p(-u) / math.log1p(-p)).astype(np.int64)


def stationary_rows(start_uniforms: np.ndarray, length_uniforms: np.ndarray, n_rows: int, mean_length: float):
    """(runs, n) rows of stationary-bootstrap draws: block j starts at floor(n u_j) and runs for a
    geometric length (from the j-th length uniform), wrapping; n uniforms of each kind per run
    (at most n blocks, each at least one row long)."""
    starts = np.floor(np.asarray(start_uniforms)[..., :n_rows] * n_rows).astype(np.int64)
    lengths = geometric_lengths(np.asarray(length_uniforms)[..., :n_rows], mean_length)
    begins = np.cumsum(lengths, axis=-1) - lengths  # where each block begins in the draw
    opened = np.zeros((*starts.shape[:-1], n_rows + 1), dtype=np.int64)
    np.put_along_axis(opened, np.minimum(begins, n_rows), 1, axis=-1)
    block = np.cumsum(opened[..., :n_rows], axis=-1) - 1  # the block each position of the draw is in
    position = np.arange(n_rows)
    offset = position - np.take_along_axis(begins, block, axis=-1)
    return (np.take_along_axis(starts, block, axis=-1) + offset) % n_rows


def rademacher_weights(uniforms: np.ndarray) -> np.ndarray:
    """-1 for u < 1/2, else 1."""
    return np.where(np.asarray(uniforms) < 0.5, -1.0, 1.0)


def mammen_weights(uniforms: np.ndarray) -> np.ndarray:
    """Mammen's two-point weights: -(sqrt5 - 1)/2 for u < (sqrt5 + 1)/(2 sqrt5), else (sqrt5 + 1)/2."""
    return np.where(np.asarray(uniforms) < MAMMEN_P_LOW, MAMMEN_LOW, MAMMEN_HIGH)
