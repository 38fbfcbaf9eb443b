"""Learning-rate, initial-value and bootstrap sweeps of small gradient-descent fits in PyTorch.

The public API (each name imported on first use, so `import pipeline` imports neither torch
nor Hydra):

Run and read sweeps (what the console scripts do):
    run_sweep(overrides)        compose conf/ with Hydra overrides, train, aggregate, report
    aggregate_sweep(out_dir)    (re)build a sweep folder's tables, PNGs and report.html
    open_sweep(out_dir)         a SweepFolder: .estimates, .intervals, .curves, .predictions
                                (DataFrames), .status_counts, .report_path, .summary()
    SweepFolder                 the class open_sweep returns

Statistics on your own tables:
    bootstrap_intervals(estimates, params=...)     the intervals table of a sweep's estimates
    prediction_intervals(predictions, points, ...) intervals of predicted values

Errors and warnings to catch:
    ConfigError      a config, data or command cannot be run (the message names key and value)
    FolderError      a sweep folder cannot be used (missing, held by another launch, damaged)
    DiskFullError    no space left while writing a sweep folder; nothing written is lost
    Interrupted      a sweep stopped by Ctrl-C / SIGTERM (its message says how to resume)
    DegenerateCellWarning, DroppedRunsWarning   a grid cell without an interval / with many dropped draws

The package follows the data's path, one layer per subpackage (README, "Layout"):
core -> config, data, store -> models, stats, sweep -> train -> launch, results -> report
-> api, studies -> cli.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

# public name -> the module that defines it
_HOMES = {
    "run_sweep": "pipeline.api",
    "aggregate_sweep": "pipeline.api",
    "open_sweep": "pipeline.api",
    "SweepFolder": "pipeline.api",
    "bootstrap_intervals": "pipeline.stats.intervals",
    "prediction_intervals": "pipeline.stats.prediction",
    "ConfigError": "pipeline.core.errors",
    "FolderError": "pipeline.core.errors",
    "DiskFullError": "pipeline.core.errors",
    "Interrupted": "pipeline.core.errors",
    "DegenerateCellWarning": "pipeline.core.errors",
    "DroppedRunsWarning": "pipeline.core.errors",
}

__all__ = [
    "ConfigError",
    "DegenerateCellWarning",
    "DiskFullError",
    "DroppedRunsWarning",
    "FolderError",
    "Interrupted",
    "SweepFolder",
    "aggregate_sweep",
    "bootstrap_intervals",
    "open_sweep",
    "prediction_intervals",
    "run_sweep",
]

if TYPE_CHECKING:
    from pipeline.api import SweepFolder, aggregate_sweep, open_sweep, run_sweep
    from pipeline.core.errors import (
        ConfigError,
        DegenerateCellWarning,
        DiskFullError,
        DroppedRunsWarning,
        FolderError,
        Interrupted,
    )
    from pipeline.stats.intervals import bootstrap_intervals
    from pipeline.stats.prediction import prediction_intervals


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        value = getattr(import_module(_HOMES[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
