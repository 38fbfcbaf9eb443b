"""Collect a sweep folder's parts into the tables users open with pandas.

Reads only complete parts (so it may run while tasks are still writing), keeps one
row per run id, restricts to the runs of the latest plan, and writes
`estimates.parquet`, `curves.parquet` and `intervals.parquet`, and (with
`intervals.plots`) PNGs of the bootstrap distributions and of the lr/init grid.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from pipeline import record
from pipeline.errors import ConfigError
from pipeline.records import SweepMeta
from pipeline.intervals import DESIGN_METHODS, DegenerateCellWarning, DroppedRunsWarning, bootstrap_intervals
from pipeline.lr_bound import with_lr_bounds
from pipeline.units import folder_units, with_raw_columns

log = logging.getLogger(__name__)


@dataclass
class AggregateReport:
    out_dir: Path
    n_planned: int
    n_found: int
    status_counts: dict[str, int] = field(default_factory=dict)
    missing_run_ids: list[str] = field(default_factory=list)
    statuses_used: tuple[str, ...] = ("ok",)

    def summary(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.status_counts.items())) or "none"
        text = f"{self.n_found} of {self.n_planned} runs have results ({counts})"
        if self.missing_run_ids:
            text += f"; {len(self.missing_run_ids)} missing, e.g. {', '.join(self.missing_run_ids[:3])}"
        if set(self.status_counts) == {"not_converged"} and "not_converged" not in self.statuses_used:
            text += ("\n  hint: no run reached train.grad_tol; bootstrap intervals of such fits would"
                     " describe the optimiser, not the data, so none were formed (closed-form t/hc3 rows"
                     " still are, where the model allows). Raise train.epochs or optim.lr"
                     " (see gap_to_ols and grad_norm in estimates.parquet).")
        return text


def curves_frame(parts: pd.DataFrame) -> pd.DataFrame:
    """Long table of the loss curves: run_id, epoch, loss."""
    if parts.empty:
        return pd.DataFrame({"run_id": pd.Series(dtype=str), "epoch": pd.Series(dtype="int64"),
                             "loss": pd.Series(dtype=float)})
    long = parts[["run_id", *record.CURVE_COLUMNS]].explode(list(record.CURVE_COLUMNS))
    long = long.dropna(subset=["curve_epoch"])
    return pd.DataFrame({"run_id": long["run_id"].to_numpy(),
                         "epoch": long["curve_epoch"].astype("int64").to_numpy(),
                         "loss": long["curve_loss"].astype(float).to_numpy()})


def load_sweep(out_dir: Path) -> tuple[SweepMeta, pd.DataFrame]:
    """The sweep's metadata and plan; a ConfigError when `out_dir` is not a sweep folder."""
    if not (out_dir / record.SWEEP_META).is_file() or not (out_dir / record.PLAN).is_file():
        raise ConfigError([f"`out_dir`: {out_dir} is not a sweep folder (no sweep.json / plan.parquet)"])
    return record.read_meta(out_dir), pd.read_parquet(out_dir / record.PLAN)


def sweep_design(out_dir: Path, meta: SweepMeta) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """Features and response of the sweep's original rows, saved at launch, for t / hc3."""
    if not meta.closed_form:
        return None
    design = record.read_design(out_dir, meta.param_names)
    if design is None:
        log.warning("no t / hc3 intervals: %s has no %s (a folder from an older version: relaunch the "
                    "sweep to record it; no run is retrained)", out_dir, record.DESIGN)
    return design


def sorted_estimates(estimates: pd.DataFrame) -> pd.DataFrame:
    """Grid cell, then resample 0, the bootstrap draws, and the jackknife fits last."""
    if estimates.empty:
        return estimates
    order = estimates.assign(_jack=estimates["resample"] < 0, _index=estimates["resample"].abs())
    order = order.sort_values(["lr", "init_index", "_jack", "_index"], kind="stable")
    return order.drop(columns=["_jack", "_index"]).reset_index(drop=True)


def interval_table(out_dir: Path, meta: SweepMeta, estimates: pd.DataFrame, *, level: float,
                   statuses: Sequence[str], methods: Optional[Sequence[str]],
                   max_dropped_share: float) -> pd.DataFrame:
    """`bootstrap_intervals` of the estimates, with the design for t / hc3 where there is one."""
    design = sweep_design(out_dir, meta)
    if design is None and methods is not None:
        methods = [m for m in methods if m.lower() not in DESIGN_METHODS] or ["percentile"]
    X, y = design if design is not None else (None, None)
    units = folder_units(out_dir, meta)  # raw-unit rows beside the fitted ones (pipeline/units.py)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DegenerateCellWarning)
        warnings.simplefilter("always", DroppedRunsWarning)
        table = bootstrap_intervals(estimates, params=list(meta.param_names), method=methods, level=level,
                                    statuses=statuses, max_dropped_share=max_dropped_share, X=X, y=y,
                                    raw_units=units.matrix)
    for w in caught:
        log.warning("%s", w.message)
    return units.label(table)


def aggregate(out_dir: Path, *, level: float = 0.95, statuses: Sequence[str] = ("ok",),
              methods: Optional[Sequence[str]] = None, max_dropped_share: float = 0.1,
              plots: bool = True) -> AggregateReport:
    """(Re)build the tables of a sweep folder from whatever parts are complete now.

    `methods` None: every interval method that applies (see `bootstrap_intervals`).
    """
    out_dir = Path(out_dir)
    meta, plan = load_sweep(out_dir)
    parts = record.read_parts(out_dir)
    if len(parts):
        parts = parts[parts["run_id"].isin(plan["run_id"])]
    report = AggregateReport(out_dir, len(plan), len(parts),
                             parts["status"].value_counts().to_dict() if len(parts) else {},
                             sorted(set(plan["run_id"]) - set(parts["run_id"])), tuple(statuses))
    estimates = sorted_estimates(parts.drop(columns=list(record.CURVE_COLUMNS), errors="ignore"))
    # raw-unit parameters and the learning-rate bound of each run (pipeline/units.py, lr_bound.py)
    estimates = with_lr_bounds(out_dir, meta, with_raw_columns(estimates, meta.param_names, folder_units(out_dir, meta)))
    record.write_frame(estimates, out_dir / "estimates.parquet")
    record.write_frame(curves_frame(parts), out_dir / "curves.parquet")
    if len(estimates):
        intervals = interval_table(out_dir, meta, estimates, level=level, statuses=statuses, methods=methods,
                                   max_dropped_share=max_dropped_share)
        record.write_frame(intervals, out_dir / "intervals.parquet")
        if plots:
            from pipeline.plots import write_plots  # matplotlib only when plots are wanted

            write_plots(out_dir, estimates, intervals, meta.param_names, statuses)
    log.info("%s", report.summary())
    return report
