"""Load an experiment's rows: from a CSV or Parquet file, or from a generator in code.

The steps, in order: read the file(s) or call `data.generate`; keep the rows that
`data.rows` selects; sort them by `data.order` when set (a time column: the block
bootstraps and the hac interval read the rows as a series, in this order); check and
convert the `data.x` / `data.y` columns; hold out `data.test_share` of the rows when
there is no test file; shift and scale x (fixed values, or standardisation from the
training rows). Every check names the config key, the file, the column and the
offending row, so a bad data set is refused before a single task is launched.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
from hydra.utils import instantiate

from pipeline.core.errors import ConfigError
from pipeline.data.rowfilter import RowFilterError, row_mask


@dataclass(frozen=True)
class Dataset:
    """Training rows (and optional test rows) as float64 arrays of shape (rows, columns)."""

    x: np.ndarray
    y: np.ndarray
    x_test: Optional[np.ndarray]
    y_test: Optional[np.ndarray]
    x_names: tuple[str, ...]
    y_names: tuple[str, ...]
    source: str
    # x as stored = (x as read - x_shift) / x_scale, per x column (all 0 and 1: untouched)
    x_shift: tuple[float, ...] = ()
    x_scale: tuple[float, ...] = ()

    @property
    def n_rows(self) -> int:
        return int(self.x.shape[0])

    @property
    def x_raw(self) -> np.ndarray:
        """The training rows' x in the data's own units (before `x_shift` / `x_scale`)."""
        k = self.x.shape[1]
        shift = np.broadcast_to(np.asarray(self.x_shift or [0.0], dtype=float), (k,))
        scale = np.broadcast_to(np.asarray(self.x_scale or [1.0], dtype=float), (k,))
        return self.x * scale + shift

    def digest(self) -> str:
        """A hash of the values (not the file names): what run ids depend on."""
        h = hashlib.sha256()
        for array in (self.x, self.y, self.x_test, self.y_test):
            h.update(b"-" if array is None else np.ascontiguousarray(array).tobytes() + str(array.shape).encode())
        return h.hexdigest()[:16]


def _as_names(value: Any) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def column_names(value: Any, key: str) -> tuple[tuple[str, ...], list[str]]:
    """`data.x` / `data.y` as a tuple of column names, and what is wrong with the value."""
    if isinstance(value, str):
        return (value,), ([] if value else [f"`{key}` is an empty column name"])
    if not isinstance(value, (list, tuple)):
        return (), [
            f"`{key}` must be a column name or a list of column names; got {value!r} "
            f"({type(value).__name__}){_quote_hint(key, value)}"
        ]
    if not value:
        return (), [f"`{key}` is an empty list: name at least one column"]
    bad = [v for v in value if not isinstance(v, str) or not v]
    if bad:
        return (), [
            f"`{key}` must hold column names (text); got {bad[0]!r} in {list(value)!r}{_quote_hint(key, bad[0])}"
        ]
    repeated = sorted({v for v in value if list(value).count(v) > 1})
    if repeated:
        return (), [f"`{key}` names column(s) {', '.join(map(repr, repeated))} more than once; got {list(value)!r}"]
    return tuple(value), []


def _quote_hint(key: str, value: Any) -> str:
    """Hydra reads `data.x=2020` as a number: a column named 2020 needs quotes."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f" (a column named {value}? quote it: {key}='\"{value}\"')"
    return ""


def _csv_header_repeats(file: Path) -> list[str]:
    """Names the CSV header gives more than once: pandas would rename the second `x` to `x.1`."""
    try:
        with open(file, newline="", encoding="utf-8-sig", errors="replace") as fh:
            header = next(csv.reader(fh), [])
    except OSError:
        return []
    return sorted({name for name in header if header.count(name) > 1})


