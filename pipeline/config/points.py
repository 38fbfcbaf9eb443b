"""`intervals.at`: the x values where prediction intervals are asked for, read and checked.

`at` is a list (a number per point for a one-input model, a list of one number per x
column for several inputs) or a path to a CSV whose columns include the experiment's x
names. Points are in the data's own (raw) units; `to_fitted` applies the sweep's saved
x transform (x_fitted = (x - x_shift) / x_scale, sweep.json) before the model sees them.
Every problem is one ConfigError naming `intervals.at`. numpy and pandas only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from pipeline.core.errors import ConfigError

KEY = "`intervals.at`"


def _fail(problem: str) -> ConfigError:
    return ConfigError([f"{KEY}: {problem}"])


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(repr(value))
    return float(value)


def _from_csv(path: str, x_names: Sequence[str]) -> np.ndarray:
    file = Path(path).expanduser()
    if not file.is_file():
        raise _fail(
            f"the CSV file {path!r} does not exist (give a list of x values, or a CSV with "
            f"column(s) {', '.join(x_names)})"
        )
    try:
        frame = pd.read_csv(file)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user mistake
        raise _fail(f"the CSV file {path!r} cannot be read: {err}") from err
    missing = [name for name in x_names if name not in frame.columns]
    if missing:
        raise _fail(
            f"the CSV file {path!r} lacks the x column(s) {', '.join(missing)} "
            f"(it has {', '.join(map(str, frame.columns)) or 'none'})"
        )
    values = frame[list(x_names)]
    bad = [
        name
        for name in x_names
        if not pd.api.types.is_numeric_dtype(values[name]) or pd.api.types.is_bool_dtype(values[name])
    ]
    if bad:
        raise _fail(f"column(s) {', '.join(bad)} of {path!r} are not numeric")
    return values.to_numpy(dtype=float)


def _from_list(at: Sequence[Any], x_names: Sequence[str]) -> np.ndarray:
    k, rows = len(x_names), []
    for i, point in enumerate(at):
        values = list(point) if isinstance(point, (list, tuple)) else [point]
        if len(values) != k:
            shape = "a number" if k == 1 else f"a list of {k} numbers ({', '.join(x_names)})"
            raise _fail(f"point {i} is {point!r}: each point must be {shape}")
        try:
            rows.append([_number(v) for v in values])
        except ValueError as err:
            raise _fail(f"point {i} holds {err}, which is not a number") from None
    return np.array(rows, dtype=float).reshape(len(rows), k)


def read_points(at: Any, x_names: Sequence[str]) -> np.ndarray:
    """(points, x columns) of `intervals.at`, in raw units; a ConfigError naming the key."""
    x_names = list(x_names)
    if isinstance(at, (str, Path)):
        points = _from_csv(str(at), x_names)
    elif isinstance(at, (list, tuple)):
        points = _from_list(at, x_names)
    elif isinstance(at, (int, float)) and not isinstance(at, bool) and len(x_names) == 1:
        points = _from_list([at], x_names)
    else:
        raise _fail(f"must be a list of x values or a CSV path; got {at!r}")
    if len(points) == 0:
        raise _fail("holds no point: give at least one x value")
    if not np.isfinite(points).all():
        raise _fail("holds a non-finite x value (NaN or inf)")
    return points


MAX_DATA_POINTS = 50  # default prediction points: the data's own x, every k-th row past this many


def data_points(x_raw: np.ndarray, max_points: int = MAX_DATA_POINTS) -> np.ndarray:
    """The data's own x rows where a non-linear model's predictions go when `intervals.at` is
    not set: every row, or every k-th row (in file order) when there are more than `max_points`."""
    step = max(1, -(-len(x_raw) // max_points))
    return np.asarray(x_raw, dtype=float)[::step]


def to_fitted(points: np.ndarray, shift: Sequence[float], scale: Sequence[float]) -> np.ndarray:
    """Raw x as the model was fitted on it: (x - shift) / scale, per column (no transform: as is)."""
    k = points.shape[1]
    shift = np.broadcast_to(np.asarray(shift if len(shift) else [0.0], dtype=float), (k,))
    scale = np.broadcast_to(np.asarray(scale if len(scale) else [1.0], dtype=float), (k,))
    return (points - shift) / scale


def x_names_of(x: Any) -> list[str]:
    """`data.x` (one name or a list) as a list of names."""
    return [str(n) for n in x] if isinstance(x, (list, tuple)) else [str(x)]
