"""The names of a sweep folder's files and folders: the only module that spells them.

Layout of a sweep folder (`out_dir`):
    config.yaml          resolved config of the latest launch (Hydra's own copy in .hydra/)
    sweep.json           experiment, parameter names, whether a closed form exists, id version
    plan.parquet         every run of the sweep (id, lr, init, resample, seed, scheme, kind)
    parts/part-*.parquet one file per finished task: its runs' results and loss curves
    progress/            finished runs of a task still going, for resume after requeue; a relaunch
                         moves what an ended task left here into parts/ (part-saved-*.parquet)
    parts/corrupt/, progress/corrupt/   unreadable files, moved aside (their runs count as missing)
    failures/            one JSON per task that raised: error and traceback
    launches.jsonl       one line per submitted array: job id, tasks and their runs
    design.parquet       features and response of the original rows (closed-form intervals)
    data_points.parquet  x of (up to 50 of) the original rows in the data's own units: where the
                         prediction intervals of a model not linear in its parameters go by default
    logs/                submitit's per-task logs
    .hydra/, sweep.log   Hydra's copy of the config and the overrides, and the launch's log
    .lock                held by the launch training into the folder (pipeline/launch/lock.py)
    estimates.parquet, curves.parquet, intervals.parquet, predictions.parquet   built by aggregation
    report.html, *.png   built from the tables

A coverage study's folder (`pipeline-coverage`): coverage.parquet, coverage_reps.parquet,
coverage_predictions.parquet, coverage_predictions_reps.parquet, coverage.json.

Reading a folder imports neither torch nor Hydra: these are plain files.
"""

from __future__ import annotations

CONFIG = "config.yaml"
HYDRA_DIR = ".hydra"  # Hydra's copy of the config, its own settings and the overrides
HYDRA_OVERRIDES = f"{HYDRA_DIR}/overrides.yaml"  # the command line's overrides
SWEEP_LOG = "sweep.log"  # pipeline-sweep's log (Hydra's job log, named after hydra.job.name)
SWEEP_META = "sweep.json"
PLAN = "plan.parquet"
DESIGN = "design.parquet"
DATA_POINTS = "data_points.parquet"
LAUNCHES = "launches.jsonl"
PARTS = "parts"
PROGRESS = "progress"  # finished runs of tasks still going (or requeued)
FAILURES = "failures"  # one JSON per task that raised, with its error
CORRUPT = "corrupt"  # beside parts/ and progress/: files that could not be read, kept for a look
LOGS = "logs"
LOCK = ".lock"
SAVED_PART_PREFIX = "part-saved-"  # parts made of the progress an ended task left behind
TABLE = ".parquet"  # a part's or progress file's suffix after its part name (core.runs.Task.part_name)
PART_FILES = "part-*" + TABLE  # what parts/ and progress/ hold, as a glob
FAILURE = ".json"  # a failure record's suffix after its part name

ESTIMATES = "estimates.parquet"
CURVES = "curves.parquet"
INTERVALS = "intervals.parquet"
PREDICTIONS = "predictions.parquet"
REPORT = "report.html"
GRID_PNG = "grid_final_loss.png"

COVERAGE = "coverage.parquet"
COVERAGE_REPS = "coverage_reps.parquet"
COVERAGE_PREDICTIONS = "coverage_predictions.parquet"
COVERAGE_PREDICTIONS_REPS = "coverage_predictions_reps.parquet"
COVERAGE_META = "coverage.json"


def bootstrap_png(parameter: str) -> str:
    """The PNG of one parameter's bootstrap distributions, beside the tables."""
    return f"bootstrap_{parameter}.png"
