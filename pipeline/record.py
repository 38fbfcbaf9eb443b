"""Write and read a sweep folder's files; every file is written atomically.

Layout of a sweep folder (`out_dir`):
    config.yaml          resolved config of the latest launch (Hydra's own copy in .hydra/)
    sweep.json           experiment, parameter names, whether a closed form exists
    plan.parquet         every run of the sweep (id, lr, init, resample, seed, scheme, kind)
    parts/part-*.parquet one file per finished task: its runs' results and loss curves
    progress/            finished runs of a task still going, for resume after requeue; a relaunch
                         moves what an ended task left here into parts/ (part-saved-*.parquet)
    parts/corrupt/, progress/corrupt/   unreadable files, moved aside (their runs count as missing)
    failures/            one JSON per task that raised: error and traceback
    launches.jsonl       one line per submitted array: job id, tasks and their runs
    design.parquet       features and response of the original rows (closed-form intervals)
    logs/                submitit's per-task logs
    .lock                held by the launch training into the folder (pipeline/lock.py)
    estimates.parquet, curves.parquet, intervals.parquet   built by aggregate

Reading a folder imports neither torch nor Hydra: these are plain files. Files get the
permissions the user's umask gives (collaborators can read them), and a full disk is one
message naming the folder (`DiskFullError`), never half a file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import FolderError
from pipeline.records import Run, RunBatch, RunResult, SweepMeta

log = logging.getLogger(__name__)

PARTS = "parts"
SWEEP_META, PLAN, CONFIG, DESIGN, LAUNCHES = "sweep.json", "plan.parquet", "config.yaml", "design.parquet", "launches.jsonl"
PROGRESS = "progress"  # finished runs of tasks still going (or requeued)
FAILURES = "failures"  # one JSON per task that raised, with its error
CURVE_COLUMNS = ("curve_epoch", "curve_loss")
CORRUPT = "corrupt"  # beside parts/ and progress/: files that could not be read, kept for a look
SAVED_PART_PREFIX = "part-saved-"  # parts made of the progress an ended task left behind
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(FolderError):
    """No space (or quota) left while writing a sweep folder's file; nothing written is lost."""


def is_disk_full(err: BaseException) -> bool:
    """ENOSPC / EDQUOT, also when pyarrow reports it as an OSError without an errno."""
    if isinstance(err, OSError) and err.errno in _DISK_FULL:
        return True
    text = str(err)
    return isinstance(err, OSError) and ("No space left on device" in text or "Disk quota exceeded" in text)


