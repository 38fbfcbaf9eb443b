"""The terminal's answer table at the end of a sweep (and of `pipeline-aggregate`).

`sweep_summary(out_dir)` reads the folder's tables into an `answer.Answer` and prints it: per
grid cell its status counts, then each line's estimate and intervals, or why the cell has none.
It stays short on purpose (about a dozen lines for the default sweep); report.html opens on the
same table, whole, and the tables hold everything. pandas only, no torch.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Optional

import pandas as pd
import pyarrow.parquet as pq

from pipeline import store
from pipeline.report.answer import PREDICTIONS, STATUSES, Answer, CellAnswer, bounds_text, build_answer, fmt

MAX_CELLS_WITH_INTERVALS = 4  # more cells than this: the rest say "see report.html"
MAX_LINES = 6  # per cell: a model with more parameters (or predictions) shows the first few
ESTIMATE_COLUMNS = ("lr", "init_index", "status", "resample", "kind", "lr_max_stable")
TABLES = (store.ESTIMATES, store.CURVES, store.INTERVALS)
METHOD_WIDTH = 22
PREFACE_WIDTH = 100


def _read(path: Path, columns: Optional[list] = None) -> pd.DataFrame:
    """A table of the folder (only `columns`, those it has); empty when absent."""
    if not path.is_file():
        return pd.DataFrame()
    if columns is not None:
        present = set(pq.read_schema(path).names)
        columns = [c for c in columns if c in present]
    return pd.read_parquet(path, columns=columns)


def read_answer(
    out_dir: Path, level: Optional[float] = None, intervals: Optional[dict[str, Any]] = None
) -> Optional[Answer]:
    """The answer of a sweep folder, from its tables; None when it has no estimates yet.
    `intervals`: the settings the tables were just built with (else config.yaml's)."""
    out_dir = Path(out_dir)
    meta_path = out_dir / store.SWEEP_META
    meta = store.read_json(meta_path) if meta_path.is_file() else {}
    config = store.read_config(out_dir)
    if intervals is not None:
        config = {**config, "intervals": {**(config.get("intervals") or {}), **intervals}}
    return build_answer(
        _read(out_dir / store.ESTIMATES, list(ESTIMATE_COLUMNS)),
        _read(out_dir / store.INTERVALS),
        _read(out_dir / store.PREDICTIONS),
        meta if isinstance(meta, dict) else {},
        config,
        level,
    )


def counts_text(cell: CellAnswer) -> str:
    return "  ".join(f"{cell.counts.get(s, 0):>4}" for s in STATUSES)


def cell_label(cell: CellAnswer, several_inits: bool) -> str:
    return f"{cell.lr:<9.4g}" + (f" init {cell.init_index:<3}" if several_inits else "")


def line_texts(answer: Answer, cell: CellAnswer, indent: str, width: int, label_width: int) -> list[str]:
    """One text line per shown line of the cell: label, estimate, each method's bounds."""
    texts = []
    for line in cell.lines[:MAX_LINES]:
        bounds = "  ".join(f"{bounds_text(line, m):<{width}}" for m in answer.methods)
        texts.append(f"{indent}{line.label:<{label_width}} {fmt(line.estimate):>9}  {bounds}".rstrip())
    if len(cell.lines) > MAX_LINES:
        what = "predictions" if answer.subject == PREDICTIONS else "parameters"
        texts.append(f"{indent}... {len(cell.lines) - MAX_LINES} more {what}: see report.html")
    texts += [f"{indent}! {mark}" for mark in cell.marks]
    return texts


def answer_lines(answer: Answer) -> list[str]:
    """The table: a status line per cell, then its lines' intervals when it has them."""
    several = answer.several_inits
    width = len(cell_label(answer.cells[0], several)) if answer.cells else 9
    labels = [line.label for cell in answer.cells for line in cell.lines[:MAX_LINES]]
    what = "prediction" if answer.subject == PREDICTIONS else "parameter"
    label_width = max([10, len(what), *map(len, labels)])
    method_width = max([METHOD_WIDTH, *(len(answer.header(m)) + 1 for m in answer.methods)])
    head = f"{'lr':<{width}} {'ok':>4}  {'n.c.':>4}  {'div.':>4}   {what:<{label_width}}  estimate  "
    lines = textwrap.wrap(answer.preface, PREFACE_WIDTH) if answer.preface else []
    lines.append((head + "  ".join(f"{answer.header(m):<{method_width}}" for m in answer.methods)).rstrip())
    shown = 0
    for cell in answer.cells:
        prefix = f"{cell_label(cell, several)} {counts_text(cell)}   "
        if not cell.lines:
            lines.append(prefix + f"(no interval: {cell.reason})")
            continue
        shown += 1
        if shown > MAX_CELLS_WITH_INTERVALS:
            lines.append(prefix + "(intervals: see report.html)")
            continue
        texts = line_texts(answer, cell, " " * len(prefix), method_width, label_width)
        lines += [prefix + texts[0].lstrip(), *texts[1:]]
    lines.append(f"({answer.legend})")
    return lines


def sweep_summary(out_dir: Path, *, level: Optional[float] = None, intervals: Optional[dict[str, Any]] = None) -> str:
    """Per learning rate (and initial vector): status counts and, where the sweep gave intervals,
    each parameter's (or prediction's) estimate with its intervals; then where the tables are."""
    out_dir = Path(out_dir)
    if not (out_dir / store.ESTIMATES).is_file():
        return f"no {store.ESTIMATES} in {out_dir}: nothing to summarise"
    answer = read_answer(out_dir, level, intervals)
    if answer is None or not answer.cells:
        return "no runs have results yet"
    lines = answer_lines(answer) + list(answer.afterword)
    tables = [*TABLES, *([store.PREDICTIONS] if (out_dir / store.PREDICTIONS).is_file() else [])]
    lines.append(f"tables: {', '.join(tables)} in {out_dir} (pandas.read_parquet)")
    return "\n".join(lines)
