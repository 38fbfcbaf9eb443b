"""Layer 1: the sweep folder's files, written atomically and read without torch or Hydra.

`layout` names every file and folder (the only module that does); `files` writes any file
atomically and turns a full disk into one message; `parts` writes and reads the Parquet
parts (one per task); `progress` keeps a running task's finished runs for resume;
`folder` holds the sweep's own records (sweep.json, plan, design, config.yaml,
launches.jsonl); `scan` reads the parts as one dataset for streaming aggregation.

`from pipeline import store` gives the names the other layers use, e.g. `store.write_part`,
`store.PLAN`.
"""

from pipeline.store.files import atomic_path, read_json, write_frame, write_json, write_table
from pipeline.store.folder import (
    append_launch,
    plan_frame,
    read_config,
    read_design,
    read_meta,
    submitted_tasks,
    write_design,
    write_meta,
)
from pipeline.store.layout import (
    CONFIG,
    CORRUPT,
    CURVES,
    DESIGN,
    ESTIMATES,
    FAILURES,
    INTERVALS,
    LAUNCHES,
    LOCK,
    LOGS,
    PARTS,
    PLAN,
    PREDICTIONS,
    PROGRESS,
    REPORT,
    SWEEP_META,
)
from pipeline.store.parts import (
    CURVE_COLUMNS,
    batch_table,
    finished_run_ids,
    part_files,
    part_schema,
    read_parts,
    result_row,
    results_table,
    rows_table,
    write_part,
)
from pipeline.store.progress import (
    adopt_progress,
    failure_path,
    finish_task,
    progress_count,
    progress_files,
    progress_path,
    read_progress,
    write_progress,
)

__all__ = [
    "CONFIG",
    "CORRUPT",
    "CURVES",
    "CURVE_COLUMNS",
    "DESIGN",
    "ESTIMATES",
    "FAILURES",
    "INTERVALS",
    "LAUNCHES",
    "LOCK",
    "LOGS",
    "PARTS",
    "PLAN",
    "PREDICTIONS",
    "PROGRESS",
    "REPORT",
    "SWEEP_META",
    "adopt_progress",
    "append_launch",
    "atomic_path",
    "batch_table",
    "failure_path",
    "finish_task",
    "finished_run_ids",
    "part_files",
    "part_schema",
    "plan_frame",
    "progress_count",
    "progress_files",
    "progress_path",
    "read_config",
    "read_design",
    "read_json",
    "read_meta",
    "read_parts",
    "read_progress",
    "result_row",
    "results_table",
    "rows_table",
    "submitted_tasks",
    "write_design",
    "write_frame",
    "write_json",
    "write_meta",
    "write_part",
    "write_progress",
    "write_table",
]
