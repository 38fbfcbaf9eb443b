"""Expand a sweep config into runs and chunk them into tasks. Pure: no I/O.

Conventions that everything downstream relies on:
- resample 0 is the original rows (the point estimate); resample k >= 1 is bootstrap
  draw k, whose rows depend on (`sweep.seed`, k) alone, never on the chunk, the
  launcher or the device; resample -(j+1) is jackknife fit j, which leaves row j out
  (planned when `sweep.jackknife` is true: BCa's acceleration needs them);
- `sweep.scheme` says what a bootstrap draw resamples: `case` takes the drawn rows
  (x, y) pairs; `residual` keeps x and adds the drawn rows' residuals of the original
  OLS fit to its fitted values (models linear in their parameters only);
- a run's id is a hash of every setting that changes its numbers, so the same run
  always has the same id and a relaunch can skip it.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np

from pipeline.config import init_grid, lr_grid

CASE, RESIDUAL = "case", "residual"  # resampling schemes of the bootstrap draws
SCHEMES = (CASE, RESIDUAL)
ORIGINAL, BOOTSTRAP, JACKKNIFE = "original", "bootstrap", "jackknife"  # kinds of resample

# Settings that change how a run is computed but not its numbers: left out of the id.
# The data enter by content (`data_digest`), not by path: moving a file keeps its runs,
# editing it makes new ones.
_NOT_IN_ID = {"train": ("engine", "device"), "launcher": None, "intervals": None, "out_dir": None,
              "sweep": None, "data": None, "data_dir": None}


@dataclass(frozen=True)
class Run:
    """One training run: a grid point on one resample."""

    run_id: str
    lr: float
    init_index: int
    init: Optional[tuple[float, ...]]  # None: the model's own initialisation
    resample: int  # 0: the original rows; k >= 1: bootstrap draw k; -(j+1): jackknife, row j left out
    seed: int
    scheme: str = CASE  # the sweep's resampling scheme; it changes the numbers of bootstrap draws only

    @property
    def kind(self) -> str:
        return resample_kind(self.resample)

    def as_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["init"] = None if self.init is None else list(self.init)
        row["kind"] = self.kind
        return row


@dataclass(frozen=True)
class Task:
    """What one (array) task trains: a chunk of runs, in plan order."""

    index: int
    runs: tuple[Run, ...]

    @property
    def part_name(self) -> str:
        """File stem of the task's Parquet part: fixed by its runs, so a rerun replaces it."""
        digest = hashlib.sha1("".join(r.run_id for r in self.runs).encode()).hexdigest()[:12]
        return f"part-{self.index:05d}-{digest}"


def settings_fingerprint(cfg: dict[str, Any]) -> dict[str, Any]:
    """The resolved settings shared by all runs of a sweep that change their numbers."""
    out = {}
    for key, value in copy.deepcopy(cfg).items():
        if key in _NOT_IN_ID and _NOT_IN_ID[key] is None:
            continue
        if key in _NOT_IN_ID:
            value = {k: v for k, v in value.items() if k not in _NOT_IN_ID[key]}
        out[key] = value
    out.pop("init", None)  # each run carries its own init vector
    out.get("optim", {}).pop("lr", None)  # and its own learning rate
    return out


def run_id(fingerprint: dict[str, Any], lr: float, init: Optional[list[float]], resample: int, seed: int,
           scheme: str = CASE) -> str:
    fields = {"settings": fingerprint, "lr": lr, "init": init, "resample": resample,
              "seed": seed if resample > 0 else None}
    if resample > 0 and scheme != CASE:  # keeps the ids of case-resampling sweeps as they were
        fields["scheme"] = scheme
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def resample_kind(resample: int) -> str:
    return ORIGINAL if resample == 0 else (BOOTSTRAP if resample > 0 else JACKKNIFE)


def resample_indices(cfg: dict[str, Any], n_rows: Optional[int]) -> list[int]:
    """0, the bootstrap draws 1..B, then (with `sweep.jackknife`) -1..-n, one per left-out row."""
    indices = list(range(int(cfg["sweep"]["resamples"]) + 1))
    if cfg["sweep"].get("jackknife"):
        if n_rows is None:
            raise ValueError("`sweep.jackknife` plans one run per data row: plan() needs n_rows")
        indices += [-(j + 1) for j in range(n_rows)]
    return indices


def plan(cfg: dict[str, Any], data_digest: str, n_rows: Optional[int] = None) -> list[Run]:
    """Every run of the sweep: learning rate x initial values x resample.

    `data_digest` identifies the training rows (see `pipeline.data.Dataset.digest`);
    `n_rows`, their number, is needed only for jackknife runs (one per row).
    """
    fingerprint = {**settings_fingerprint(cfg), "data": data_digest}
    seed, scheme = int(cfg["sweep"]["seed"]), cfg["sweep"].get("scheme", CASE)
    runs = []
    for lr in lr_grid(cfg):
        for i, init in enumerate(init_grid(cfg)):
            for k in resample_indices(cfg, n_rows):
                runs.append(Run(run_id(fingerprint, lr, init, k, seed, scheme), lr, i,
                                None if init is None else tuple(init), k, seed, scheme))
    return runs


def chunk(runs: list[Run], runs_per_task: int) -> list[Task]:
    return [Task(i, tuple(runs[s:s + runs_per_task])) for i, s in enumerate(range(0, len(runs), runs_per_task))]


def resample_rows(n_rows: int, seed: int, resample: int) -> np.ndarray:
    """Row indices of a resample: all rows for 0, n draws with replacement for k >= 1,
    all rows but row j for jackknife resample -(j+1)."""
    if resample == 0:
        return np.arange(n_rows)
    if resample < 0:
        if -resample > n_rows:
            raise ValueError(f"jackknife resample {resample} leaves out row {-resample - 1}, "
                             f"but the data have {n_rows} rows")
        return np.delete(np.arange(n_rows), -resample - 1)
    rng = np.random.default_rng([seed, resample])
    return rng.integers(0, n_rows, size=n_rows)
