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
from typing import Any, Optional

import numpy as np

from pipeline.records import CASE, Run, Task

# Settings that change how a run is computed but not its numbers: left out of the id.
# The data enter by content (`data_digest`), not by path: moving a file keeps its runs,
# editing it makes new ones.
_NOT_IN_ID = {"train": ("engine", "device"), "launcher": None, "intervals": None, "out_dir": None, "report": None,
              "sweep": None, "data": None, "data_dir": None}


def lr_grid(cfg: dict[str, Any]) -> list[float]:
    """The learning rates of the grid: `sweep.lr`, or the experiment's `optim.lr`."""
    lrs = cfg["sweep"]["lr"]
    return [float(cfg["optim"]["lr"])] if lrs is None else [float(v) for v in lrs]


def init_grid(cfg: dict[str, Any]) -> list[Optional[list[float]]]:
    """The distinct initial vectors of the grid, in order (a repeat would be the same runs)."""
    inits = cfg["sweep"]["init"]
    if inits is None:
        return [cfg["init"]]
    unique = []
    for vec in ([float(v) for v in vec] for vec in inits):
        if vec not in unique:
            unique.append(vec)
    return unique


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
    return run_id_from_json(json.dumps(fingerprint, sort_keys=True, default=str), lr, init, resample, seed, scheme)


def run_id_from_json(settings_json: str, lr: float, init: Optional[list[float]], resample: int, seed: int,
                     scheme: str = CASE) -> str:
    """`run_id` with the settings serialised once per sweep, not once per run (10^6 runs: minutes).
    "settings" sorts after every other key, so the text is json.dumps of the whole dict, as ever."""
    fields = {"lr": lr, "init": init, "resample": resample, "seed": seed if resample > 0 else None}
    if resample > 0 and scheme != CASE:  # keeps the ids of case-resampling sweeps as they were
        fields["scheme"] = scheme
    text = json.dumps(fields, sort_keys=True, default=str)[:-1] + ', "settings": ' + settings_json + "}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
    settings_json = json.dumps({**settings_fingerprint(cfg), "data": data_digest}, sort_keys=True, default=str)
    seed, scheme = int(cfg["sweep"]["seed"]), cfg["sweep"].get("scheme", CASE)
    runs = []
    for lr in lr_grid(cfg):
        for i, init in enumerate(init_grid(cfg)):
            for k in resample_indices(cfg, n_rows):
                runs.append(Run(run_id_from_json(settings_json, lr, init, k, seed, scheme), lr, i,
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
