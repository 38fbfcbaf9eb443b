"""A running task's finished runs (`progress/`) and failure records (`failures/`): what a
requeued task resumes from, and what a relaunch adopts as parts."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.meta import SweepMeta
from pipeline.store.files import write_table
from pipeline.store.layout import FAILURE, FAILURES, PART_FILES, PARTS, PROGRESS, SAVED_PART_PREFIX, TABLE
from pipeline.store.parts import as_table, read_or_set_aside

log = logging.getLogger(__name__)


def progress_path(out_dir: Path, part_name: str) -> Path:
    return Path(out_dir) / PROGRESS / (part_name + TABLE)


def write_progress(out_dir: Path, part_name: str, rows: Union[pa.Table, list[dict[str, Any]]], meta: SweepMeta) -> None:
    """Save a task's finished runs so far: a requeued or preempted task resumes from here."""
    write_table(as_table(rows, meta), progress_path(out_dir, part_name))


def read_progress(out_dir: Path, part_name: str) -> Optional[pa.Table]:
    """The runs a task saved before it was stopped (None: none, or the file was unreadable and set aside)."""
    path = progress_path(out_dir, part_name)
    return read_or_set_aside(path) if path.is_file() else None


def progress_count(out_dir: Path, part_name: str) -> int:
    """Runs a task has saved so far (0 when it has none, or is replacing its file right now)."""
    path = progress_path(out_dir, part_name)
    try:
        return pq.read_metadata(path).num_rows if path.is_file() else 0
    except (pa.ArrowException, OSError):
        return 0


def failure_path(out_dir: Path, part_name: str) -> Path:
    return Path(out_dir) / FAILURES / (part_name + FAILURE)


def finish_task(out_dir: Path, part_name: str) -> None:
    """A task's part is in place: its progress file and any earlier failure are history."""
    for path in (progress_path(out_dir, part_name), failure_path(out_dir, part_name)):
        path.unlink(missing_ok=True)


def progress_files(out_dir: Path) -> list[Path]:
    return sorted((Path(out_dir) / PROGRESS).glob(PART_FILES))


def saved_part_name(run_ids: Sequence[str]) -> str:
    """The part name of saved progress: fixed by its runs, whatever task numbers made them."""
    return SAVED_PART_PREFIX + hashlib.sha1("".join(sorted(run_ids)).encode()).hexdigest()[:12]


def adopt_progress(out_dir: Path) -> int:
    """Turn what ended tasks left in `progress/` into parts; return the runs adopted.

    Called by a launch that holds the folder's lock, before it plans what to train: a
    progress file is then history (a task killed, interrupted, out of disk), and its
    finished runs are reused by run id whatever the new chunking. The file is renamed
    into `parts/` (same folder tree, so atomic): no run is lost or written twice.
    """
    adopted = 0
    for path in progress_files(out_dir):
        table = read_or_set_aside(path, columns=["run_id"])
        if table is None:
            continue
        if table.num_rows == 0:
            path.unlink(missing_ok=True)
            continue
        dest = Path(out_dir) / PARTS / (saved_part_name(table.column("run_id").to_pylist()) + TABLE)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)
        adopted += table.num_rows
    return adopted