def read_table(path: str, key: str) -> pd.DataFrame:
    """Read a CSV or Parquet file; `key` is the config key that named it."""
    file = Path(path)
    if file.is_dir():
        raise ConfigError([f"`{key}`: {file} is a folder, not a CSV or Parquet file"])
    if not file.is_file():
        raise ConfigError([f"`{key}`: data file not found: {file}"])
    parquet = file.suffix.lower() in (".parquet", ".pq")
    try:
        frame = pd.read_parquet(file) if parquet else pd.read_csv(file)
    except Exception as err:  # noqa: BLE001 - any reader failure is a user-facing data error
        raise ConfigError([f"`{key}`: cannot read {file}: {err}"]) from err
    repeated = sorted(set(frame.columns[frame.columns.duplicated()])) if parquet else _csv_header_repeats(file)
    if repeated:
        raise ConfigError(
            [
                f"`{key}`: {file} has more than one column named {', '.join(map(repr, repeated))}; "
                "rename them so each name is one column"
            ]
        )
    return frame


# Kinds of column a number cannot be read from, though pandas would convert them silently.
_NOT_NUMBERS = (
    ("boolean", pd.api.types.is_bool_dtype),
    ("datetime", pd.api.types.is_datetime64_any_dtype),
    ("timedelta", pd.api.types.is_timedelta64_dtype),
    ("complex", pd.api.types.is_complex_dtype),
)


def _dtype_problem(column: pd.Series, name: str, source: str, key: str) -> Optional[str]:
    for kind, test in _NOT_NUMBERS:
        if test(column.dtype):
            return (
                f"`{key}`: column {name!r} of {source} is {kind} (dtype {column.dtype}), not numbers; "
                "convert it to numbers in the file (e.g. 0/1, or years)"
            )
    return None


def numeric_columns(frame: pd.DataFrame, names: tuple[str, ...], source: str, key: str) -> np.ndarray:
    """The named columns as a float64 array; names each missing column and bad value."""
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise ConfigError(
            [f"`{key}`: column {c!r} not in {source} (columns: {', '.join(map(str, frame.columns))})" for c in missing]
        )
    problems = []
    for c in names:
        wrong_dtype = _dtype_problem(frame[c], c, source, key)
        if wrong_dtype:
            problems.append(wrong_dtype)
            continue
        try:
            values = pd.to_numeric(frame[c], errors="coerce")
        except (TypeError, ValueError) as err:  # e.g. lists or dicts in a Parquet cell
            problems.append(f"`{key}`: column {c!r} of {source} (dtype {frame[c].dtype}) is not numbers: {err}")
            continue
        bad_text = values.isna() & frame[c].notna()
        if bad_text.any():
            row = int(np.flatnonzero(bad_text.to_numpy())[0])
            problems.append(
                f"`{key}`: column {c!r} of {source} holds non-numeric value "
                f"{frame[c].iloc[row]!r} (row {_row_number(frame, row)} of the data)"
            )
            continue
        not_finite = ~np.isfinite(values.to_numpy(dtype=float))
        if not_finite.any():
            row = int(np.flatnonzero(not_finite)[0])
            problems.append(
                f"`{key}`: column {c!r} of {source} holds a missing or non-finite value "
                f"({frame[c].iloc[row]!r} at row {_row_number(frame, row)} of the data; "
                f"{int(not_finite.sum())} such rows)"
            )
    if problems:
        raise ConfigError(problems)
    # C order: torch.tensor keeps numpy's strides, and row-major rows are what a model reads
    return np.ascontiguousarray(frame.loc[:, list(names)].to_numpy(dtype=np.float64))


def _row_number(frame: pd.DataFrame, position: int) -> int:
    """1-based data row as the user counts it in the file, also after `data.rows` dropped some."""
    label = frame.index[position]
    return int(label) + 1 if isinstance(label, (int, np.integer)) else position + 1


def select_rows(frame: pd.DataFrame, condition: Optional[str], source: str) -> pd.DataFrame:
    """The rows for which `data.rows` (a condition on the columns, see `pipeline.rowfilter`) is true."""
    if not condition:
        return frame
    try:
        mask = row_mask(frame, condition)
    except RowFilterError as err:  # its messages begin with `data.rows`; add which table it was
        raise ConfigError([f"{err} (data: {source})"]) from err
    return frame[mask]