def disk_full_error(path: Path, err: BaseException) -> DiskFullError:
    folder = path.parent.parent if path.parent.name in (PARTS, PROGRESS, FAILURES) else path.parent
    return DiskFullError(f"disk full (or quota exceeded) while writing {path.name} in {folder}: {err}. "
                         "Files already written there are intact; free some space and relaunch the same "
                         "command to finish the sweep")


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (threads may be writing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary name beside `path`; rename it into place only on success.

    A reader never sees half a file, and a task killed mid-write leaves only a
    `.tmp` file that no reader looks at.
    """
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600: give what open() would
        os.close(fd)
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as err:
        if is_disk_full(err):
            raise disk_full_error(path, err) from err
        raise
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_table(table: pa.Table, path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_frame(frame: pd.DataFrame, path: Path) -> None:
    write_table(pa.Table.from_pandas(frame, preserve_index=False), path)


def write_json(data: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def part_schema(param_names: Sequence[str], closed_form: bool) -> pa.Schema:
    """One explicit schema, so every part of a sweep has the same columns and types."""
    f64, i64, s = pa.float64(), pa.int64(), pa.string()
    fields = [("run_id", s), ("experiment", s), ("lr", f64), ("init_index", i64),
              ("init", pa.list_(f64)), ("resample", i64), ("seed", i64),
              ("scheme", s), ("kind", s)]
    fields += [(name, f64) for name in param_names]
    fields += [("final_loss", f64), ("test_loss", f64), ("grad_norm", f64), ("epochs", i64), ("status", s)]
    if closed_form:
        fields += [(f"ols_{name}", f64) for name in param_names]
        fields += [("ols_loss", f64), ("gap_to_ols", f64)]
    fields += [("engine", s), ("device", s), ("host", s), ("task", i64), ("slurm_job_id", s),
               ("wall_time", f64), ("curve_epoch", pa.list_(i64)), ("curve_loss", pa.list_(f64))]
    return pa.schema(fields)


def result_row(result: RunResult, experiment: str, param_names: Sequence[str], task: int) -> dict[str, Any]:
    row = result.run.as_row()
    row.update(experiment=experiment, final_loss=result.final_loss, test_loss=result.test_loss,
               grad_norm=result.grad_norm, epochs=result.epochs, status=result.status,
               engine=result.engine, device=result.device, host=socket.gethostname(), task=task,
               slurm_job_id=os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID"),
               wall_time=result.wall_time, curve_epoch=result.curve_epoch, curve_loss=result.curve_loss)
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
    plan = {"run_id": [r.run_id for r in runs], "lr": [r.lr for r in runs],
            "init_index": [r.init_index for r in runs],
            "init": [None if r.init is None else list(r.init) for r in runs],
            "resample": [r.resample for r in runs], "seed": [r.seed for r in runs],
            "scheme": [r.scheme for r in runs], "kind": [r.kind for r in runs]}
    columns: dict[str, Any] = {**plan, "experiment": pa.repeat(meta.experiment, n)}
    columns.update({name: batch.params[:, j] for j, name in enumerate(meta.param_names)})
    columns.update(final_loss=batch.final_loss, test_loss=batch.test_loss, grad_norm=batch.grad_norm,
                   epochs=batch.epochs, status=batch.status.tolist())
    if meta.closed_form:
        if batch.ols is not None and batch.ols_loss is not None:
            columns.update({f"ols_{name}": batch.ols[:, j] for j, name in enumerate(meta.param_names)})
            columns.update(ols_loss=batch.ols_loss, gap_to_ols=_python_max(np.abs(batch.params - batch.ols)))
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    columns.update(engine=pa.repeat(batch.engine, n), device=pa.repeat(batch.device, n),
                   host=pa.repeat(socket.gethostname(), n), task=pa.repeat(pa.scalar(task, pa.int64()), n),
                   slurm_job_id=pa.nulls(n, pa.string()) if job is None else pa.repeat(job, n),
                   wall_time=np.full(n, batch.wall_time, dtype=np.float64))
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


def _as_table(rows: Union[pa.Table, list[dict[str, Any]]], meta: SweepMeta) -> pa.Table:
    return rows if isinstance(rows, pa.Table) else rows_table(rows, meta)


def write_part(out_dir: Path, part_name: str, rows: Union[pa.Table, list[dict[str, Any]]], meta: SweepMeta) -> Path:
    """Write one task's results (a part's table, or result rows) as `parts/<part_name>.parquet`, atomically."""
    path = Path(out_dir) / PARTS / f"{part_name}.parquet"
    write_table(_as_table(rows, meta), path)
    return path


def progress_path(out_dir: Path, part_name: str) -> Path:
    return Path(out_dir) / PROGRESS / f"{part_name}.parquet"


def write_progress(out_dir: Path, part_name: str, rows: Union[pa.Table, list[dict[str, Any]]],
                   meta: SweepMeta) -> None:
    """Save a task's finished runs so far: a requeued or preempted task resumes from here."""
    write_table(_as_table(rows, meta), progress_path(out_dir, part_name))


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
    log.warning("unreadable file %s skipped (%s): %s; its runs count as missing, a relaunch retrains them",
                path, where, why)


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


def _read_or_set_aside(path: Path, columns: Optional[list[str]] = None) -> Optional[pa.Table]:
    try:
        return pq.read_table(path, columns=columns)
    except FileNotFoundError:
        return None
    except (pa.ArrowException, OSError) as err:
        set_aside(path, err)
        return None


