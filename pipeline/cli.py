"""Console entry points: `pipeline-sweep` and `pipeline-aggregate`, both Hydra apps.

Hydra composes `conf/` and applies overrides (`sweep.lr=[1e-4,3e-4]`, `--cfg job`,
`--help`); these functions only turn the composed config into a validated plain dict
and call the library. User mistakes end in one message and exit code 2.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from pipeline.config import CONF_DIR, ConfigError, to_container, validate

log = logging.getLogger("pipeline")


def _fail(err: ConfigError) -> None:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def sweep_main(cfg: DictConfig) -> None:
    """Plan, validate, launch and aggregate one sweep."""
    from pipeline.aggregate import aggregate
    from pipeline.launch import launch

    container = to_container(cfg)
    try:
        validate(container)
    except ConfigError as err:
        _fail(err)
    out_dir = Path(container["out_dir"]).resolve()
    report = launch(container, out_dir)
    summary = aggregate(out_dir, level=container["intervals"]["level"],
                        statuses=container["intervals"]["statuses"])
    print(f"sweep folder: {out_dir}")
    print(f"  {summary.summary()}")
    print(f"  tables: estimates.parquet, curves.parquet, intervals.parquet (pandas.read_parquet)")
    if report.failed_tasks:
        print(f"error: {len(report.failed_tasks)} task(s) failed; relaunch to retry only their runs",
              file=sys.stderr)
        sys.exit(1)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="aggregate")
def aggregate_main(cfg: DictConfig) -> None:
    """(Re)build estimates, curves and intervals of a sweep folder."""
    from pipeline.aggregate import aggregate

    container = to_container(cfg)
    out_dir = Path(container["out_dir"]).resolve()
    try:
        summary = aggregate(out_dir, level=container["intervals"]["level"],
                            statuses=container["intervals"]["statuses"])
    except ConfigError as err:
        _fail(err)
    print(f"sweep folder: {out_dir}")
    print(f"  {summary.summary()}")
