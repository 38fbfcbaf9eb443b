"""Console entry points: `pipeline-sweep`, `pipeline-aggregate`, `pipeline-status`, `pipeline-coverage`,
`pipeline-report`.

All are Hydra apps: Hydra composes `conf/` and applies overrides (`sweep.lr=[1e-4,3e-4]`,
`--cfg job`, `--help`); these functions only turn the composed config into a plain
dict, prepare it (every check, the data read once) and call the library. User mistakes
end in one message and exit code 2.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from pipeline.config.compose import compose_config
from pipeline.config.compose import resolved as to_container
from pipeline.config.shipped import CONF_DIR, PACKAGE_DIR
from pipeline.core.errors import ConfigError, FolderError, Interrupted

if TYPE_CHECKING:  # imported where a sweep is run: pandas would slow `--help` by half a second
    from pipeline.store.hydra_files import HydraFiles

# Flags users of sbatch-style tools expect, spelled as the config keys they set.
FLAG_OVERRIDES = {
    "--dry-run": "launcher.dry_run=true",
    "--wait": "launcher.wait=true",
    "--wait-lock": "launcher.wait_lock=true",
    "--force": "launcher.force=true",
    "--new-sweep": "launcher.new_sweep=true",
}


def _fail(err: ConfigError) -> None:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)


def _interval_settings(intervals: dict[str, Any]) -> dict[str, Any]:
    """The `intervals` keys every table takes, passed by name (no catch-all keywords)."""
    return {
        key: intervals[key] for key in ("level", "statuses", "methods", "max_dropped_share", "plots", "at", "hac_lags")
    }


def _sweep(cfg: DictConfig, hydra_files: Optional[HydraFiles]) -> None:
    """Launch the composed sweep; a refused one (exit 2) or a dry run leaves out_dir as it was."""
    from pipeline.api import sweep_from_config

    def put_back() -> None:  # Hydra wrote .hydra/ and sweep.log before we ran: undo that
        if hydra_files is not None:
            logging.shutdown()  # sweep.log's handler lets go of the file
            hydra_files.put_back(HydraConfig.get().runtime.output_dir)

    try:
        container = to_container(cfg)
        folder = sweep_from_config(container)
    except ConfigError as err:
        put_back()
        _fail(err)
    except (Interrupted, KeyboardInterrupt) as err:  # what was saved and how to resume, no traceback
        print(f"{err or 'interrupted'}", file=sys.stderr)
        sys.exit(130)
    if container["launcher"]["dry_run"]:
        put_back()
    if folder.failed_tasks:
        print(f"error: {len(folder.failed_tasks)} task(s) failed; relaunch to retry only their runs", file=sys.stderr)
        sys.exit(1)


def _precheck(config_name: str) -> Optional[dict[str, Any]]:
    """Compose the command line's config before Hydra does, so that a bad override (or, for
    sweeps, an `out_dir` Hydra could not create) ends in one message and exit code 2 instead
    of Hydra's text and code 1. Runs with Hydra's own flags (-m, --cfg, --help) are left to it
    (None); otherwise the composed config."""
    args = sys.argv[1:]
    if any(arg.startswith("-") for arg in args):
        return None
    try:
        cfg = compose_config(args, config_name)
        if config_name == "config":
            from pipeline.launch.identity import other_sweep_problems
            from pipeline.launch.prepare import out_dir_problems, validate

            if out_dir_problems(cfg["out_dir"]):
                validate(cfg)  # Hydra would fail creating out_dir: list every problem now
            other = other_sweep_problems(cfg, data_digest=None)
            if other:  # before Hydra writes its .hydra/ there: the folder is left as it was
                raise ConfigError(other)
    except ConfigError as err:
        _fail(err)
    return cfg


def _find_our_sweeper() -> None:
    """Let Hydra's plugin scan see hydra_plugins/pipeline_sweeper under an editable install.

    setuptools' editable finder gives the `hydra_plugins` namespace a path hook that
    `pkgutil.iter_modules` (Hydra's plugin discovery) cannot list, so `-m` would fail with
    "Could not find 'hydra/sweeper/pipeline'"; the real folder on the namespace path fixes it.
    """
    import hydra_plugins

    ours = str(PACKAGE_DIR.parent / "hydra_plugins")
    if (PACKAGE_DIR.parent / "hydra_plugins").is_dir() and ours not in list(hydra_plugins.__path__):
        hydra_plugins.__path__.append(ours)


def sweep_main() -> None:
    """Plan, validate, launch and aggregate one sweep (`--dry-run`, `--wait` accepted)."""
    sys.argv = [FLAG_OVERRIDES.get(arg, arg) for arg in sys.argv]
    _find_our_sweeper()
    cfg = _precheck("config")
    hydra_files = None
    if cfg is not None:
        from pipeline.store.hydra_files import HydraFiles

        hydra_files = HydraFiles.before(cfg["out_dir"])

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
    def sweep_app(cfg: DictConfig) -> None:
        _sweep(cfg, hydra_files)

    sweep_app()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="aggregate")
def _aggregate_app(cfg: DictConfig) -> None:
    """(Re)build estimates, curves and intervals of a sweep folder."""
    from pipeline.api import answer_text, build_tables, open_sweep

    container = to_container(cfg)
    try:
        out_dir = open_sweep(container["out_dir"]).out_dir
        result = build_tables(out_dir, **_interval_settings(container["intervals"]), report=container["report"])
    except ConfigError as err:
        _fail(err)
    except ValueError as err:  # the interval settings given here (level, methods, ...) are refused
        _fail(ConfigError([f"`intervals`: {err}"]))
    print(answer_text(out_dir, result, container["intervals"]))  # what the sweep itself printed
    if result.report_path is not None:
        print(f"  report: {result.report_path} (open it in a browser)")
    if result.predictions_problem is not None:  # a bad `intervals.at` costs predictions.parquet only
        _fail(result.predictions_problem)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="report")
def _report_app(cfg: DictConfig) -> None:
    """(Re)write report.html of a sweep folder from its files."""
    from pipeline.api import open_sweep, write_report_safely

    try:
        out_dir = open_sweep(to_container(cfg)["out_dir"]).out_dir
    except ConfigError as err:
        _fail(err)
    print(f"sweep folder: {out_dir}")
    path = write_report_safely(out_dir)
    if path is None:
        _fail(FolderError(f"report.html not written in {out_dir} (the warning above says why)"))
    print(f"  report: {path} (open it in a browser)")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="status")
def _status_app(cfg: DictConfig) -> None:
    """Runs done (per status) / pending / running / failed per task of a sweep folder."""
    from pipeline.api import open_sweep
    from pipeline.launch.status import status_text

    try:
        print(status_text(open_sweep(to_container(cfg)["out_dir"]).out_dir))
    except ConfigError as err:
        _fail(err)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="coverage")
def _coverage_app(cfg: DictConfig) -> None:
    """Simulate data sets from a known truth, bootstrap each, report each interval's coverage."""
    from pipeline.studies.coverage import prepare_coverage, run_coverage

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
