"""The Parquet parts, one per task: one explicit schema, written from a `RunBatch` column by
column (or from result rows), read back skipping (and setting aside) what is unreadable."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.meta import SweepMeta
from pipeline.core.runs import RunBatch, RunResult
from pipeline.store.files import write_table
from pipeline.store.layout import CORRUPT, PART_FILES, PARTS, TABLE

log = logging.getLogger(__name__)


CURVE_COLUMNS = ("curve_epoch", "curve_loss")


def part_schema(param_names: Sequence[str], closed_form: bool) -> pa.Schema:
    """One explicit schema, so every part of a sweep has the same columns and types."""
    f64, i64, s = pa.float64(), pa.int64(), pa.string()
    fields = [
        ("run_id", s),
        ("experiment", s),
        ("lr", f64),
        ("init_index", i64),
        ("init", pa.list_(f64)),
        ("resample", i64),
        ("seed", i64),
        ("scheme", s),
        ("kind", s),
    ]
    fields += [(name, f64) for name in param_names]
    fields += [("final_loss", f64), ("test_loss", f64), ("grad_norm", f64), ("epochs", i64), ("status", s)]
    if closed_form:
        fields += [(f"ols_{name}", f64) for name in param_names]
        fields += [("ols_loss", f64), ("gap_to_ols", f64)]
    fields += [
        ("engine", s),
        ("device", s),
        ("host", s),
        ("task", i64),
        ("slurm_job_id", s),
        ("wall_time", f64),
        ("curve_epoch", pa.list_(i64)),
        ("curve_loss", pa.list_(f64)),
    ]
    return pa.schema(fields)


def result_row(result: RunResult, experiment: str, param_names: Sequence[str], task: int) -> dict[str, Any]:
    row = result.run.as_row()
    row.update(
        experiment=experiment,
        final_loss=result.final_loss,
        test_loss=result.test_loss,
        grad_norm=result.grad_norm,
        epochs=result.epochs,
        status=result.status,
        engine=result.engine,
        device=result.device,
        host=socket.gethostname(),
        task=task,
        slurm_job_id=os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID"),
        wall_time=result.wall_time,
        curve_epoch=result.curve_epoch,
        curve_loss=result.curve_loss,
    )
    row.update(zip(param_names, result.params))
    if result.ols is not None:
        row.update({f"ols_{n}": v for n, v in zip(param_names, result.ols)})
        row["ols_loss"] = result.ols_loss
        row["gap_to_ols"] = max(abs(a - b) for a, b in zip(result.params, result.ols))
    return row


def _python_max(values: np.ndarray) -> np.ndarray:
    """Row maxima as Python's `max` gives them in `result_row` (NaN never compares larger:
    the first entry stays unless a later one is larger)."""
    out = values[:, 0].copy()
    for j in range(1, values.shape[1]):
        out = np.where(values[:, j] > out, values[:, j], out)
    return out


def batch_table(batch: RunBatch, meta: SweepMeta, task: int) -> pa.Table:
    """A batch's results as a part's table, column by column: the table `rows_table` makes
    of its `result_row`s, without a Python object per run (1,000 runs: ~2 ms, not ~40)."""
    schema = part_schema(list(meta.param_names), meta.closed_form)
    runs, n = batch.runs, len(batch.runs)
    plan = {
        "run_id": [r.run_id for r in runs],
        "lr": [r.lr for r in runs],
        "init_index": [r.init_index for r in runs],
        "init": [None if r.init is None else list(r.init) for r in runs],
        "resample": [r.resample for r in runs],
        "seed": [r.seed for r in runs],
        "scheme": [r.scheme for r in runs],
        "kind": [r.kind for r in runs],
    }
    columns: dict[str, Any] = {**plan, "experiment": pa.repeat(meta.experiment, n)}
    columns.update({name: batch.params[:, j] for j, name in enumerate(meta.param_names)})
    columns.update(
        final_loss=batch.final_loss,
        test_loss=batch.test_loss,
        grad_norm=batch.grad_norm,
        epochs=batch.epochs,
        status=batch.status.tolist(),
    )
    if meta.closed_form:
        if batch.ols is not None and batch.ols_loss is not None:
            columns.update({f"ols_{name}": batch.ols[:, j] for j, name in enumerate(meta.param_names)})
            columns.update(ols_loss=batch.ols_loss, gap_to_ols=_python_max(np.abs(batch.params - batch.ols)))
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    columns.update(
        engine=pa.repeat(batch.engine, n),
        device=pa.repeat(batch.device, n),
        host=pa.repeat(socket.gethostname(), n),
        task=pa.repeat(pa.scalar(task, pa.int64()), n),
        slurm_job_id=pa.nulls(n, pa.string()) if job is None else pa.repeat(job, n),
        wall_time=np.full(n, batch.wall_time, dtype=np.float64),
    )
    offsets = pa.array(batch.curve_offsets.astype(np.int32))
    columns["curve_epoch"] = pa.ListArray.from_arrays(offsets, pa.array(batch.curve_epoch, pa.int64()))
    columns["curve_loss"] = pa.ListArray.from_arrays(offsets, pa.array(batch.curve_loss, pa.float64()))
    arrays = []
    for field in schema:
        values = columns.get(field.name)
        if values is None:
            arrays.append(pa.nulls(n, field.type))
        elif isinstance(values, (pa.Array, pa.ChunkedArray)):
            arrays.append(values.cast(field.type) if values.type != field.type else values)
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def results_table(results: Sequence[RunResult], meta: SweepMeta, task: int) -> pa.Table:
    """Any engine's results as a part's table: columns straight from a `RunBatch`, else row by row."""
    if isinstance(results, RunBatch):
        return batch_table(results, meta, task)
    return rows_table([result_row(r, meta.experiment, meta.param_names, task) for r in results], meta)


def rows_table(rows: list[dict[str, Any]], meta: SweepMeta) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=part_schema(list(meta.param_names), meta.closed_form))


def as_table(rows: Union[pa.Table, list[dict[str, Any]]], meta: SweepMeta) -> pa.Table:
    return rows if isinstance(rows, pa.Table) else rows_table(rows, meta)


def write_part(out_dir: Path, part_name: str, rows: Union[pa.Table, list[dict[str, Any]]], meta: SweepMeta) -> Path:
    """Write one task's results (a part's table, or result rows) as `parts/<part_name>.parquet`, atomically."""
    path = Path(out_dir) / PARTS / (part_name + TABLE)
    write_table(as_table(rows, meta), path)
    return path


def set_aside(path: Path, why: BaseException) -> None:
    """Move an unreadable file to `corrupt/` beside it, with a warning naming it.

    Its runs then count as missing and a relaunch retrains them. A reader that may not
    write the folder (a collaborator's copy) or that lost a race with another reader
    only warns: the file is skipped either way.
    """
    dest = path.parent / CORRUPT / path.name
    try:
        dest.parent.mkdir(exist_ok=True)
        os.replace(path, dest)
        where = f"moved to {dest.parent}"
    except FileNotFoundError:
        return  # another reader moved it first
    except OSError as err:
        where = f"left in place ({err.strerror})"
    log.warning(
        "unreadable file %s skipped (%s): %s; its runs count as missing, a relaunch retrains them", path, where, why
    )


def _readable(path: Path) -> bool:
    """True when the Parquet footer reads (a truncated file fails here); else set it aside."""
    try:
        pq.read_metadata(path)
        return True
    except FileNotFoundError:
        return False  # replaced or moved since it was listed
    except (pa.ArrowException, OSError) as err:
        set_aside(path, err)
        return False


def read_or_set_aside(path: Path, columns: Optional[list[str]] = None) -> Optional[pa.Table]:
    try:
        return pq.read_table(path, columns=columns)
    except FileNotFoundError:
        return None
    except (pa.ArrowException, OSError) as err:
        set_aside(path, err)
        return None


def part_files(out_dir: Path) -> list[Path]:
    """Complete, readable parts, oldest first: temporary files start with a dot and are never
    listed; a part whose footer does not read is set aside (see `set_aside`)."""
    found = [p for p in (Path(out_dir) / PARTS).glob(PART_FILES) if _readable(p)]
    stamped = []
    for path in found:
        try:
            stamped.append((path.stat().st_mtime, path))
        except FileNotFoundError:
            continue  # moved by another reader since
    return [path for _, path in sorted(stamped)]


def read_parts(out_dir: Path, columns: Optional[list[str]] = None) -> pd.DataFrame:
    """All results found, one row per run id (the newest part wins a duplicate), in memory:
    `pipeline.aggregate` streams the parts instead; this serves small reads and tests."""
    tables = [read_or_set_aside(f, columns) for f in part_files(out_dir)]
    frames = [t.to_pandas() for t in tables if t is not None and t.num_rows]
    if not frames:
        return pd.DataFrame(columns=columns or ["run_id"])
    frame = pd.concat(frames, ignore_index=True)
    return frame.drop_duplicates("run_id", keep="last").reset_index(drop=True)


def finished_run_ids(out_dir: Path) -> set[str]:
    """Run ids with a result, from the run_id column alone (no pandas frame per part)."""
    ids: set[str] = set()
    for path in part_files(out_dir):
        ids.update(pq.read_table(path, columns=["run_id"]).column("run_id").to_pylist())
    return ids
