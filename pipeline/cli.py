"""Console entry points: `pipeline-sweep`, `pipeline-aggregate`, `pipeline-status`, `pipeline-coverage`,
`pipeline-report`.

All are Hydra apps: Hydra composes `conf/` and applies overrides (`sweep.lr=[1e-4,3e-4]`,
`--cfg job`, `--help`); these functions only turn the composed config into a plain
dict, prepare it (every check, the data read once) and call the library. User mistakes
end in one message and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Optional

import hydra
from omegaconf import DictConfig

from pipeline.compose import compose_config, resolved as to_container
from pipeline.config import CONF_DIR, PROJECT_ROOT
from pipeline.errors import ConfigError, Interrupted

# Flags users of sbatch-style tools expect, spelled as the config keys they set.
FLAG_OVERRIDES = {"--dry-run": "launcher.dry_run=true", "--wait": "launcher.wait=true",
                  "--wait-lock": "launcher.wait_lock=true"}


def _fail(err: ConfigError) -> None:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)


def _print_tables(out_dir: Path, summary: str) -> None:
    print(f"sweep folder: {out_dir}")
    print(f"  {summary}")
    print("  tables: estimates.parquet, curves.parquet, intervals.parquet (pandas.read_parquet)")


def _print_summary(out_dir: Path, counts: str, level: float) -> None:
    """The sweep's answer in the terminal, read back from the tables just written."""
    from pipeline.summary import sweep_summary

    print(f"sweep folder: {out_dir}")
    print(f"  {counts}")
    try:
        print(sweep_summary(out_dir, level=level))
    except Exception as err:  # noqa: BLE001 - the tables are written; the summary is a convenience
        print(f"warning: no summary: {err!r}; the tables are in {out_dir}", file=sys.stderr)


def _write_report(out_dir: Path) -> None:
    """report.html after the tables; a report that cannot be drawn costs a warning, never the tables."""
    from pipeline.report import write_report

    try:
        path = write_report(out_dir)
    except Exception as err:  # noqa: BLE001 - the tables are written; say why the page is not
        print(f"warning: report.html not written: {err!r}", file=sys.stderr)
        return
    print(f"  report: {path} (open it in a browser)")


TABLE_SETTINGS = ("level", "statuses", "methods", "max_dropped_share")  # what both aggregate and predict take


def _settings(intervals: dict[str, Any]) -> dict[str, Any]:
    """The `intervals` keys that shape every table, passed by name (no catch-all keywords)."""
    return {key: intervals[key] for key in TABLE_SETTINGS}


def _predictions(out_dir: Path, intervals: dict[str, Any]) -> Optional[ConfigError]:
    """predictions.parquet when `intervals.at` is set (pipeline/predict.py). Runs after the other
    tables are written; a bad `at` is returned, not raised, so that the caller still prints the
    summary and writes the report before it exits with the one message."""
    if intervals.get("at") is None:
        return None
    from pipeline.predict import write_predictions

    try:
        path = write_predictions(out_dir, at=intervals["at"], **_settings(intervals))
    except ConfigError as err:
        return err
    print(f"  predictions: {path}")
    return None


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _sweep_app(cfg: DictConfig) -> None:
    from pipeline.aggregate import aggregate
    from pipeline.launch import launch
    from pipeline.prepare import prepare

    try:
        container = to_container(cfg)
        prepared = prepare(container)
        report = launch(prepared)
    except ConfigError as err:
        _fail(err)
    except (Interrupted, KeyboardInterrupt) as err:  # what was saved and how to resume, no traceback
        print(f"{err or 'interrupted'}", file=sys.stderr)
        sys.exit(130)
    out_dir = prepared.out_dir
    if container["launcher"]["dry_run"]:
        return
    if not report.waited:
        print(f"sweep folder: {out_dir}")
        print(f"  submitted job array(s) {', '.join(report.job_ids) or '(none: nothing left to train)'}: "
              f"{report.n_tasks} task(s), {report.n_planned - report.n_skipped} runs "
              f"({report.n_skipped} skipped, already done)")
        print(f"  watch:     pipeline-status out_dir={out_dir}")
        print(f"  when done: pipeline-aggregate out_dir={out_dir}")
        return
    intervals = container["intervals"]
    try:
        summary = aggregate(out_dir, **_settings(intervals), plots=intervals["plots"])
    except ConfigError as err:  # e.g. a full disk while writing the tables: the parts are intact
        _fail(err)
    problem = _predictions(out_dir, intervals)
    _print_summary(out_dir, summary.summary(), intervals["level"])
    if container["report"]:
        _write_report(out_dir)
    if problem is not None:
        _fail(problem)
    if report.failed_tasks:
        print(f"error: {len(report.failed_tasks)} task(s) failed; relaunch to retry only their runs",
              file=sys.stderr)
        sys.exit(1)


