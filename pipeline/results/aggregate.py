"""Collect a sweep folder's parts into the tables users open with pandas.

Reads only complete parts (so it may run while tasks are still writing), keeps one
row per run id, restricts to the runs of the latest plan, and writes
`estimates.parquet`, `curves.parquet` and `intervals.parquet`, and (with
`intervals.plots`) PNGs of the bootstrap distributions and of the lr/init grid.

The tables are built as a stream (`pipeline.partscan`): parts are read row group by
row group, curves written in part order as they come, and estimates and intervals
one grid cell at a time, so memory is bounded by a cell, not by the sweep.
`in_memory_tables` is the plain pandas path it replaced, kept as the reference the
streaming tables are tested against.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import store
from pipeline.core.errors import ConfigError, DegenerateCellWarning, DroppedRunsWarning, FolderError
from pipeline.core.meta import SweepMeta
from pipeline.core.runs import BOOTSTRAP, ORIGINAL
from pipeline.results.lr_columns import lr_bounds_adder
from pipeline.results.raw_columns import SweepUnits, folder_units, with_raw_columns
from pipeline.stats.draws import kinds_of
from pipeline.stats.intervals import DESIGN_METHODS, applicable_methods, bootstrap_intervals, warn_about
from pipeline.store import scan as partscan

log = logging.getLogger(__name__)

ROW_GROUP_ROWS = 1 << 16  # rows per row group of estimates / curves (small cells are pooled)
PLOT_DRAWS = 5000  # bootstrap draws per plotted cell kept for the figures (the first, by index)
CURVES_SCHEMA = pa.schema([("run_id", pa.string()), ("epoch", pa.int64()), ("loss", pa.float64())])


@dataclass
class AggregateReport:
    out_dir: Path
    n_planned: int
    n_found: int
    status_counts: dict[str, int] = field(default_factory=dict)
    missing_run_ids: list[str] = field(default_factory=list)
    statuses_used: tuple[str, ...] = ("ok",)
    param_names: tuple[str, ...] = ()
    plot_sample: Optional[pd.DataFrame] = None  # the rows the figures need (`plot_cells`), else None
    intervals: Optional[pd.DataFrame] = None  # the intervals table, kept with the plot sample
    predictions_path: Optional[Path] = None  # set by the caller that wrote predictions.parquet
    predictions_problem: Optional[ConfigError] = None  # a bad `intervals.at` (the other tables are written)
    report_path: Optional[Path] = None  # set by the caller that wrote report.html

    def summary(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.status_counts.items())) or "none"
        text = f"{self.n_found} of {self.n_planned} runs have results ({counts})"
        if self.missing_run_ids:
            text += f"; {len(self.missing_run_ids)} missing, e.g. {', '.join(self.missing_run_ids[:3])}"
        if set(self.status_counts) == {"not_converged"} and "not_converged" not in self.statuses_used:
            text += (
                "\n  hint: no run converged (train.param_tol of the closed form, else train.grad_tol);"
                " bootstrap intervals of such fits would describe the optimiser, not the data, so none"
                " were formed (closed-form t/hc3 rows still are, where the model allows). Raise"
                " train.epochs or optim.lr (each run's status_note in estimates.parquet says how far it is)."
            )
        return text


def curves_frame(parts: pd.DataFrame) -> pd.DataFrame:
    """Long table of the loss curves: run_id, epoch, loss."""
    if parts.empty:
        return pd.DataFrame(
            {"run_id": pd.Series(dtype=str), "epoch": pd.Series(dtype="int64"), "loss": pd.Series(dtype=float)}
        )
    long = parts[["run_id", *store.CURVE_COLUMNS]].explode(list(store.CURVE_COLUMNS))
    long = long.dropna(subset=["curve_epoch"])
    return pd.DataFrame(
        {
            "run_id": long["run_id"].to_numpy(),
            "epoch": long["curve_epoch"].astype("int64").to_numpy(),
            "loss": long["curve_loss"].astype(float).to_numpy(),
        }
    )


def load_sweep(out_dir: Path, columns: Optional[list[str]] = None) -> tuple[SweepMeta, pd.DataFrame]:
    """The sweep's metadata and plan (only `columns`, if given); a ConfigError when
    `out_dir` is not a sweep folder."""
    if not (out_dir / store.SWEEP_META).is_file() or not (out_dir / store.PLAN).is_file():
        raise ConfigError([f"`out_dir`: {out_dir} is not a sweep folder (no sweep.json / plan.parquet)"])
    plan = store.read_plan(out_dir, columns)
    if "run_id" not in plan.columns:
        raise FolderError(f"{out_dir / store.PLAN} has no run_id column: it is not a sweep's plan")
    return store.read_meta(out_dir), plan


def sweep_design(out_dir: Path, meta: SweepMeta) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """Features and response of the sweep's original rows, saved at launch, for t / hc3."""
    if not meta.closed_form:
        return None
    design = store.read_design(out_dir, meta.param_names)
    if design is None:
        log.warning(
            "no t / hc3 intervals: %s has no %s (a folder from an older version: relaunch the "
            "sweep to record it; no run is retrained)",
            out_dir,
            store.DESIGN,
        )
    return design


