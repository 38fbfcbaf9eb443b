"""The pipeline from Python: run a sweep, (re)build its tables, open a sweep folder.

What the console scripts do, as functions a notebook calls (`pipeline.cli` calls them too):

    run_sweep(["experiment=gistemp_line", "sweep=lr_grid"])   # pipeline-sweep ...
    aggregate_sweep("results/<sweep>")                          # pipeline-aggregate out_dir=...
    sweep = open_sweep("results/<sweep>")                       # its tables as DataFrames

Opening and aggregating a folder import neither torch nor Hydra (plain files); running a
sweep imports both, once. Every user mistake is a `ConfigError` (or `FolderError`) whose
message names the key, file or value.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import pandas as pd

from pipeline import store
from pipeline.core.errors import ConfigError, FolderError

log = logging.getLogger(__name__)

PathLike = Union[str, Path]


@dataclass
class SweepFolder:
    """A sweep folder, read from its files: its tables as DataFrames (read on first use),
    its status counts and its report. `open_sweep` makes one; `run_sweep` returns one."""

    out_dir: Path
    job_ids: list[str] = field(default_factory=list)  # SLURM arrays of the launch that returned it
    failed_tasks: list[str] = field(default_factory=list)  # messages of tasks that failed in that launch

    def _table(self, name: str, *, optional: bool = False) -> Optional[pd.DataFrame]:
        path = self.out_dir / name
        if not path.is_file():
            if optional:
                return None
            raise FolderError(
                f"{path} does not exist yet: the sweep has not been aggregated "
                f"(pipeline.aggregate_sweep({str(self.out_dir)!r}) or pipeline-aggregate builds it)"
            )
        try:
            return pd.read_parquet(path)
        except Exception as err:  # noqa: BLE001 - any unreadable table is one message naming it
            raise FolderError(
                f"{path} cannot be read ({type(err).__name__}: {err}); pipeline-aggregate rebuilds it from the parts"
            ) from err

    @cached_property
    def estimates(self) -> pd.DataFrame:
        """One row per run (estimates.parquet)."""
        return self._table(store.ESTIMATES)  # type: ignore[return-value]

    @cached_property
    def intervals(self) -> pd.DataFrame:
        """One row per grid cell, parameter and method (intervals.parquet)."""
        return self._table(store.INTERVALS)  # type: ignore[return-value]

    @cached_property
    def curves(self) -> pd.DataFrame:
        """The logged losses: run_id, epoch, loss (curves.parquet)."""
        return self._table(store.CURVES)  # type: ignore[return-value]

    @cached_property
    def predictions(self) -> Optional[pd.DataFrame]:
        """Prediction intervals at `intervals.at` (predictions.parquet), None when the sweep has none."""
        return self._table(store.PREDICTIONS, optional=True)

    @cached_property
    def plan(self) -> pd.DataFrame:
        """Every planned run (plan.parquet)."""
        return self._table(store.PLAN)  # type: ignore[return-value]

    @property
    def status_counts(self) -> dict[str, int]:
        """Runs per status among the results found so far (the parts, restricted to the plan)."""
        found = store.read_parts(self.out_dir, columns=["run_id", "status"])
        found = found[found["run_id"].isin(self.plan["run_id"])]
        return {str(k): int(v) for k, v in found["status"].value_counts().sort_index().items()}

    @property
    def report_path(self) -> Optional[Path]:
        """report.html, None until it is written."""
        path = self.out_dir / store.REPORT
        return path if path.is_file() else None

    def summary(self, level: float = 0.95) -> str:
        """The answer table the terminal prints after a sweep."""
        from pipeline.report.summary import sweep_summary

        return sweep_summary(self.out_dir, level=level)

    def __repr__(self) -> str:
        return f"SweepFolder({str(self.out_dir)!r})"


def open_sweep(out_dir: PathLike) -> SweepFolder:
    """The sweep folder `out_dir`; a FolderError when it is not one (no sweep.json / plan.parquet)."""
    path = Path(out_dir).expanduser().resolve()
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise FolderError(f"`out_dir`: {path} {what}: give the folder a sweep wrote (results/<experiment>-...)")
    if not (path / store.SWEEP_META).is_file() or not (path / store.PLAN).is_file():
        raise FolderError(f"`out_dir`: {path} is not a sweep folder (no {store.SWEEP_META} / {store.PLAN})")
    return SweepFolder(path)


def aggregate_sweep(
    out_dir: PathLike,
    *,
    level: float = 0.95,
    statuses: Sequence[str] = ("ok",),
    methods: Optional[Sequence[str]] = None,
    max_dropped_share: float = 0.1,
    plots: bool = True,
    at: Any = None,
    report: bool = True,
    hac_lags: Optional[int] = None,
) -> Any:
    """(Re)build a sweep folder's tables from the parts complete now, as `pipeline-aggregate` does:
    estimates, curves and intervals (and predictions at `at`), the PNGs (`plots`) and report.html
    (`report`). Returns the `AggregateReport` (runs found, missing, per status; `.summary()`).

    A bad `at` costs only predictions.parquet: the other tables and the report are written, then
    its ConfigError is raised. A report that cannot be drawn is a logged warning, never an error.
    """
    result = build_tables(
        open_sweep(out_dir).out_dir,
        level=level,
        statuses=statuses,
        methods=methods,
        max_dropped_share=max_dropped_share,
        plots=plots,
        at=at,
        report=report,
        hac_lags=hac_lags,
    )
    if result.predictions_problem is not None:
        raise result.predictions_problem
    return result


def build_tables(
    out_dir: Path,
    *,
    level: float,
    statuses: Sequence[str],
    methods: Optional[Sequence[str]],
    max_dropped_share: float,
    plots: bool,
    at: Any,
    report: bool,
    hac_lags: Optional[int] = None,
) -> Any:
    """`aggregate_sweep`'s work; a bad `at` is kept in `predictions_problem` instead of raised,
    so that the entry points print the answer before they stop with it."""
    from pipeline.report.figures import MAX_PANELS
    from pipeline.results.aggregate import aggregate

    settings = {
        "level": level,
        "statuses": tuple(statuses),
        "methods": methods,
        "max_dropped_share": max_dropped_share,
        "hac_lags": hac_lags,
    }
    result = aggregate(out_dir, **settings, plot_cells=MAX_PANELS if plots else 0)
    if result.plot_sample is not None and result.intervals is not None:
        from pipeline.report.pngs import write_plots  # matplotlib only when plots are wanted

        write_plots(out_dir, result.plot_sample, result.intervals, result.param_names, statuses)
    if at is not None or (out_dir / store.DATA_POINTS).is_file():  # asked for, or a non-linear model's answer
        from pipeline.results.predictions import write_predictions

        try:
            result.predictions_path = write_predictions(out_dir, at=at, **settings)
        except ConfigError as err:
            result.predictions_problem = err
    if report:
        result.report_path = write_report_safely(out_dir)
    return result


def write_report_safely(out_dir: Path) -> Optional[Path]:
    """report.html after the tables; a page that cannot be drawn costs a warning, never the tables."""
    from pipeline.report.page import write_report

    try:
        return write_report(out_dir)
    except Exception as err:  # noqa: BLE001 - the tables are written; say why the page is not
        log.warning("report.html not written: %r", err)
        return None


def run_sweep(overrides: Sequence[str] = (), *, echo: bool = True) -> SweepFolder:
    """Compose `conf/` with Hydra `overrides`, then do what `pipeline-sweep` does: check, launch,
    train, aggregate, write report.html and (with `echo`) print the answer. A SLURM launch without
    `launcher.wait` returns once submitted (tables come with `aggregate_sweep`); a dry run prints
    the plan and returns without creating the folder.

        run_sweep(["experiment=linear_synthetic", "sweep=single", "launcher=debug"])
    """
    from pipeline.config.compose import compose_config

    return sweep_from_config(compose_config(list(overrides)), echo=echo)


def sweep_from_config(cfg: dict[str, Any], *, echo: bool = True) -> SweepFolder:
    """`run_sweep` from a resolved config (the one `pipeline-sweep` gets from Hydra)."""
    from pipeline.launch.prepare import prepare
    from pipeline.launch.submit import launch

    prepared = prepare(cfg)
    launched = launch(prepared)
    folder = SweepFolder(prepared.out_dir, job_ids=list(launched.job_ids), failed_tasks=list(launched.failed_tasks))
    if cfg["launcher"]["dry_run"] or not launched.waited:
        if echo and not cfg["launcher"]["dry_run"]:
            print(submitted_text(folder.out_dir, launched))
        return folder
    intervals = cfg["intervals"]
    result = build_tables(
        folder.out_dir,
        level=intervals["level"],
        statuses=intervals["statuses"],
        methods=intervals["methods"],
        max_dropped_share=intervals["max_dropped_share"],
        plots=intervals["plots"],
        at=intervals.get("at"),
        report=False,
        hac_lags=intervals.get("hac_lags"),
    )
    if echo:
        print(answer_text(folder.out_dir, result, intervals))
    if cfg.get("report", True):
        path = write_report_safely(folder.out_dir)
        if echo and path is not None:
            print(f"  report: {path} (open it in a browser)")
    if result.predictions_problem is not None:
        raise result.predictions_problem
    return folder


def submitted_text(out_dir: Path, launched: Any) -> str:
    """What a launch that did not wait says: the arrays submitted and how to follow them."""
    return "\n".join(
        [
            f"sweep folder: {out_dir}",
            f"  submitted job array(s) {', '.join(launched.job_ids) or '(none: nothing left to train)'}: "
            f"{launched.n_tasks} task(s), {launched.n_planned - launched.n_skipped} runs "
            f"({launched.n_skipped} skipped, already done)",
            f"  watch:     pipeline-status out_dir={out_dir}",
            f"  when done: pipeline-aggregate out_dir={out_dir}",
        ]
    )


def answer_text(out_dir: Path, result: Any, intervals: dict[str, Any]) -> str:
    """The sweep's answer in the terminal, read back from the tables just written with the
    `intervals` settings (level, statuses, max_dropped_share, at)."""
    from pipeline.report.summary import sweep_summary

    lines = [f"sweep folder: {out_dir}", f"  {result.summary()}"]
    try:
        lines.append(sweep_summary(out_dir, level=intervals["level"], intervals=intervals))
    except Exception as err:  # noqa: BLE001 - the tables are written; the summary is a convenience
        log.warning("no summary: %r; the tables are in %s", err, out_dir)
    if result.predictions_path is not None:
        lines.append(f"  predictions: {result.predictions_path}")
    return "\n".join(lines)
