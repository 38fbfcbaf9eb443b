"""The sweep's own records in its folder: sweep.json, plan.parquet, design.parquet,
config.yaml and launches.jsonl."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.errors import FolderError
from pipeline.core.meta import SweepMeta
from pipeline.core.runs import Run
from pipeline.store.files import read_json, write_json, write_table
from pipeline.store.layout import (
    CONFIG,
    DATA_POINTS,
    DESIGN,
    FIGURES,
    LAUNCHES,
    PLAN,
    REPLACED,
    SWEEP_FILES,
    SWEEP_META,
)

log = logging.getLogger(__name__)


def plan_frame(runs: list[Run]) -> pd.DataFrame:
    return pd.DataFrame([r.as_row() for r in runs])


def write_meta(meta: SweepMeta, out_dir: Path, id_version: Optional[int] = None) -> None:
    """sweep.json; `id_version`: the run-id scheme its parts' ids follow (pipeline/plan.py)."""
    extra = {} if id_version is None else {"id_version": id_version}
    write_json({**meta.to_json(), **extra}, Path(out_dir) / SWEEP_META)


def read_meta(out_dir: Path) -> SweepMeta:
    """sweep.json as a SweepMeta; a FolderError naming the file when it is missing or damaged
    (the sweep's record: without it a folder cannot be read)."""
    path = Path(out_dir) / SWEEP_META
    try:
        values = read_json(path)
        if not isinstance(values, dict):
            raise ValueError(f"a JSON {type(values).__name__}, not a record")
        return SweepMeta.from_json(values)
    except FileNotFoundError as err:
        raise FolderError(f"{path} does not exist: {Path(out_dir)} is not a sweep folder") from err
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise FolderError(
            f"{path} cannot be read ({type(err).__name__}: {err}): the sweep's record is damaged; "
            "relaunching the sweep's command rewrites it (no finished run is trained again)"
        ) from err


PLAN_KEY_COLUMNS = ("run_id", "lr", "init_index", "resample")  # what every plan has had