def sorted_estimates(estimates: pd.DataFrame) -> pd.DataFrame:
    """Grid cell, then resample 0, the bootstrap draws, and the jackknife fits last."""
    if estimates.empty:
        return estimates
    order = estimates.assign(_jack=estimates["resample"] < 0, _index=estimates["resample"].abs())
    order = order.sort_values(["lr", "init_index", "_jack", "_index"], kind="stable")
    return order.drop(columns=["_jack", "_index"]).reset_index(drop=True)


@dataclass(frozen=True)
class IntervalInputs:
    """What every cell's intervals take besides its runs: chosen once from the kinds of all
    runs found, so a cell-by-cell table takes the same methods as one call over the sweep."""

    methods: list[str]
    X: Optional[np.ndarray]  # the design of the original rows (t / hc3 / hac), where there is one
    y: Optional[np.ndarray]
    units: SweepUnits  # raw-unit rows beside the fitted ones (results/raw_columns.py)


def interval_inputs(
    out_dir: Path, meta: SweepMeta, methods: Optional[Sequence[str]], kinds: pd.DataFrame
) -> IntervalInputs:
    design = sweep_design(out_dir, meta)
    if design is None and methods is not None:
        methods = [m for m in methods if m.lower() not in DESIGN_METHODS] or ["percentile"]
    X, y = design if design is not None else (None, None)
    return IntervalInputs(applicable_methods(methods, kinds, design is not None), X, y, folder_units(out_dir, meta))


def intervals_of(
    runs: pd.DataFrame,
    meta: SweepMeta,
    inputs: IntervalInputs,
    *,
    level: float,
    statuses: Sequence[str],
    max_dropped_share: float,
    hac_lags: Optional[int],
) -> pd.DataFrame:
    """`bootstrap_intervals` of these runs (the whole sweep, or cells of it), units labelled."""
    table = bootstrap_intervals(
        runs,
        params=list(meta.param_names),
        method=inputs.methods,
        level=level,
        statuses=statuses,
        max_dropped_share=max_dropped_share,
        X=inputs.X,
        y=inputs.y,
        raw_units=inputs.units.matrix,
        hac_lags=hac_lags,
        draw_rule=meta.draw_rule,
        draw_settings=meta.draw_settings(),
    )
    return inputs.units.label(table)


def _logged_warnings(fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DegenerateCellWarning)
        warnings.simplefilter("always", DroppedRunsWarning)
        result = fn(*args, **kwargs)
    for w in caught:
        log.warning("%s", w.message)
    return result


def interval_table(
    out_dir: Path,
    meta: SweepMeta,
    estimates: pd.DataFrame,
    *,
    level: float,
    statuses: Sequence[str],
    methods: Optional[Sequence[str]],
    max_dropped_share: float,
    hac_lags: Optional[int] = None,
) -> pd.DataFrame:
    """`bootstrap_intervals` of the estimates, with the design for t / hc3 / hac where there is one."""
    inputs = interval_inputs(out_dir, meta, methods, estimates)
    settings = {"level": level, "statuses": statuses, "max_dropped_share": max_dropped_share, "hac_lags": hac_lags}
    return _logged_warnings(intervals_of, estimates, meta, inputs, **settings)


