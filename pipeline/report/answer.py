"""The answer of a sweep, per grid cell, as data: how its runs ended, each line's estimate with
the interval of every shown method, or why the cell has none.

The terminal prints it (`summary.py`) and report.html opens on it (`page.py`), so the two say
the same thing. It is read from the tables the aggregation wrote (estimates, intervals and
predictions, with sweep.json and config.yaml for the settings), never from what a process kept
in memory. Why a cell has no interval comes from `stats.cells.why_no_interval`, the rule the
interval notes use too.

What a line is depends on the model. Linear in its parameters (the polynomial and hinge
presets, `user_data`): one line per parameter, in the data's own units. Not linear (the MLP):
single parameters are not identifiable (hidden units can swap, signs flip) and the answer is
what the model predicts, one line per output and x point (`predictions.parquet`, at the data's
own x unless `intervals.at` says where); per-parameter intervals stay in the tables.
pandas only: a reader of sweep folders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import pandas as pd

from pipeline.core.runs import DIVERGED, NOT_CONVERGED, OK
from pipeline.stats.cells import DEPENDENT, NO_DRAWS, CellRuns, optimiser_sets_width, why_no_interval
from pipeline.stats.intervals import BOOTSTRAP_METHODS, CLOSED_FORM_METHODS, GRADIENT_DESCENT

STATUSES = (OK, NOT_CONVERGED, DIVERGED)
SHOWN_METHODS = ("percentile", "t")  # the bootstrap's and the classical interval, side by side
FALLBACK_METHODS = ("percentile", "normal", "basic", "bca", "hc3")
PARAMETERS, PREDICTIONS = "parameters", "predictions"  # what the lines of the answer are
OPTIMISER_MARK = "optimiser sets the width"  # a cell's mark where opt_to_sampling is above GAP_SHARE_OF_SE


@dataclass(frozen=True)
class Line:
    """One parameter, or one output at one x point: its estimate and each shown method's bounds."""

    label: str
    estimate: float  # the sweep's own fit on the original rows (gradient descent)
    bounds: dict[str, tuple[float, float]]  # method -> (lower, upper); a method without bounds is absent


@dataclass
class CellAnswer:
    """One grid cell (lr, init_index)."""

    lr: float
    init_index: int
    counts: dict[str, int]  # runs by status
    lines: list[Line]  # empty when the cell has no interval (then `reason` says why)
    reason: Optional[str] = None
    marks: list[str] = field(default_factory=list)  # caveats on the intervals shown


@dataclass
class Answer:
    """The per-cell table of a sweep."""

    cells: list[CellAnswer]
    methods: list[str]  # the interval methods shown, left to right
    level: float
    subject: str  # PARAMETERS or PREDICTIONS
    scheme: str  # how the bootstrap draws resampled ("" when there are none)
    preface: str = ""  # said before the table: why its lines are predictions, when they are
    afterword: tuple[str, ...] = ()  # said after it in the terminal: the dependence note (`dependence_lines`)

    @property
    def several_inits(self) -> bool:
        return len({c.init_index for c in self.cells}) > 1

    def header(self, method: str) -> str:
        """A method's column title: level, name and, for the bootstrap, the resampling scheme."""
        scheme = f" ({self.scheme})" if self.scheme and method in BOOTSTRAP_METHODS else ""
        return f"{self.level:.0%} {method}{scheme}"

    @property
    def legend(self) -> str:
        what = "prediction" if self.subject == PREDICTIONS else "fit"
        closed = [m for m in self.methods if m in CLOSED_FORM_METHODS]
        around = f"; {', '.join(closed)}: around the least-squares fit" if closed else ""
        own = f"estimate: the gradient-descent {what} on the original rows"
        return f"n.c.: not_converged, div.: diverged; {own}{around}"


def fmt(value: float) -> str:
    """Four decimals, so that the bounds of one column line up; scientific when far from 1."""
    if value is None or not math.isfinite(value):
        return "nan"
    return f"{value:.4f}" if value == 0 or 1e-3 <= abs(value) < 1e5 else f"{value:.3e}"


def bounds_text(line: Line, method: str) -> str:
    """`[lower, upper]` as the answer table prints it; '-' for a method without bounds."""
    if method not in line.bounds:
        return "-"
    lower, upper = line.bounds[method]
    return f"[{fmt(lower)}, {fmt(upper)}]"


