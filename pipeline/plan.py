"""Expand a sweep config into runs and chunk them into tasks. Pure: no I/O.

Conventions that everything downstream relies on:
- resample 0 is the original rows (the point estimate); resample k >= 1 is bootstrap
  draw k, whose rows depend on (`sweep.seed`, k) alone, never on the chunk, the
  launcher or the device;
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
    resample: int  # 0: the original rows; k >= 1: bootstrap draw k
    seed: int

    def as_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["init"] = None if self.init is None else list(self.init)
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


def run_id(fingerprint: dict[str, Any], lr: float, init: Optional[list[float]], resample: int, seed: int) -> str:
    payload = json.dumps(
        {"settings": fingerprint, "lr": lr, "init": init, "resample": resample,
         "seed": seed if resample > 0 else None},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def plan(cfg: dict[str, Any], data_digest: str) -> list[Run]:
    """Every run of the sweep: learning rate x initial values x resample.

    `data_digest` identifies the training rows (see `pipeline.data.Dataset.digest`).
    """
    fingerprint = {**settings_fingerprint(cfg), "data": data_digest}
    seed = int(cfg["sweep"]["seed"])
    runs = []
    for lr in lr_grid(cfg):
        for i, init in enumerate(init_grid(cfg)):
            for k in range(int(cfg["sweep"]["resamples"]) + 1):
                runs.append(Run(run_id(fingerprint, lr, init, k, seed), lr, i,
                                None if init is None else tuple(init), k, seed))
    return runs


def chunk(runs: list[Run], runs_per_task: int) -> list[Task]:
    return [Task(i, tuple(runs[s:s + runs_per_task])) for i, s in enumerate(range(0, len(runs), runs_per_task))]


def resample_rows(n_rows: int, seed: int, resample: int) -> np.ndarray:
    """Row indices of a resample: all rows for 0, else n draws with replacement."""
    if resample == 0:
        return np.arange(n_rows)
    rng = np.random.default_rng([seed, resample])
    return rng.integers(0, n_rows, size=n_rows)
