"""The terminal summary at the end of a sweep: per grid cell, its statuses and intervals.

`sweep_summary(out_dir)` reads the tables the aggregation wrote (`estimates.parquet`,
`intervals.parquet`), never what a process kept in memory, so the lines printed are what
a reader of the folder would find. It is a reader of the sweep folder: pandas only, no
torch. It stays short on purpose (about a dozen lines for the default sweep); the whole
sweep is in `report.html` and the tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd

from pipeline.core.runs import DIVERGED, NOT_CONVERGED, OK

STATUSES = (OK, NOT_CONVERGED, DIVERGED)
SHOWN_METHODS = ("percentile", "t")  # the bootstrap's and the classical interval, side by side
FALLBACK_METHODS = ("percentile", "normal", "basic", "bca", "hc3")
MAX_CELLS_WITH_INTERVALS = 4  # more cells than this: the rest say "see report.html"
MAX_PARAMETERS = 6  # a model with more (the MLP's 26 weights) shows the first few per cell
CLOSED_FORM = ("t", "hc3", "hac")  # not bootstrap intervals: present even when no draw is usable
TABLES = ("estimates.parquet", "curves.parquet", "intervals.parquet")


@dataclass
class Cell:
    """One grid cell (lr, init_index): how its runs ended and its interval rows."""

    lr: float
    init_index: int
    counts: dict[str, int]
    intervals: pd.DataFrame  # rows of intervals.parquet for this cell


def _fmt(value: float) -> str:
    """Four decimals, so that the bounds of one column line up; scientific when far from 1."""
    if value is None or not math.isfinite(value):
        return "nan"
    return f"{value:.4f}" if value == 0 or 1e-3 <= abs(value) < 1e5 else f"{value:.3e}"


def _bounds(row: Optional[pd.Series]) -> str:
    if row is None or not (math.isfinite(row["lower"]) and math.isfinite(row["upper"])):
        return "-"
    return f"[{_fmt(row['lower'])}, {_fmt(row['upper'])}]"


def read_cells(out_dir: Path) -> list[Cell]:
    """The grid cells of a sweep folder, from its estimates and intervals tables."""
    est = pd.read_parquet(out_dir / "estimates.parquet", columns=["lr", "init_index", "status"])
    ci_path = out_dir / "intervals.parquet"
    ci = pd.read_parquet(ci_path) if ci_path.is_file() else pd.DataFrame(columns=["lr", "init_index"])
    if "units" in ci.columns and (ci["units"] == "raw").any():  # the data's own units, as users compare them
        ci = ci[ci["units"] == "raw"]
    cells = []
    for (lr, init_index), runs in est.groupby(["lr", "init_index"], sort=True):
        rows = ci[(ci["lr"] == lr) & (ci["init_index"] == init_index)]
        cells.append(Cell(float(lr), int(init_index), runs["status"].value_counts().to_dict(), rows))
    return cells


def shown_methods(intervals: pd.DataFrame) -> list[str]:
    """percentile and t where the table has them; else the first bootstrap methods it has."""
    present = set(intervals["method"]) if "method" in intervals else set()
    shown = [m for m in SHOWN_METHODS if m in present]
    if len(shown) < 2:
        shown += [m for m in FALLBACK_METHODS if m in present and m not in shown][: 2 - len(shown)]
    return shown


def has_bootstrap_interval(cell: Cell) -> bool:
    """Whether a bootstrap interval (any method but t / hc3) of the cell has finite bounds."""
    if not len(cell.intervals):
        return False
    rows = cell.intervals[~cell.intervals["method"].isin(CLOSED_FORM)]
    return bool((rows["lower"].notna() & rows["upper"].notna()).any())


def why_no_interval(cell: Cell) -> str:
    if cell.counts.get(DIVERGED, 0) == sum(cell.counts.values()):
        return "every run diverged: lr too large"
    if not cell.counts.get(OK, 0):
        return "no run converged: raise train.epochs or lr"
    return "too few usable draws: see `note` in intervals.parquet"


def counts_text(cell: Cell) -> str:
    return "  ".join(f"{cell.counts.get(s, 0):>4}" for s in STATUSES)


def cell_label(cell: Cell, several_inits: bool) -> str:
    return f"{cell.lr:<9.4g}" + (f" init {cell.init_index:<3}" if several_inits else "")


def interval_lines(cell: Cell, methods: list[str], indent: str) -> list[str]:
    """One line per parameter: estimate (the fit on the original rows) and each method's bounds."""
    lines = []
    names = list(dict.fromkeys(cell.intervals["parameter"]))
    for name, rows in cell.intervals.groupby("parameter", sort=False):
        if len(lines) == MAX_PARAMETERS:
            lines.append(f"{indent}... {len(names) - MAX_PARAMETERS} more parameters: see report.html")
            break
        by_method = {m: rows[rows["method"] == m].iloc[0] for m in methods if (rows["method"] == m).any()}
        estimate = by_method[methods[0]]["estimate"] if methods[0] in by_method else rows["estimate"].iloc[0]
        bounds = "  ".join(f"{_bounds(by_method.get(m)):<22}" for m in methods)
        lines.append(f"{indent}{name:<10} {_fmt(estimate):>9}  {bounds}".rstrip())
    return lines


