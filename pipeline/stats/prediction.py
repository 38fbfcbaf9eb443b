"""Prediction intervals: the fitted function at given x (`intervals.at`), per grid cell and method.

The input is a table of per-run predictions: one row per run (grid columns, `resample`,
`status`, optionally `kind` and `scheme`) and one column per (point, output), named by
`prediction_column`. The bootstrap methods (percentile, basic, normal, bca) read those
columns exactly as the parameter intervals read a parameter (`stats.intervals.value_intervals`),
and the closed forms are `stats.ols.ClosedFormDesign.interval` at the features of x, as the
parameter intervals at the unit vectors. For a model linear in
its parameters fitted by MSE, `t`, `hc3` and `hac` give the mean response's interval from the
OLS fit of the original rows: f0' b -/+ c sqrt(f0' V f0), f0 the features at x, V the
classical (c = t(n - p)), HC3 or Newey-West HAC (c = z(1 - alpha/2), as the parameter
intervals) covariance.

`linear_predictions` gives the per-run table of such a model torch-free (features(x) @
theta of each run); any other model is evaluated on the training side (`results.predictions`).
numpy, scipy and pandas only: a reader of sweep folders.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd

from pipeline.core.errors import ConfigError
from pipeline.stats.cells import cell_notes, grid_cells, note_dependence, split_cell
from pipeline.stats.intervals import (
    BOOTSTRAP_METHODS,
    BOUND_COLUMNS,
    CLOSED_FORM_METHODS,
    GRID_COLUMNS,
    applicable_methods,
    closed_form_columns,
    value_intervals,
)
from pipeline.stats.ols import ClosedFormDesign

PREDICTION_METHODS = ("percentile", "basic", "bca", "normal", "t", "hc3", "hac")
RUN_COLUMNS = ("lr", "init_index", "resample", "kind", "status", "scheme")
COLUMNS = ("point", "output", "method", "level", "scheme", *BOUND_COLUMNS, "estimate_status", "note")
RESERVED = (*GRID_COLUMNS, *COLUMNS)  # predictions.parquet's own columns: no x column may take one's name


def check_x_names(x_names: Sequence[str]) -> None:
    """Refuse x names that predictions.parquet already uses: the x columns sit beside its own
    columns, and a clash would overwrite one of them (a ConfigError naming `data.x`)."""
    clashes = [name for name in x_names if name in RESERVED]
    if clashes:
        raise ConfigError(
            [
                f"`data.x`: the x column(s) {', '.join(map(repr, clashes))} have the name of a column of "
                f"predictions.parquet ({', '.join(RESERVED)}), so `intervals.at` cannot write them; "
                "rename the column(s) in the data file, or leave `intervals.at` unset"
            ]
        )


def prediction_column(point: int, output: int) -> str:
    return f"__pred__{point}__{output}"


def linear_predictions(estimates: pd.DataFrame, params: Sequence[str], features: np.ndarray) -> pd.DataFrame:
    """Per-run predictions features(x) @ theta of a model linear in its parameters (one output)."""
    theta = estimates[list(params)].to_numpy(dtype=float)
    with np.errstate(all="ignore"):  # a diverged run's inf / nan parameters give nan predictions
        values = theta @ np.asarray(features, dtype=float).T
    keep = [c for c in RUN_COLUMNS if c in estimates.columns]
    columns = {prediction_column(i, 0): values[:, i] for i in range(values.shape[1])}
    return estimates[keep].reset_index(drop=True).assign(**columns)


def methods_for(methods: Optional[Sequence[str]], predictions: pd.DataFrame, closed_form: bool) -> list[str]:
    """The parameter intervals' rule (`pipeline.intervals.applicable_methods`), narrowed to the
    methods that have a prediction form: studentized has none, t and hc3 need the saved design.
    A named method without one is left out, not refused: the sweep's `intervals.methods` was
    checked for the parameter intervals, and predictions take what they can of it."""
    if methods is not None:
        methods = [
            m
            for m in dict.fromkeys(str(m).lower() for m in methods)
            if m in PREDICTION_METHODS and (closed_form or m not in CLOSED_FORM_METHODS)
        ]
        if not methods:
            return []
    return [m for m in applicable_methods(methods, predictions, closed_form) if m in PREDICTION_METHODS]


def prediction_intervals(
    predictions: pd.DataFrame,
    points: np.ndarray,
    *,
    x_names: Sequence[str],
    outputs: Sequence[str] = ("y",),
    methods: Optional[Sequence[str]] = None,
    level: float = 0.95,
    statuses: Sequence[str] = ("ok",),
    max_dropped_share: float = 0.1,
    by: Sequence[str] = GRID_COLUMNS,
    design: Optional[ClosedFormDesign] = None,
    features: Optional[np.ndarray] = None,
) -> pd.DataFrame:
    """One row per grid cell, point, output and method: the prediction of resample 0 and its interval.

    `points`: (points, x columns) in raw units, written as the x columns of the table.
    `design` and `features` (the model's features at the points, as fitted): the closed-form
    `t` and `hc3` mean-response intervals (output 0 only: such models have one output).
    A cell or point whose interval cannot be formed gets NaN bounds and a `note`.
    """
    if not 0 < level < 1:
        raise ValueError(f"`level` must lie between 0 and 1; got {level}")
    points = np.asarray(points, dtype=float).reshape(len(points), len(x_names))
    closed = design is not None and features is not None
    chosen = methods_for(methods, predictions, closed)
    boot_methods = [m for m in chosen if m in BOOTSTRAP_METHODS]
    form_methods = [m for m in chosen if m in CLOSED_FORM_METHODS]
    alpha = 1.0 - level
    forms = {m: design.interval(m, alpha, features) for m in form_methods} if closed else {}
    order = {m: i for i, m in enumerate(chosen)}
    rows = []
    for key, frame in grid_cells(predictions, by):
        cell = split_cell(frame, statuses)
        notes_of_cell = cell_notes(cell, statuses, max_dropped_share)
        status = None if cell.original is None else cell.original["status"]
        common = {
            "level": level,
            "scheme": cell.scheme,
            "n_used": len(cell.boot),
            "n_dropped": len(cell.dropped),
            "estimate_status": status,
        }
        for i, point in enumerate(points):
            xs = dict(zip(x_names, point))
            cell_rows = []
            for o, output in enumerate(outputs):
                value = value_intervals(cell, prediction_column(i, o), boot_methods, alpha, statuses, notes_of_cell)
                for method, bounds in value.bounds.items():
                    cell_rows.append(
                        {
                            "output": output,
                            "method": method,
                            **common,
                            "estimate": value.estimate,
                            "lower": bounds.lower,
                            "upper": bounds.upper,
                            "se": value.se,
                            "note": bounds.note,
                        }
                    )
                for method in form_methods if o == 0 else ():
                    cell_rows.append({"output": output, **closed_form_columns(forms[method], i, method, level, status)})
            note_dependence(cell_rows, cell.scheme, design)
            cell_rows.sort(key=lambda r: (list(outputs).index(r["output"]), order[r["method"]]))
            rows += [{**key, "point": i, **xs, **row} for row in cell_rows]
    table = pd.DataFrame(rows, columns=[*by, "point", *x_names, *COLUMNS[1:]])
    for col in ("n_used", "n_dropped"):
        table[col] = table[col].astype("Int64")
    table["point"] = table["point"].astype("int64")
    return table
