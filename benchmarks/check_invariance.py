"""The same runs in two grids: are their numbers the same bits? On any device, through `run_sweep`.

    python -m benchmarks.check_invariance --device cuda --record figures.jsonl
    python -m benchmarks.check_invariance --device cpu --draws 20 --epochs 200   # small, on the CPU

A run id promises one result whatever the grid (README, "Relaunching"). For each case (an
experiment through one engine) and dtype, two sweeps share runs: grid A is one learning rate
with 4 draws (resample 0 to 3) trained as one small batch; grid B adds a second learning rate
and --draws draws at each, trained as one batch of 2 x --draws runs, so the shared runs sit in
a batch of another size, at other positions, in other company. Every column of
estimates.parquet that is the run's own (bookkeeping aside: host, task, job, wall time) and its
logged curve are compared bit for bit, NaN equal to NaN.

Prints one line per case and dtype, and with --record appends each as a record
(benchmarks/figures.py): `identical` true or false, with the largest relative difference and
the columns that differ. It never fails on a difference: what holds on a device is a finding
for benchmarks/README.md (a tolerance, and why), not a crash; a sweep that fails is an error.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch

from benchmarks.figures import record
from pipeline.api import SweepFolder, run_sweep

# Columns that say where and when a run was trained, not what it computed.
BOOKKEEPING = {"host", "task", "slurm_job_id", "wall_time"}


@dataclass(frozen=True)
class Case:
    """An experiment through one engine, with the learning rate both grids share and B's other one."""

    name: str
    experiment: str
    engine: str
    lr: float
    other_lr: float


CASES = (
    Case("tdm_quadratic, gram", "tdm_quadratic", "gram", 0.03, 0.003),
    Case("tdm_quadratic, batched", "tdm_quadratic", "batched", 0.03, 0.003),
    Case("toy MLP, batched (Adam)", "toy_mlp", "batched", 0.01, 0.03),
)


def grid_overrides(case: Case, lrs: list[float], draws: int, runs_per_task: int) -> list[str]:
    return [
        f"experiment={case.experiment}",
        "sweep=bootstrap",
        f"sweep.resamples={draws - 1}",
        f"sweep.lr=[{','.join(str(lr) for lr in lrs)}]",
        f"train.engine={case.engine}",
        f"launcher.runs_per_task={runs_per_task}",
    ]


def sweep(out_dir: Path, grid: list[str], common: list[str]) -> SweepFolder:
    return run_sweep([*grid, *common, f"out_dir={out_dir}"], echo=False)


def differences(a: pd.DataFrame, b: pd.DataFrame, keys: list[str]) -> tuple[int, list[str], float]:
    """Rows shared on `keys`, the columns whose values are not the same bits, and the largest relative gap."""
    both = a.merge(b, on=keys, suffixes=("_a", "_b"))
    columns = [c for c in a.columns if c in b.columns and c not in keys and c not in BOOKKEEPING]
    differing, worst = [], 0.0
    for column in columns:
        x, y = both[f"{column}_a"], both[f"{column}_b"]
        if pd.api.types.is_float_dtype(x) and pd.api.types.is_float_dtype(y):
            x, y = x.to_numpy(np.float64), y.to_numpy(np.float64)
            same = np.array_equal(x, y, equal_nan=True)
            if not same:
                gap = np.abs(x - y) / np.maximum(np.abs(x), np.finfo(np.float64).tiny)
                worst = max(worst, float(np.nanmax(gap, initial=0.0)))
        else:
            same = [repr(v) for v in x] == [repr(v) for v in y]
        if not same:
            differing.append(column)
    return len(both), differing, worst


def check(case: Case, dtype: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    common = [
        f"train.device={args.device}",
        f"train.dtype={dtype}",
        f"train.epochs={args.epochs}",
        "launcher=debug",
        "launcher.progress=false",
        "intervals.plots=false",
        "report=false",
    ]
    where = tmp / f"{case.experiment}-{case.engine}-{dtype}"
    small = sweep(where / "A", grid_overrides(case, [case.lr], 4, 4), common)
    big = sweep(where / "B", grid_overrides(case, [case.other_lr, case.lr], args.draws, 2 * args.draws), common)
    shared, est_cols, est_gap = differences(small.estimates, big.estimates, ["run_id"])
    _, curve_cols, curve_gap = differences(small.curves, big.curves, ["run_id", "epoch"])
    engines = ", ".join(sorted(set(small.estimates["engine"]) | set(big.estimates["engine"])))
    differing = est_cols + [f"curve {c}" for c in curve_cols]
    return {
        "shared_runs": shared,
        "identical": not differing,
        "max_rel_diff": max(est_gap, curve_gap),
        "note": (f"differ: {', '.join(differing)}; " if differing else "")
        + f"engine {engines}, batch of 4 vs {2 * args.draws} runs, {args.epochs} epochs",
    }


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    parser.add_argument("--dtypes", nargs="+", choices=["float32", "float64"], default=["float32", "float64"])
    parser.add_argument("--draws", type=int, default=2000, help="draws per learning rate in grid B")
    parser.add_argument("--epochs", type=int, default=2000)
    parser.add_argument("--record", type=Path, default=None, help="append each result as a JSON line to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the sweeps' notes on unconverged cells are not this check's
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            for dtype in args.dtypes:
                found = check(case, dtype, args, Path(tmp))
                verdict = "same bits" if found["identical"] else f"DIFFER (max relative {found['max_rel_diff']:.1e})"
                print(f"  {case.name:<26} {dtype:<8} {found['shared_runs']:>3} shared runs: {verdict}; {found['note']}")
                record(args.record, device, figure="batch invariance", stage=case.name, dtype=dtype, **found)


if __name__ == "__main__":
    main()
