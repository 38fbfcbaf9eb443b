"""Expand a sweep config into runs and chunk them into tasks. Pure: no I/O.

The conventions every run follows (resample numbering, what a scheme resamples, what a
run id hashes) are in `sweep.ids`, which gives the ids.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional

from pipeline.core.resampling import DRAW_RULE
from pipeline.core.runs import BLOCK_SCHEMES, CASE, WILD, Run, Task
from pipeline.sweep.ids import legacy_fingerprint, legacy_run_id, run_ids_from_json, settings_fingerprint


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


def resample_indices(cfg: dict[str, Any], n_rows: Optional[int]) -> list[int]:
    """0, the bootstrap draws 1..B, then (with `sweep.jackknife`) -1..-n, one per left-out row."""
    indices = list(range(int(cfg["sweep"]["resamples"]) + 1))
    if cfg["sweep"].get("jackknife"):
        if n_rows is None:
            raise ValueError("`sweep.jackknife` plans one run per data row: plan() needs n_rows")
        indices += [-(j + 1) for j in range(n_rows)]
    return indices


def plan(
    cfg: dict[str, Any],
    data_digest: str,
    n_rows: Optional[int] = None,
    draw_rule: str = DRAW_RULE,
    draw_settings: Optional[Mapping[str, Any]] = None,
) -> list[Run]:
    """Every run of the sweep: learning rate x initial values x resample.

    `data_digest` identifies the training rows (see `pipeline.data.load.Dataset.digest`);
    `n_rows`, their number, is needed only for jackknife runs (one per row); `draw_rule`
    and `draw_settings`: the sweep folder's (`SweepMeta.draw_rule`, `.draw_settings()`),
    which enter the ids of bootstrap draws.
    """
    settings_json = json.dumps({**settings_fingerprint(cfg), "data": data_digest}, sort_keys=True, default=str)
    seed, scheme = int(cfg["sweep"]["seed"]), cfg["sweep"].get("scheme", CASE)
    needed = {"block_length"} if scheme in BLOCK_SCHEMES else {"wild_weights"} if scheme == WILD else set()
    if needed - set(draw_settings or {}):
        raise ValueError(f"the {scheme} scheme's draws read {', '.join(needed)}: plan() needs them in draw_settings")
    runs = []
    resamples = resample_indices(cfg, n_rows)
    for lr in lr_grid(cfg):
        for i, init in enumerate(init_grid(cfg)):
            ids = run_ids_from_json(settings_json, lr, init, resamples, seed, scheme, draw_rule, draw_settings)
            vector = None if init is None else tuple(init)
            runs += [Run(run_id, lr, i, vector, k, seed, scheme) for run_id, k in zip(ids, resamples)]
    return runs


def legacy_ids(cfg: dict[str, Any], data_digest: str, runs: list[Run]) -> list[str]:
    """The version-0 ids `runs` had under config `cfg` (a sweep folder's old config.yaml)."""
    fingerprint = {**legacy_fingerprint(cfg), "data": data_digest}
    return [
        legacy_run_id(fingerprint, r.lr, None if r.init is None else list(r.init), r.resample, r.seed, r.scheme)
        for r in runs
    ]


def chunk(runs: list[Run], runs_per_task: int) -> list[Task]:
    return [Task(i, tuple(runs[s : s + runs_per_task])) for i, s in enumerate(range(0, len(runs), runs_per_task))]