def in_memory_tables(out_dir: Path, plan_ids: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(estimates, curves) with every run in memory: the reference for the streaming path."""
    parts = store.read_parts(out_dir)
    if len(parts):
        parts = parts[parts["run_id"].isin(plan_ids)]
    estimates = sorted_estimates(parts.drop(columns=list(store.CURVE_COLUMNS), errors="ignore"))
    if len(estimates):
        meta = store.read_meta(out_dir)
        estimates = lr_bounds_adder(out_dir, meta)(
            with_block_length(with_raw_columns(estimates, meta.param_names, folder_units(out_dir, meta)), meta)
        )
    return estimates, curves_frame(parts)


def with_block_length(estimates: pd.DataFrame, meta: SweepMeta) -> pd.DataFrame:
    """A block scheme's estimates with each bootstrap draw's (mean) block length beside its scheme
    (`block_length`, NaN for the other runs), which the intervals table reads; others as they are."""
    if meta.block_length is None:
        return estimates
    length = np.where(kinds_of(estimates) == BOOTSTRAP, float(meta.block_length), np.nan)
    return estimates.assign(block_length=length)


def cell_finisher(out_dir: Path, meta: SweepMeta, units: SweepUnits):
    """A cell's estimates as the table gives them: raw-unit columns (results/raw_columns.py), the
    block length of a block scheme's draws and each run's learning-rate bound (stats/lr_bound.py)
    added to the parts' columns."""
    add_bounds = lr_bounds_adder(out_dir, meta)
    return lambda cell: add_bounds(with_block_length(with_raw_columns(cell.to_pandas(), meta.param_names, units), meta))


def extended_schema(schema: pa.Schema, frame: pd.DataFrame) -> pa.Schema:
    """The parts' schema plus the (float) columns aggregation adds, in the frame's order."""
    added = [c for c in frame.columns if c not in schema.names]
    fields = {f.name: f for f in schema} | {c: pa.field(c, pa.float64()) for c in added}
    return pa.schema([fields[c] for c in frame.columns])


class TableWriter:
    """A Parquet file written in row groups of about ROW_GROUP_ROWS rows, renamed into place
    only when complete (as every file of a sweep folder)."""

    def __init__(self, path: Path, schema: pa.Schema):
        self._atomic = store.atomic_path(path)
        self._writer = pq.ParquetWriter(self._atomic.__enter__(), schema)
        self._pending: list[pa.Table] = []
        self._rows = 0

    def write(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._rows += len(table)
        if self._rows >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.concat_tables(self._pending), row_group_size=max(self._rows, 1))
        self._pending, self._rows = [], 0

    def __enter__(self) -> "TableWriter":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self._flush()
        self._writer.close()
        self._atomic.__exit__(*exc)


def curve_rows(table: pa.Table) -> pa.Table:
    """The long curves (run_id, epoch, loss) of a batch of part rows."""
    epochs = table["curve_epoch"].combine_chunks()
    owner = pc.list_parent_indices(epochs)
    return pa.table(
        {
            "run_id": table["run_id"].take(owner).cast(pa.string()),
            "epoch": pc.list_flatten(epochs).cast(pa.int64()),
            "loss": pc.list_flatten(table["curve_loss"].combine_chunks()).cast(pa.float64()),
        },
        schema=CURVES_SCHEMA,
    )


def sorted_cell(cell: pa.Table) -> pa.Table:
    """One cell's rows as `sorted_estimates` orders them: resample 0, draws, jackknife last."""
    resample = cell["resample"].to_numpy()
    return cell.take(np.lexsort((np.abs(resample), resample < 0)))


@dataclass
class PlotSample:
    """The rows the figures need: every cell's original fit, all draws (up to PLOT_DRAWS) of the
    first `cells` cells the figures show, and two usable draws of the others (they are counted)."""

    statuses: Sequence[str]
    columns: list[str]
    cells: int  # cells drawn in full (the figures' panels)
    frames: list[pd.DataFrame] = field(default_factory=list)
    shown: int = 0

    def add(self, cell: pd.DataFrame) -> None:
        kinds = kinds_of(cell)
        boot = cell[kinds == BOOTSTRAP]
        usable = boot[boot["status"].isin(self.statuses)]
        if len(usable) >= 2 and self.shown < self.cells:
            self.shown, keep = self.shown + 1, boot.head(PLOT_DRAWS)
        else:
            keep = usable.head(2)
        rows = pd.concat([cell[kinds == ORIGINAL], keep]) if len(keep) else cell[kinds == ORIGINAL]
        self.frames.append((rows if len(rows) else cell.head(1))[self.columns])

    def frame(self) -> pd.DataFrame:
        return pd.concat(self.frames, ignore_index=True)


def interval_columns(meta: SweepMeta, sample: Optional[PlotSample]) -> set[str]:
    """The columns `bootstrap_intervals` (and the plots) read of a cell."""
    names = list(meta.param_names)
    return {
        "lr",
        "init_index",
        "resample",
        "seed",
        "kind",
        "status",
        "scheme",
        "lr_max_stable",  # the advice of a cell without an interval names it (stats.cells.why_no_interval)
        "block_length",
        *names,
        *(f"ols_{n}" for n in names),
        *(sample.columns if sample is not None else ()),
    }


def stream_tables(
    out_dir: Path,
    meta: SweepMeta,
    index: partscan.PartIndex,
    *,
    level: float,
    statuses: Sequence[str],
    methods: Optional[Sequence[str]],
    max_dropped_share: float,
    sample: Optional[PlotSample],
    hac_lags: Optional[int] = None,
) -> pd.DataFrame:
    """Write curves and estimates from the parts, cell by cell; return the intervals table."""
    inputs = interval_inputs(out_dir, meta, methods, index.keys)
    settings = {"level": level, "statuses": statuses, "max_dropped_share": max_dropped_share, "hac_lags": hac_lags}
    finish = cell_finisher(out_dir, meta, inputs.units)
    estimate_schema = pa.schema([f for f in index.schema if f.name not in store.CURVE_COLUMNS])
    spill = partscan.CellSpill(estimate_schema, budget_bytes=partscan.SPILL_BUDGET_BYTES)
    try:
        with TableWriter(out_dir / store.CURVES, CURVES_SCHEMA) as curves:
            partscan.scan_parts(index, lambda rows: curves.write(curve_rows(rows)), spill)
        tables, wanted = [], interval_columns(meta, sample)
        first = finish(sorted_cell(spill.pop(0)))
        schema = extended_schema(estimate_schema, first)
        used = [c for c in first.columns if c in wanted]
        with TableWriter(out_dir / store.ESTIMATES, schema) as estimates:
            for n in range(len(index.cell_keys)):
                full = first if n == 0 else finish(sorted_cell(spill.pop(n)))
                estimates.write(pa.Table.from_pandas(full, schema=schema, preserve_index=False))
                frame = full[used]  # what intervals and plots read
                with warnings.catch_warnings():  # said once for the whole table, below
                    warnings.simplefilter("ignore", DegenerateCellWarning)
                    warnings.simplefilter("ignore", DroppedRunsWarning)
                    tables.append(intervals_of(frame, meta, inputs, **settings))
                if sample is not None:
                    sample.add(frame)
    finally:
        spill.close()
    table = pd.concat(tables, ignore_index=True)
    _logged_warnings(warn_about, table, max_dropped_share=max_dropped_share)
    return table


def aggregate(
    out_dir: Path,
    *,
    level: float = 0.95,
    statuses: Sequence[str] = ("ok",),
    methods: Optional[Sequence[str]] = None,
    max_dropped_share: float = 0.1,
    plot_cells: int = 0,
    hac_lags: Optional[int] = None,
) -> AggregateReport:
    """(Re)build the tables of a sweep folder from whatever parts are complete now.

    `methods` None: every interval method that applies (see `bootstrap_intervals`);
    `hac_lags` None: Newey-West's lag rule for `hac`.
    `plot_cells` > 0: also keep the rows the figures need (`AggregateReport.plot_sample`),
    every draw of that many cells; the figures themselves are drawn by the report layer.
    """
    out_dir = Path(out_dir)
    meta, plan = load_sweep(out_dir, columns=["run_id"])
    while True:  # once more for each part found damaged while streaming (it is set aside)
        try:
            return _aggregate(
                out_dir,
                meta,
                plan,
                level,
                statuses,
                methods=methods,
                max_dropped_share=max_dropped_share,
                plot_cells=plot_cells,
                hac_lags=hac_lags,
            )
        except partscan.DamagedPart as err:
            log.warning("building the tables again without %s", err)


def _aggregate(
    out_dir: Path,
    meta: SweepMeta,
    plan: pd.DataFrame,
    level: float,
    statuses: Sequence[str],
    *,
    methods: Optional[Sequence[str]],
    max_dropped_share: float,
    plot_cells: int,
    hac_lags: Optional[int],
) -> AggregateReport:
    plan_ids = pd.Index(plan["run_id"])
    index = partscan.index_parts(store.part_files(out_dir), plan_ids)
    report = AggregateReport(
        out_dir,
        len(plan),
        index.n_found,
        index.keys["status"].value_counts().to_dict(),
        sorted(set(plan_ids) - set(index.keys["run_id"])),
        tuple(statuses),
        param_names=meta.param_names,
    )
    if index.n_found == 0:  # nothing to stream: the empty tables exactly as they always were
        estimates, curves = in_memory_tables(out_dir, plan["run_id"])
        store.write_frame(estimates, out_dir / store.ESTIMATES)
        store.write_frame(curves, out_dir / store.CURVES)
        log.info("%s", report.summary())
        return report
    columns = ["lr", "init_index", "init", "resample", "kind", "status", "final_loss", *meta.param_names]
    sample = PlotSample(statuses, [c for c in columns if c in index.schema.names], plot_cells) if plot_cells else None
    intervals = stream_tables(
        out_dir,
        meta,
        index,
        level=level,
        statuses=statuses,
        methods=methods,
        max_dropped_share=max_dropped_share,
        sample=sample,
        hac_lags=hac_lags,
    )
    store.write_frame(intervals, out_dir / store.INTERVALS)
    if sample is not None:
        report.plot_sample, report.intervals = sample.frame(), intervals
    log.info("%s", report.summary())
    return report
