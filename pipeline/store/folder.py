"""The sweep's own records in its folder: sweep.json, plan.parquet, design.parquet,
config.yaml and launches.jsonl."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.meta import SweepMeta
from pipeline.core.runs import Run
from pipeline.store.files import read_json, write_json, write_table
from pipeline.store.layout import CONFIG, DATA_POINTS, DESIGN, LAUNCHES, SWEEP_META

log = logging.getLogger(__name__)


def plan_frame(runs: list[Run]) -> pd.DataFrame:
    return pd.DataFrame([r.as_row() for r in runs])


def write_meta(meta: SweepMeta, out_dir: Path, id_version: Optional[int] = None) -> None:
    """sweep.json; `id_version`: the run-id scheme its parts' ids follow (pipeline/plan.py)."""
    extra = {} if id_version is None else {"id_version": id_version}
    write_json({**meta.to_json(), **extra}, Path(out_dir) / SWEEP_META)


def read_meta(out_dir: Path) -> SweepMeta:
    return SweepMeta.from_json(read_json(Path(out_dir) / SWEEP_META))


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
    or a folder from before the design was saved)."""
    path = Path(out_dir) / DESIGN
    if not path.is_file():
        return None
    frame = pq.read_table(path).to_pandas()
    return frame[list(names)].to_numpy(dtype=float), frame["__y__"].to_numpy(dtype=float)


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


def read_config(out_dir: Path) -> dict[str, Any]:
    """The sweep's resolved config (config.yaml), {} when there is none."""
    path = Path(out_dir) / CONFIG
    if not path.is_file():
        return {}
    import yaml  # PyYAML, which omegaconf already requires; only here: most readers never need it

    return yaml.safe_load(path.read_text()) or {}
