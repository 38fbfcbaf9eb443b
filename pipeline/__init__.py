"""Hyperparameter and bootstrap sweeps of small gradient-descent fits.

The modules follow the data: config -> prepare -> plan -> launch -> train (engines) ->
record -> aggregate -> intervals. Users mostly need the console scripts and these
names, which are imported on first use (so `import pipeline` does not import torch).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ConfigError", "aggregate", "bootstrap_intervals"]


def __getattr__(name: str) -> Any:
    if name == "aggregate":
        from pipeline.aggregate import aggregate

        return aggregate
    if name == "bootstrap_intervals":
        from pipeline.intervals import bootstrap_intervals

        return bootstrap_intervals
    if name == "ConfigError":
        from pipeline.errors import ConfigError

        return ConfigError
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