def read_progress(out_dir: Path, part_name: str) -> Optional[pa.Table]:
    """The runs a task saved before it was stopped (None: none, or the file was unreadable and set aside)."""
    path = progress_path(out_dir, part_name)
    return _read_or_set_aside(path) if path.is_file() else None


def progress_count(out_dir: Path, part_name: str) -> int:
    """Runs a task has saved so far (0 when it has none, or is replacing its file right now)."""
    path = progress_path(out_dir, part_name)
    try:
        return pq.read_metadata(path).num_rows if path.is_file() else 0
    except (pa.ArrowException, OSError):
        return 0


def failure_path(out_dir: Path, part_name: str) -> Path:
    return Path(out_dir) / FAILURES / f"{part_name}.json"


def finish_task(out_dir: Path, part_name: str) -> None:
    """A task's part is in place: its progress file and any earlier failure are history."""
    for path in (progress_path(out_dir, part_name), failure_path(out_dir, part_name)):
        path.unlink(missing_ok=True)


def progress_files(out_dir: Path) -> list[Path]:
    return sorted((Path(out_dir) / PROGRESS).glob("part-*.parquet"))


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
        table = _read_or_set_aside(path, columns=["run_id"])
        if table is None:
            continue
        if table.num_rows == 0:
            path.unlink(missing_ok=True)
            continue
        dest = Path(out_dir) / PARTS / f"{saved_part_name(table.column('run_id').to_pylist())}.parquet"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)
        adopted += table.num_rows
    return adopted


def part_files(out_dir: Path) -> list[Path]:
    """Complete, readable parts, oldest first: temporary files start with a dot and are never
    listed; a part whose footer does not read is set aside (see `set_aside`)."""
    found = [p for p in (Path(out_dir) / PARTS).glob("part-*.parquet") if _readable(p)]
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
    tables = [_read_or_set_aside(f, columns) for f in part_files(out_dir)]
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


def plan_frame(runs: list[Run]) -> pd.DataFrame:
    return pd.DataFrame([r.as_row() for r in runs])


def write_meta(meta: SweepMeta, out_dir: Path, id_version: Optional[int] = None) -> None:
    """sweep.json; `id_version`: the run-id scheme its parts' ids follow (pipeline/plan.py)."""
    extra = {} if id_version is None else {"id_version": id_version}
    write_json({**meta.to_json(), **extra}, Path(out_dir) / SWEEP_META)


def read_meta(out_dir: Path) -> SweepMeta:
    return SweepMeta.from_json(read_json(Path(out_dir) / SWEEP_META))


def write_design(features: Any, response: Any, names: Sequence[str], out_dir: Path) -> None:
    """The closed-form design of the original rows, so aggregation never rebuilds the model."""
    columns = {name: features[:, j] for j, name in enumerate(names)}
    write_table(pa.table({**columns, "__y__": response}), Path(out_dir) / DESIGN)


def read_design(out_dir: Path, names: Sequence[str]) -> Optional[tuple[Any, Any]]:
    """(features, response) saved at launch, or None when the sweep has none (no closed form,
    or a folder from before the design was saved)."""
    path = Path(out_dir) / DESIGN
    if not path.is_file():
        return None
    frame = pq.read_table(path).to_pandas()
    return frame[list(names)].to_numpy(dtype=float), frame["__y__"].to_numpy(dtype=float)


def append_launch(out_dir: Path, line: dict[str, Any]) -> None:
    """One submitted array (job id, tasks and their runs) as one line of launches.jsonl."""
    with open(Path(out_dir) / LAUNCHES, "a") as fh:  # appended whole: one line per array
        fh.write(json.dumps(line) + "\n")


def submitted_tasks(out_dir: Path) -> list[dict[str, Any]]:
    """Every task ever submitted to SLURM for this sweep folder, newest last."""
    path = Path(out_dir) / LAUNCHES
    if not path.is_file():
        return []
    tasks = []
    for line in path.read_text().splitlines():
        launch_line = json.loads(line)
        tasks += [{**t, "job_id": launch_line["job_id"]} for t in launch_line["tasks"]]
    return tasks
