"""Read a sweep folder for `report.html`: its tables, config and metadata, and what is missing.

Reads only the files `aggregate` and the launcher leave (`sweep.json`, `config.yaml`,
`.hydra/overrides.yaml`, `plan` / `estimates` / `curves` / `intervals.parquet`, and
`predictions.parquet` when `intervals.at` wrote one); an absent, empty or unreadable file
becomes an empty table and a line in `Sweep.missing`, never an error. predictions.parquet
is optional: its absence is said in its own section only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pipeline import store

TABLES = {"plan": store.PLAN, "estimates": store.ESTIMATES, "curves": store.CURVES, "intervals": store.INTERVALS}
# written only when asked for (`intervals.at`) or when the model is not linear in its parameters
OPTIONAL_TABLES = {"predictions": store.PREDICTIONS}
# Past this many rows (about 20,000 runs of 101 logged epochs) the curves figure reads the
# curves of a sample of runs: those of 10^6 runs are 10^8 rows, gigabytes in pandas.
CURVE_ROWS_READ_WHOLE = 2_000_000
CURVE_RUNS_PER_CELL = 1_000  # the first runs of each (lr, init) cell, in plan order: plenty for quantiles


@dataclass
class Sweep:
    """What the folder holds; `missing` says which inputs were absent, empty or unreadable."""

    out_dir: Path
    meta: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    config_text: Optional[str] = None
    overrides: Optional[list] = None
    tables: dict = field(default_factory=dict)
    missing: list = field(default_factory=list)
    curve_sample: Optional[tuple] = None  # (runs per cell, runs read, runs in the sweep) when sampled

    def table(self, name: str) -> pd.DataFrame:
        return self.tables.get(name, pd.DataFrame())

    def setting(self, key: str, default):
        """`intervals.<key>` of the resolved config (what the sweep aggregated with), else `default`."""
        value = (self.config.get("intervals") or {}).get(key)
        return default if value is None else value

    @property
    def statuses(self) -> tuple:
        return tuple(self.setting("statuses", ("ok",)))

    @property
    def params(self) -> list:
        """sweep.json's parameter names, else the estimates' columns between `kind` and `final_loss`."""
        columns = list(self.table("estimates").columns)
        names = self.meta.get("param_names")
        if not names and {"kind", "final_loss"} <= set(columns):
            names = columns[columns.index("kind") + 1 : columns.index("final_loss")]
        return [n for n in names or [] if n in columns]


# --- reading the folder -------------------------------------------------------------------------


def _read_yaml(path: Path, sweep: Sweep, what: str, required: bool = True):
    if not path.is_file():
        if required:
            sweep.missing.append(f"{what} (not found)")
        return None, None
    try:
        import yaml  # PyYAML, which omegaconf already requires

        text = path.read_text()
        return text, yaml.safe_load(text)
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported, not raised
        sweep.missing.append(f"{what} (unreadable: {err})")
        return None, None


def _read_table(path: Path, sweep: Sweep) -> pd.DataFrame:
    if not path.is_file():
        sweep.missing.append(f"{path.name} (not found)")
        return pd.DataFrame()
    try:
        frame = pd.read_parquet(path)
    except Exception as err:  # noqa: BLE001
        sweep.missing.append(f"{path.name} (unreadable: {err})")
        return pd.DataFrame()
    if frame.empty:
        sweep.missing.append(f"{path.name} (empty)")
    return frame


def _read_curves(path: Path, estimates: pd.DataFrame, sweep: Sweep) -> pd.DataFrame:
    """curves.parquet, or past CURVE_ROWS_READ_WHOLE rows the curves of the first
    CURVE_RUNS_PER_CELL runs of each cell, filtered row group by row group (memory: the sample)."""
    try:
        rows = pq.read_metadata(path).num_rows
    except Exception:  # noqa: BLE001 - absent or unreadable: _read_table says which
        rows = 0
    if rows <= CURVE_ROWS_READ_WHOLE or not {"run_id", "lr", "init_index"} <= set(estimates.columns):
        return _read_table(path, sweep)
    keep = estimates.groupby(["lr", "init_index"], sort=False).head(CURVE_RUNS_PER_CELL)["run_id"].unique()
    try:
        frame = pq.read_table(path, filters=[("run_id", "in", keep.tolist())]).to_pandas()
    except Exception as err:  # noqa: BLE001
        sweep.missing.append(f"{path.name} (unreadable: {err})")
        return pd.DataFrame()
    sweep.curve_sample = (CURVE_RUNS_PER_CELL, len(keep), int(estimates["run_id"].nunique()))
    return frame


def _with_kind(estimates: pd.DataFrame) -> pd.DataFrame:
    if "kind" in estimates.columns or "resample" not in estimates.columns:
        return estimates
    kinds = np.select([estimates["resample"] == 0, estimates["resample"] > 0], ["original", "bootstrap"], "jackknife")
    return estimates.assign(kind=kinds)


def load_sweep_folder(out_dir: Path) -> Sweep:
    sweep = Sweep(Path(out_dir))
    try:
        meta = json.loads((sweep.out_dir / store.SWEEP_META).read_text())
        sweep.meta = meta if isinstance(meta, dict) else {}
    except (OSError, ValueError) as err:
        sweep.missing.append(f"{store.SWEEP_META} ({'not found' if isinstance(err, FileNotFoundError) else err})")
    sweep.config_text, config = _read_yaml(sweep.out_dir / store.CONFIG, sweep, store.CONFIG)
    sweep.config = config if isinstance(config, dict) else {}
    overrides_path = sweep.out_dir / store.HYDRA_OVERRIDES
    _, overrides = _read_yaml(overrides_path, sweep, store.HYDRA_OVERRIDES, False)
    sweep.overrides = [str(o) for o in overrides] if isinstance(overrides, list) else None
    for name, file_name in TABLES.items():
        path = sweep.out_dir / file_name
        sweep.tables[name] = (
            _read_curves(path, sweep.tables["estimates"], sweep) if name == "curves" else _read_table(path, sweep)
        )
    for name, file_name in OPTIONAL_TABLES.items():
        path = sweep.out_dir / file_name
        sweep.tables[name] = _read_table(path, sweep) if path.exists() else pd.DataFrame()
    sweep.tables["estimates"] = _with_kind(sweep.tables["estimates"])
    return sweep
