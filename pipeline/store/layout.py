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
    logs/                submitit's per-task logs
    .lock                held by the launch training into the folder (pipeline/launch/lock.py)
    estimates.parquet, curves.parquet, intervals.parquet, predictions.parquet   built by aggregation
    report.html, *.png   built from the tables

A coverage study's folder (`pipeline-coverage`): coverage.parquet, coverage_reps.parquet,
coverage_predictions.parquet, coverage_predictions_reps.parquet, coverage.json.

Reading a folder imports neither torch nor Hydra: these are plain files.
"""

from __future__ import annotations

CONFIG = "config.yaml"
SWEEP_META = "sweep.json"
PLAN = "plan.parquet"
DESIGN = "design.parquet"
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

COVERAGE = "coverage.parquet"
COVERAGE_REPS = "coverage_reps.parquet"
COVERAGE_PREDICTIONS = "coverage_predictions.parquet"
COVERAGE_PREDICTIONS_REPS = "coverage_predictions_reps.parquet"
COVERAGE_META = "coverage.json"