def shown_methods(intervals: pd.DataFrame) -> list[str]:
    """percentile and t where the table has them; else the first bootstrap methods it has."""
    present = set(intervals["method"]) if "method" in intervals else set()
    shown = [m for m in SHOWN_METHODS if m in present]
    if len(shown) < 2:
        shown += [m for m in FALLBACK_METHODS if m in present and m not in shown][: 2 - len(shown)]
    return shown


def scheme_text(intervals: pd.DataFrame) -> str:
    """The bootstrap rows' scheme, with its block length where the table has one."""
    boot = intervals[intervals["method"].isin(BOOTSTRAP_METHODS)] if "method" in intervals else intervals
    schemes = boot["scheme"].dropna() if "scheme" in boot else pd.Series(dtype=str)
    if schemes.empty:
        return ""
    text = str(schemes.iloc[0])
    lengths = pd.to_numeric(boot["block_length"], errors="coerce").dropna() if "block_length" in boot else []
    return text + (f", blocks of {lengths.iloc[0]:g}" if len(lengths) else "")


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _line(label: str, rows: pd.DataFrame, methods: Sequence[str]) -> Line:
    """A line from the interval rows of one parameter (or output at a point) of one cell."""
    sources = rows["estimate_source"] if "estimate_source" in rows else pd.Series("", index=rows.index)
    own = rows[(sources == GRADIENT_DESCENT) | rows["method"].isin(BOOTSTRAP_METHODS)]
    estimate = float((own if len(own) else rows)["estimate"].iloc[0]) if len(rows) else math.nan
    bounds = {}
    for method in methods:
        mine = rows[rows["method"] == method]
        if len(mine) and _finite(mine["lower"].iloc[0]) and _finite(mine["upper"].iloc[0]):
            bounds[method] = (float(mine["lower"].iloc[0]), float(mine["upper"].iloc[0]))
    return Line(label, estimate, bounds)


def parameter_lines(rows: pd.DataFrame, methods: Sequence[str]) -> list[Line]:
    return [_line(str(name), mine, methods) for name, mine in rows.groupby("parameter", sort=False)]


def point_label(output: str, xs: Sequence[float]) -> str:
    return f"{output}({', '.join(f'{x:.3g}' for x in xs)})"


def prediction_lines(rows: pd.DataFrame, methods: Sequence[str], x_names: Sequence[str]) -> list[Line]:
    lines = []
    for (_, output), mine in rows.groupby(["point", "output"], sort=True):
        xs = [float(mine[name].iloc[0]) for name in x_names if name in mine]
        lines.append(_line(point_label(str(output), xs), mine, methods))
    return lines


def _dropped_mark(runs: CellRuns, max_dropped_share: float) -> Optional[str]:
    dropped = runs.n_draws - runs.n_usable
    if not runs.n_draws or dropped / runs.n_draws <= max_dropped_share:
        return None
    return (
        f"{dropped} of {runs.n_draws} draws dropped (statuses used: {', '.join(runs.statuses)}), more than "
        f"intervals.max_dropped_share {max_dropped_share:g}: the draws kept may not be a random subset"
    )


def optimiser_marks(rows: pd.DataFrame) -> list[str]:
    """A mark for a cell whose intervals the optimiser's error sets (`opt_to_sampling` of its rows)."""
    if "opt_to_sampling" not in rows.columns:
        return []
    share = pd.to_numeric(rows["opt_to_sampling"], errors="coerce")
    flagged = rows[[optimiser_sets_width(v) for v in share]]
    if flagged.empty:
        return []
    names = ", ".join(dict.fromkeys(str(n) for n in flagged["parameter"])) if "parameter" in flagged else "some lines"
    return [
        f"{OPTIMISER_MARK}: the draws of {names} lie up to {share.max():.2g} bootstrap SEs from their own "
        "closed-form optima (opt_to_sampling): the optimiser, not only the data, sets those widths"
    ]


def cell_answer(
    lr: float, init_index: int, runs_frame: pd.DataFrame, lines: list[Line], settings: dict[str, Any]
) -> CellAnswer:
    """A cell's counts, and its lines or why it has none (the rule of `stats.cells`)."""
    runs = CellRuns.of(runs_frame, settings["statuses"])
    counts = {str(k): int(v) for k, v in runs_frame["status"].value_counts().items()}
    reason = why_no_interval(runs)
    bounded = any(line.bounds for line in lines)
    if reason is not None and not (reason == NO_DRAWS and bounded):  # the closed form needs no draws
        return CellAnswer(lr, init_index, counts, [], reason)
    if not lines:
        return CellAnswer(lr, init_index, counts, [], "no interval rows for this cell in the tables")
    marks = [NO_DRAWS] if reason == NO_DRAWS else []
    marks += [m for m in [_dropped_mark(runs, settings["max_dropped_share"])] if m]
    return CellAnswer(lr, init_index, counts, lines, None, marks)


