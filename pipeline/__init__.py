"""Hyperparameter and bootstrap sweeps of small gradient-descent fits.

The modules follow the data: config -> plan -> launch -> train -> record ->
aggregate -> intervals. Users mostly need the console scripts and these names.
"""

from pipeline.aggregate import aggregate
from pipeline.config import ConfigError
from pipeline.intervals import bootstrap_intervals

__all__ = ["ConfigError", "aggregate", "bootstrap_intervals"]
