"""Bootstrap confidence intervals from a table of estimates.

One public entry point, `bootstrap_intervals`, usable on the `estimates.parquet` of a
sweep or on any DataFrame of the same shape: one row per run, a `resample` column
(0 = the original rows, k >= 1 = bootstrap draw k), a `status` column, one column per
parameter, and the grid columns that define a cell.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd

METHODS = ("percentile",)
GRID_COLUMNS = ("lr", "init_index")


class DegenerateCellWarning(UserWarning):
    """A grid cell had no usable resamples: its interval is NaN, with the reason."""


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    alpha = 1.0 - level
    # numpy's default (linear) interpolation, the same as scipy.stats.bootstrap's percentile method
    return float(np.percentile(values, 100 * alpha / 2)), float(np.percentile(values, 100 * (1 - alpha / 2)))


def _dropped_summary(statuses: pd.Series) -> str:
    counts = statuses.value_counts().sort_index()
    return "; ".join(f"{status}: {n}" for status, n in counts.items())


def _cell_rows(cell: pd.DataFrame, params: Sequence[str], level: float, statuses: Sequence[str]) -> list[dict]:
    original = cell[cell["resample"] == 0]
    boots = cell[cell["resample"] > 0]
    used = boots[boots["status"].isin(statuses)]
    dropped = boots[~boots["status"].isin(statuses)]
    rows = []
    for name in params:
        row = {"parameter": name, "method": "percentile", "level": level,
               "estimate": float(original[name].iloc[0]) if len(original) else np.nan,
               "estimate_status": original["status"].iloc[0] if len(original) else None,
               "lower": np.nan, "upper": np.nan, "se": np.nan,
               "n_used": len(used), "n_dropped": len(dropped),
               "dropped": _dropped_summary(dropped["status"]), "note": ""}
        values = used[name].to_numpy(dtype=float)
        if len(values) >= 2:
            row["lower"], row["upper"] = _percentile_interval(values, level)
            row["se"] = float(np.std(values, ddof=1))
        elif len(boots) == 0:
            row["note"] = "no bootstrap resamples in this cell (sweep.resamples=0)"
        else:
            row["note"] = (f"{len(used)} usable resample(s) of {len(boots)} "
                           f"(statuses used: {', '.join(statuses)}; dropped {row['dropped']})")
        rows.append(row)
    return rows


def bootstrap_intervals(
    estimates: pd.DataFrame,
    *,
    params: Sequence[str],
    level: float = 0.95,
    method: str = "percentile",
    by: Sequence[str] = GRID_COLUMNS,
    statuses: Sequence[str] = ("ok",),
) -> pd.DataFrame:
    """Per grid cell and parameter: the estimate on the original rows and its interval.

    Runs whose status is not in `statuses` (by default: diverged or not converged) are
    left out and counted in `n_dropped` and `dropped`; a cell with fewer than two usable
    resamples gets NaN bounds, a `note` saying why, and a `DegenerateCellWarning`.
    """
    method = method.lower()
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {', '.join(METHODS)}; got {method!r}")
    if not 0 < level < 1:
        raise ValueError(f"`level` must lie between 0 and 1; got {level}")
    missing = [c for c in ("resample", "status", *params, *by) if c not in estimates.columns]
    if missing:
        raise ValueError(f"estimates lack column(s) {', '.join(missing)}")
    rows = []
    for key, cell in estimates.groupby(list(by), sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        for row in _cell_rows(cell, params, level, statuses):
            rows.append({**dict(zip(by, key)), **row})
    table = pd.DataFrame(rows)
    bad = table[(table["note"] != "") & (table["n_used"] + table["n_dropped"] > 0)] if len(table) else table
    if len(bad):
        warnings.warn(f"{len(bad)} interval(s) without bounds: {bad['note'].iloc[0]}",
                      DegenerateCellWarning, stacklevel=2)
    return table