def interval_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The `intervals` settings the tables were built with (config.yaml), with the defaults."""
    ic = config.get("intervals") or {}
    share = ic.get("max_dropped_share")
    return {
        "statuses": tuple(ic.get("statuses") or ("ok",)),
        "max_dropped_share": 0.1 if share is None else float(share),
        "at": ic.get("at"),
    }


def _in_data_units(intervals: pd.DataFrame) -> pd.DataFrame:
    if "units" in intervals.columns and (intervals["units"] == "raw").any():  # as users compare them
        return intervals[intervals["units"] == "raw"]
    return intervals


def predictions_preface(meta: dict[str, Any], predictions: pd.DataFrame, at: Any) -> str:
    experiment = meta.get("experiment") or "this model"
    n_points = predictions["point"].nunique()
    where = "at intervals.at" if at is not None else "at the data's own x (intervals.at chooses others)"
    xs = ", ".join(meta.get("x_names") or []) or "x"
    return (
        f"{experiment} is not linear in its parameters: hidden units can swap and signs flip, so single "
        f"weights are not identifiable and their intervals mean little (they stay in intervals.parquet). "
        f"The answer is what it predicts: output({xs}) {where}, {n_points} point(s), in predictions.parquet."
    )


def dependence_lines(intervals: pd.DataFrame) -> list[str]:
    """The intervals table's note when the rows look dependent, once, naming the methods it
    is on (the answer's headers already name the scheme and block length)."""
    notes = intervals["note"].fillna("") if "note" in intervals else pd.Series(dtype=str)
    noted = intervals[notes.str.contains(DEPENDENT, regex=False)] if len(notes) else intervals.iloc[:0]
    if not len(noted):
        return []
    note = noted["note"].iloc[0]
    head, _, tail = note[note.index(DEPENDENT) :].partition(", and ")
    methods = ", ".join(dict.fromkeys(noted["method"]))
    if not tail:
        return [f"note ({methods}): {head}"]
    return [f"note: {head},", f"  and {tail.replace('this interval assumes', methods + ' assume')}"]


def build_answer(
    estimates: pd.DataFrame,
    intervals: pd.DataFrame,
    predictions: pd.DataFrame,
    meta: dict[str, Any],
    config: dict[str, Any],
    level: Optional[float] = None,
) -> Optional[Answer]:
    """The answer of a sweep from its tables (DataFrames as read); None without estimates."""
    if estimates.empty or "status" not in estimates:
        return None
    settings = interval_settings(config)
    by_predictions = meta.get("linear_in_params") is False and not predictions.empty
    table = predictions if by_predictions else _in_data_units(intervals)
    if table.empty or "method" not in table:
        table = pd.DataFrame(columns=["lr", "init_index", "parameter", "method", "estimate", "lower", "upper"])
    methods = shown_methods(table)
    levels = pd.to_numeric(table["level"], errors="coerce").dropna() if "level" in table else pd.Series(dtype=float)
    level = level if level is not None else float(levels.iloc[0]) if len(levels) else 0.95
    x_names = [n for n in meta.get("x_names") or [] if n in table.columns]
    cells = []
    for (lr, init_index), runs in estimates.groupby(["lr", "init_index"], sort=True):
        rows = table[(table["lr"] == lr) & (table["init_index"] == init_index)]
        lines = prediction_lines(rows, methods, x_names) if by_predictions else parameter_lines(rows, methods)
        cell = cell_answer(float(lr), int(init_index), runs, lines, settings)
        cell.marks += optimiser_marks(rows) if cell.lines else []
        cells.append(cell)
    preface = predictions_preface(meta, predictions, settings["at"]) if by_predictions else ""
    if meta.get("linear_in_params") is False and not by_predictions:
        preface = (
            "This model is not linear in its parameters: single weights may not be identifiable and their "
            "intervals mean little; pipeline-aggregate writes predictions.parquet, the answer to read."
        )
    subject = PREDICTIONS if by_predictions else PARAMETERS
    return Answer(cells, methods, level, subject, scheme_text(table), preface, tuple(dependence_lines(intervals)))