def read_plan(out_dir: Path, columns: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """plan.parquet (only `columns`); a FolderError naming the file when it is missing, damaged,
    or lacks one of `columns` (another table in its place)."""
    path = Path(out_dir) / PLAN
    try:
        return pd.read_parquet(path, columns=None if columns is None else list(columns))
    except FileNotFoundError as err:
        raise FolderError(f"{path} does not exist: {Path(out_dir)} is not a sweep folder") from err
    except Exception as err:  # noqa: BLE001 - pyarrow raises many types for a damaged file
        raise FolderError(
            f"{path} cannot be read ({type(err).__name__}: {err}): the sweep's plan is damaged; "
            "relaunching the sweep's command rewrites it (no finished run is trained again)"
        ) from err


def folder_draw_rule(out_dir: Path) -> Optional[str]:
    """The draw rule of the sweep already in `out_dir` (`SweepMeta.draw_rule`), which a relaunch
    keeps; None when the folder holds no readable sweep.json (a new sweep: the current rule)."""
    path = Path(out_dir) / SWEEP_META
    try:
        return read_meta(out_dir).draw_rule if path.is_file() else None
    except (OSError, ValueError, TypeError) as err:
        log.warning("%s cannot be read (%s): its draw rule is unknown; new draws use the current rule", path, err)
        return None


def write_design(features: Any, response: Any, names: Sequence[str], out_dir: Path) -> None:
    """The closed-form design of the original rows, so aggregation never rebuilds the model."""
    columns = {name: features[:, j] for j, name in enumerate(names)}
    write_table(pa.table({**columns, "__y__": response}), Path(out_dir) / DESIGN)


def read_design(out_dir: Path, names: Sequence[str]) -> Optional[tuple[Any, Any]]:
    """(features, response) saved at launch, or None when the sweep has none (no closed form,
    or a folder from before the design was saved) or it cannot be read (a warning names it)."""
    path = Path(out_dir) / DESIGN
    if not path.is_file():
        return None
    try:
        frame = pq.read_table(path).to_pandas()
        return frame[list(names)].to_numpy(dtype=float), frame["__y__"].to_numpy(dtype=float)
    except Exception as err:  # noqa: BLE001 - pyarrow raises many types for a damaged file
        log.warning(
            "%s cannot be read (%s: %s): skipped; relaunching the sweep rewrites it", path, type(err).__name__, err
        )
        return None


def write_data_points(points: Any, x_names: Sequence[str], out_dir: Path) -> None:
    """x of the original rows (data units) where a non-linear model's predictions go by default."""
    write_table(pa.table({name: points[:, j] for j, name in enumerate(x_names)}), Path(out_dir) / DATA_POINTS)


def read_data_points(out_dir: Path, x_names: Sequence[str]) -> Optional[Any]:
    """(points, x columns) saved at launch, or None (a linear model's sweep, or an older folder)."""
    path = Path(out_dir) / DATA_POINTS
    if not path.is_file():
        return None
    return pq.read_table(path).to_pandas()[list(x_names)].to_numpy(dtype=float)


def append_launch(out_dir: Path, line: dict[str, Any]) -> None:
    """One submitted array (job id, tasks and their runs) as one line of launches.jsonl."""
    with open(Path(out_dir) / LAUNCHES, "a") as fh:  # appended whole: one line per array
        fh.write(json.dumps(line) + "\n")


TASK_KEYS = {"slurm_id": str, "task": int, "part": str, "runs": list}  # what a recorded task must hold


def _launch_tasks(line: str) -> list[dict[str, Any]]:
    """The tasks of one line of launches.jsonl; a ValueError when it is not one."""
    record = json.loads(line)
    if not isinstance(record, dict) or not isinstance(record.get("job_id"), str):
        raise ValueError("not a record with a job_id")
    tasks = record.get("tasks")
    if not isinstance(tasks, list) or not all(
        isinstance(t, dict) and all(isinstance(t.get(k), kind) for k, kind in TASK_KEYS.items()) for t in tasks
    ):
        raise ValueError("its tasks lack slurm_id, task, part or runs")
    return [{**t, "job_id": record["job_id"]} for t in tasks]


def submitted_tasks(out_dir: Path) -> list[dict[str, Any]]:
    """Every task ever submitted to SLURM for this sweep folder, newest last. A damaged line
    (a launch cut short, a garbled file) is skipped with a warning naming the file and line."""
    path = Path(out_dir) / LAUNCHES
    if not path.is_file():
        if path.exists():
            log.warning("%s is not a file: no submitted task is known", path)
        return []
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as err:
        log.warning("%s cannot be read (%s): no submitted task is known", path, err)
        return []
    tasks = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            tasks += _launch_tasks(line)
        except ValueError as err:  # json's errors are ValueErrors too
            log.warning("%s line %d skipped (%s): the tasks it recorded are unknown", path, number, err)
    return tasks


def set_sweep_aside(out_dir: Path) -> Optional[Path]:
    """Move the files of the sweep a folder holds (plan, records, parts, tables, report, figures)
    to `replaced/<time>/` inside it, for a new sweep to start there; nothing is deleted.
    Returns that folder, or None when there was nothing to move."""
    out_dir = Path(out_dir)
    found = [out_dir / name for name in SWEEP_FILES if (out_dir / name).exists()]
    found += sorted(out_dir.glob(FIGURES))
    if not found:
        return None
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    dest = out_dir / REPLACED / stamp
    n = 1
    while dest.exists():
        n += 1
        dest = out_dir / REPLACED / f"{stamp}-{n}"
    dest.mkdir(parents=True)
    for path in found:
        os.replace(path, dest / path.name)
    log.info("moved the sweep %s held before (%d entries) to %s", out_dir, len(found), dest)
    return dest


def read_config(out_dir: Path) -> dict[str, Any]:
    """The sweep's resolved config (config.yaml), {} when there is none."""
    path = Path(out_dir) / CONFIG
    if not path.is_file():
        return {}
    import yaml  # PyYAML, which omegaconf already requires; only here: most readers never need it

    try:
        config = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as err:  # UnicodeDecodeError is a ValueError
        log.warning("%s cannot be read (%s): read as empty", path, type(err).__name__)
        return {}
    if not isinstance(config, dict):
        log.warning("%s holds no config (a %s): read as empty", path, type(config).__name__)
        return {}
    return config