def order_rows(frame: pd.DataFrame, order: Any, source: str) -> pd.DataFrame:
    """The rows sorted by the `data.order` column (stable: ties keep the file's order); as read when unset."""
    if order is None:
        return frame
    if not isinstance(order, str) or not order:
        raise ConfigError([f"`data.order` must be one column name (the rows' time order); got {order!r}"])
    if order not in frame.columns:
        raise ConfigError(
            [f"`data.order`: column {order!r} not in {source} (columns: {', '.join(map(str, frame.columns))})"]
        )
    missing = frame[order].isna()
    if missing.any():
        row = int(np.flatnonzero(missing.to_numpy())[0])
        raise ConfigError(
            [f"`data.order`: column {order!r} of {source} has a missing value (row {_row_number(frame, row)})"]
        )
    try:
        return frame.sort_values(order, kind="stable")
    except TypeError as err:
        raise ConfigError([f"`data.order`: column {order!r} of {source} cannot be sorted: {err}"]) from err


def _frame_to_arrays(frame: pd.DataFrame, data_cfg: dict[str, Any], source: str) -> tuple[np.ndarray, np.ndarray]:
    x_names, problems = column_names(data_cfg["x"], "data.x")
    y_names, more = column_names(data_cfg["y"], "data.y")
    if problems + more:
        raise ConfigError(problems + more)
    shared = [c for c in x_names if c in y_names]
    if shared:
        raise ConfigError([f"`data.x` and `data.y` share column(s) {', '.join(map(repr, shared))}"])
    problems = []
    arrays = []
    for names, key in ((x_names, "data.x"), (y_names, "data.y")):
        try:
            arrays.append(numeric_columns(frame, names, source, key))
        except ConfigError as err:
            problems += err.problems
    if problems:
        raise ConfigError(problems)
    if len(frame) == 0:
        why = f" left by `data.rows` {data_cfg['rows']!r}" if data_cfg.get("rows") else ""
        raise ConfigError([f"`data.path`: {source} has no rows{why}"])
    return arrays[0], arrays[1]


def _read_frames(data_cfg: dict[str, Any]) -> tuple[pd.DataFrame, Optional[pd.DataFrame], str, str]:
    """(train, test or None, source, test source) from the file(s) or `data.generate`."""
    if data_cfg.get("generate"):
        ignored = [key for key in ("path", "test_path") if data_cfg.get(key)]
        if ignored:
            raise ConfigError(
                [
                    f"`data.{key}` ({data_cfg[key]}) is set but `data.generate` makes this experiment's "
                    f"rows, so the file would be ignored: use experiment=user_data for a file, or "
                    f"drop data.{key}"
                    for key in ignored
                ]
            )
        try:
            train, test = instantiate(data_cfg["generate"])
        except Exception as err:  # noqa: BLE001
            raise ConfigError([f"`data.generate`: {err}"]) from err
        source = f"generated by {data_cfg['generate'].get('_target_')}"
        return train, test, source, source + " (test rows)"
    if data_cfg.get("path"):
        train = read_table(data_cfg["path"], "data.path")
        test = read_table(data_cfg["test_path"], "data.test_path") if data_cfg.get("test_path") else None
        return train, test, str(data_cfg["path"]), str(data_cfg.get("test_path"))
    raise ConfigError(["`data.path` is not set (and no `data.generate`): nothing to fit"])