def cell_lines(cells: list[Cell], level: float) -> list[str]:
    """The table: a status line per cell, then its parameters' intervals when it has them."""
    several_inits = len({c.init_index for c in cells}) > 1
    methods = shown_methods(pd.concat([c.intervals for c in cells])) if cells else []
    width = len(cell_label(cells[0], several_inits)) if cells else 9
    pct = f"{level:.0%}"
    head = f"{'lr':<{width}} {'ok':>4}  {'n.c.':>4}  {'div.':>4}   parameter   estimate  "
    lines = [(head + "  ".join(f"{pct + ' ' + m:<22}" for m in methods)).rstrip()]
    shown = 0
    for cell in cells:
        prefix = f"{cell_label(cell, several_inits)} {counts_text(cell)}   "
        if not has_bootstrap_interval(cell):
            lines.append(prefix + f"(no interval: {why_no_interval(cell)})")
            continue
        shown += 1
        if shown > MAX_CELLS_WITH_INTERVALS:
            lines.append(prefix + "(intervals: see report.html)")
            continue
        params = interval_lines(cell, methods, " " * len(prefix))
        lines += [prefix + params[0].lstrip(), *params[1:]]
    return lines


DEPENDENT = "rows look dependent"  # how the intervals table's note begins (stats.cells.dependence_note)


def draw_lines(intervals: pd.DataFrame) -> list[str]:
    """How the bootstrap drew, unless by case resampling (scheme and block length), and the
    intervals table's note when the rows look dependent."""
    lines = []
    boot = intervals[intervals["scheme"].notna()] if "scheme" in intervals else intervals.iloc[:0]
    for scheme, rows in boot.groupby("scheme", sort=True):
        if scheme == "case":
            continue
        length = rows["block_length"].dropna() if "block_length" in rows else pd.Series(dtype=float)
        what = "mean block length" if scheme == "stationary" else "blocks of"
        block = f", {what} {length.iloc[0]:g} rows" if len(length) else ""
        lines.append(f"(bootstrap draws: {scheme}{block})")
    noted = intervals[intervals["note"].fillna("").str.contains(DEPENDENT, regex=False)] if "note" in intervals else []
    if len(noted):
        note = noted["note"].iloc[0]
        head, tail = note[note.index(DEPENDENT) :].split(", and ", 1)
        methods = ", ".join(dict.fromkeys(noted["method"]))
        lines += [f"note: {head},", f"  and {tail.replace('this interval assumes', methods + ' assume')}"]
    return lines


def sweep_summary(out_dir: Path, *, level: float = 0.95) -> str:
    """Per learning rate (and initial vector): status counts and, where the bootstrap gave
    intervals, each parameter's estimate with its percentile and t intervals; then where the
    report and the tables are."""
    out_dir = Path(out_dir)
    if not (out_dir / "estimates.parquet").is_file():
        return f"no estimates.parquet in {out_dir}: nothing to summarise"
    cells = read_cells(out_dir)
    if not cells:
        return "no runs have results yet"
    lines = cell_lines(cells, level)
    lines.append("(n.c.: not_converged, div.: diverged; estimate: the fit on the original rows)")
    lines += draw_lines(pd.concat([c.intervals for c in cells]))
    tables = [*TABLES, *(["predictions.parquet"] if (out_dir / "predictions.parquet").is_file() else [])]
    lines.append(f"tables: {', '.join(tables)} in {out_dir} (pandas.read_parquet)")
    return "\n".join(lines)