def _precheck(config_name: str) -> None:
    """Compose the command line's config before Hydra does, so that a bad override (or, for
    sweeps, an `out_dir` Hydra could not create) ends in one message and exit code 2 instead
    of Hydra's text and code 1. Runs with Hydra's own flags (-m, --cfg, --help) are left to it."""
    args = sys.argv[1:]
    if any(arg.startswith("-") for arg in args):
        return
    try:
        cfg = compose_config(args, config_name)
        if config_name == "config":
            from pipeline.prepare import out_dir_problems, validate

            if out_dir_problems(cfg["out_dir"]):
                validate(cfg)  # Hydra would fail creating out_dir: list every problem now
    except ConfigError as err:
        _fail(err)


def _find_our_sweeper() -> None:
    """Let Hydra's plugin scan see hydra_plugins/pipeline_sweeper under an editable install.

    setuptools' editable finder gives the `hydra_plugins` namespace a path hook that
    `pkgutil.iter_modules` (Hydra's plugin discovery) cannot list, so `-m` would fail with
    "Could not find 'hydra/sweeper/pipeline'"; the real folder on the namespace path fixes it.
    """
    import hydra_plugins

    ours = str(PROJECT_ROOT / "hydra_plugins")
    if (PROJECT_ROOT / "hydra_plugins").is_dir() and ours not in list(hydra_plugins.__path__):
        hydra_plugins.__path__.append(ours)


def sweep_main() -> None:
    """Plan, validate, launch and aggregate one sweep (`--dry-run`, `--wait` accepted)."""
    sys.argv = [FLAG_OVERRIDES.get(arg, arg) for arg in sys.argv]
    _find_our_sweeper()
    _precheck("config")
    _sweep_app()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="aggregate")
def _aggregate_app(cfg: DictConfig) -> None:
    """(Re)build estimates, curves and intervals of a sweep folder."""
    from pipeline.aggregate import aggregate

    container = to_container(cfg)
    out_dir = Path(container["out_dir"]).resolve()
    intervals = container["intervals"]
    try:
        summary = aggregate(out_dir, **_settings(intervals), plots=intervals["plots"])
    except ConfigError as err:
        _fail(err)
    except ValueError as err:  # the interval settings given here (level, methods, ...) are refused
        _fail(ConfigError([f"`intervals`: {err}"]))
    problem = _predictions(out_dir, intervals)  # a bad `intervals.at` costs predictions.parquet only
    _print_tables(out_dir, summary.summary())
    if container["report"]:
        _write_report(out_dir)
    if problem is not None:
        _fail(problem)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="report")
def _report_app(cfg: DictConfig) -> None:
    """(Re)write report.html of a sweep folder from its files."""
    from pipeline.aggregate import load_sweep

    out_dir = Path(to_container(cfg)["out_dir"]).resolve()
    try:
        load_sweep(out_dir)
    except ConfigError as err:
        _fail(err)
    print(f"sweep folder: {out_dir}")
    _write_report(out_dir)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="status")
def _status_app(cfg: DictConfig) -> None:
    """Runs done / pending / running / failed / diverged per task of a sweep folder."""
    from pipeline.aggregate import load_sweep
    from pipeline.status import failure_messages, summary, task_table

    out_dir = Path(to_container(cfg)["out_dir"]).resolve()
    try:
        load_sweep(out_dir)
    except ConfigError as err:
        _fail(err)
    table = task_table(out_dir)
    print(f"sweep folder: {out_dir}")
    print(summary(out_dir, table))
    if len(table):
        print(table.to_string(index=False))
    else:
        print("(no SLURM tasks recorded: a debug or local sweep; `pipeline-aggregate` reports its runs)")
    for message in failure_messages(out_dir, table):
        print(f"  {message}")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="coverage")
def _coverage_app(cfg: DictConfig) -> None:
    """Simulate data sets from a known truth, bootstrap each, report each interval's coverage."""
    from pipeline.coverage import prepare_coverage, run_coverage

    container = to_container(cfg)
    try:
        report = run_coverage(prepare_coverage(container), Path(container["out_dir"]).resolve())
    except ConfigError as err:
        _fail(err)
    print(report.text())


def _entry_point(app: Any, config_name: str) -> Callable[[], None]:
    def main() -> None:
        _precheck(config_name)
        app()
    main.__doc__ = app.__doc__
    return main


aggregate_main = _entry_point(_aggregate_app, "aggregate")
report_main = _entry_point(_report_app, "report")
status_main = _entry_point(_status_app, "status")
coverage_main = _entry_point(_coverage_app, "coverage")