def split_rows(n_rows: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows): a shuffled `share` of the rows is held out, fixed by `seed`."""
    order = np.random.default_rng(seed).permutation(n_rows)
    n_test = int(round(share * n_rows))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def split_seed_problems(data_cfg: dict[str, Any]) -> list[str]:
    """`data.split_seed` seeds numpy's generator, which takes whole numbers >= 0 only."""
    seed = data_cfg.get("split_seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        return [f"`data.split_seed` must be a whole number >= 0 (a numpy seed); got {seed!r}"]
    return []


def _check_split(data_cfg: dict[str, Any], n_rows: int, has_test: bool) -> list[str]:
    share = data_cfg.get("test_share")
    if share is None:
        return split_seed_problems(data_cfg)
    if split_seed_problems(data_cfg):
        return split_seed_problems(data_cfg)
    if not 0 < share < 1:
        return [f"`data.test_share` must be between 0 and 1 (the share of rows held out); got {share}"]
    if has_test:
        return [
            f"`data.test_share` ({share}) is set but the data already has test rows "
            "(`data.test_path` or the generator's): keep one of them"
        ]
    n_test = int(round(share * n_rows))
    if not 1 <= n_test <= n_rows - 1:
        return [
            f"`data.test_share` {share} of {n_rows} rows leaves {n_test} test and "
            f"{n_rows - n_test} training rows; each needs at least one"
        ]
    return []


def _per_column(value: Any, key: str, n_cols: int) -> tuple[np.ndarray, list[str]]:
    """A number or one number per x column, as an array of length n_cols."""
    values = [value] * n_cols if isinstance(value, (int, float)) else list(value)
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return np.zeros(n_cols), [f"`{key}` must be a number or one number per x column; got {value!r}"]
    if array.shape != (n_cols,) or not np.isfinite(array).all():
        return np.zeros(n_cols), [f"`{key}` must be a finite number or one per x column ({n_cols}); got {value!r}"]
    return array, []


def x_transform(data_cfg: dict[str, Any], x: np.ndarray, x_names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(shift, scale) per x column: from `data.x_shift`/`data.x_scale`, or the training
    rows' mean and standard deviation (ddof 0) when `data.standardize` is true."""
    n_cols = x.shape[1]
    shift, problems = _per_column(data_cfg.get("x_shift", 0.0), "data.x_shift", n_cols)
    scale, more = _per_column(data_cfg.get("x_scale", 1.0), "data.x_scale", n_cols)
    problems += more
    if not more and (scale == 0).any():
        problems.append(f"`data.x_scale` must not be 0; got {data_cfg.get('x_scale')!r}")
    if data_cfg.get("standardize"):
        if not problems and ((shift != 0).any() or (scale != 1).any()):
            problems.append(
                "`data.standardize` is true and `data.x_shift`/`data.x_scale` are set: "
                "standardising replaces them, so keep one"
            )
        shift, scale = x.mean(axis=0), x.std(axis=0)
        problems += [
            f"`data.standardize`: x column {name!r} is constant ({shift[j]:g}) in the training rows"
            for j, name in enumerate(x_names)
            if scale[j] == 0
        ]
    if problems:
        raise ConfigError(problems)
    return shift, scale


def load_dataset(data_cfg: dict[str, Any]) -> Dataset:
    """Build the Dataset that `data.*` describes (a file, or `data.generate`)."""
    train, test, source, test_source = _read_frames(data_cfg)
    x, y = _frame_to_arrays(
        order_rows(select_rows(train, data_cfg.get("rows"), source), data_cfg.get("order"), source), data_cfg, source
    )
    x_test = y_test = None
    if test is not None:
        x_test, y_test = _frame_to_arrays(select_rows(test, data_cfg.get("rows"), test_source), data_cfg, test_source)
    problems = _check_split(data_cfg, len(x), test is not None)
    if not problems and data_cfg.get("test_share") is not None:
        keep, held_out = split_rows(len(x), data_cfg["test_share"], int(data_cfg.get("split_seed", 0)))
        x, y, x_test, y_test = x[keep], y[keep], x[held_out], y[held_out]
    x_names = _as_names(data_cfg["x"])
    try:
        shift, scale = x_transform(data_cfg, x, x_names)
    except ConfigError as err:
        problems += err.problems
    if problems:
        raise ConfigError(problems)
    if x_test is not None:
        x_test = (x_test - shift) / scale
    return Dataset(
        (x - shift) / scale,
        y,
        x_test,
        y_test,
        x_names,
        _as_names(data_cfg["y"]),
        source,
        tuple(shift.tolist()),
        tuple(scale.tolist()),
    )
