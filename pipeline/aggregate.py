"""Collect a sweep folder's parts into the tables users open with pandas.

Reads only complete parts (so it may run while tasks are still writing), keeps one
row per run id, restricts to the runs of the latest plan, and writes
`estimates.parquet`, `curves.parquet` and `intervals.parquet`.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from pipeline import record
from pipeline.config import ConfigError
from pipeline.intervals import DegenerateCellWarning, bootstrap_intervals

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
            text += ("\n  hint: no run reached train.grad_tol; intervals of such fits would describe the"
                     " optimiser, not the data, so none were formed. Raise train.epochs or optim.lr"
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


def load_sweep(out_dir: Path) -> tuple[dict, pd.DataFrame]:
    meta_path, plan_path = out_dir / "sweep.json", out_dir / "plan.parquet"
    if not meta_path.is_file() or not plan_path.is_file():
        raise ConfigError([f"`out_dir`: {out_dir} is not a sweep folder (no sweep.json / plan.parquet)"])
    return record.read_json(meta_path), pd.read_parquet(plan_path)


def aggregate(out_dir: Path, *, level: float = 0.95, statuses: Sequence[str] = ("ok",)) -> AggregateReport:
    """(Re)build the tables of a sweep folder from whatever parts are complete now."""
    out_dir = Path(out_dir)
    meta, plan = load_sweep(out_dir)
    parts = record.read_parts(out_dir)
    if len(parts):
        parts = parts[parts["run_id"].isin(plan["run_id"])]
    report = AggregateReport(out_dir, len(plan), len(parts),
                             parts["status"].value_counts().to_dict() if len(parts) else {},
                             sorted(set(plan["run_id"]) - set(parts["run_id"])), tuple(statuses))
    estimates = parts.drop(columns=list(record.CURVE_COLUMNS), errors="ignore")
    estimates = estimates.sort_values(["lr", "init_index", "resample"], kind="stable") if len(estimates) else estimates
    record.write_frame(estimates.reset_index(drop=True), out_dir / "estimates.parquet")
    record.write_frame(curves_frame(parts), out_dir / "curves.parquet")
    if len(estimates):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DegenerateCellWarning)
            intervals = bootstrap_intervals(estimates, params=meta["param_names"], level=level, statuses=statuses)
        for w in caught:
            log.warning("%s", w.message)
        record.write_frame(intervals, out_dir / "intervals.parquet")
    log.info("%s", report.summary())
    return report
