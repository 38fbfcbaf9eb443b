"""Which rows a resample takes: the one rule the training side and the readers share.

Kept apart from `plan` (which imports it) so that the interval formulas and the
per-draw closed-form statistics (studentized intervals, learning-rate bounds) can
rebuild a draw's rows without importing the planner. numpy only.
"""

from __future__ import annotations

import numpy as np


def resample_rows(n_rows: int, seed: int, resample: int) -> np.ndarray:
    """Row indices of a resample: all rows for 0, n draws with replacement for k >= 1,
    all rows but row j for jackknife resample -(j+1)."""
    if resample == 0:
        return np.arange(n_rows)
    if resample < 0:
        if -resample > n_rows:
            raise ValueError(
                f"jackknife resample {resample} leaves out row {-resample - 1}, but the data have {n_rows} rows"
            )
        return np.delete(np.arange(n_rows), -resample - 1)
    rng = np.random.default_rng([seed, resample])
    return rng.integers(0, n_rows, size=n_rows)
