"""A sweep folder of any size without training: parts in the real schema, written by the
real record code (`store.result_row`, `store.write_part`), with made-up numbers.

Used by `bench_scale.py` (10^6 runs) and `tests/integration/test_scale.py` (the memory check): what
aggregation costs depends on the rows, not on how they were trained.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import store
from pipeline.core.meta import SweepMeta
from pipeline.core.runs import Run, RunResult, Task

PARAMS = ("beta0", "beta1", "beta2")


def synthetic_runs(n_runs: int, n_cells: int) -> list[Run]:
    """`n_cells` grid cells (lr x init) of equal size, each resample 0, 1, ..."""
    per_cell = -(-n_runs // n_cells)
    runs = []
    for i in range(n_runs):
        cell, resample = divmod(i, per_cell)
        runs.append(Run(f"{i:016x}", 10.0 ** -(1 + cell % 4), cell // 4, (5.0, 4.0, 3.0), resample, 0))
    return runs


def synthetic_result(run: Run, rng: np.random.Generator, n_points: int) -> RunResult:
    params = [2.0 + rng.normal(0, 0.05), -1.5 + rng.normal(0, 0.02), 0.8 + rng.normal(0, 0.01)]
    status = "ok" if run.resample == 0 or rng.random() > 0.02 else "not_converged"
    curve = list(np.geomspace(50.0, 1.0, n_points))
    return RunResult(
        run,
        params,
        1.0,
        None,
        1e-4,
        100 * (n_points - 1),
        status,
        list(range(0, 100 * n_points, 100)),
        curve,
        ols=[p + 1e-6 for p in params],
        ols_loss=0.99,
        wall_time=1e-4,
        engine="gram",
    )


def write_synthetic_sweep(
    out_dir: Path, n_runs: int, *, n_cells: int = 4, runs_per_part: int = 10_000, n_points: int = 101, seed: int = 0
) -> Path:
    """sweep.json, plan.parquet and parts of `n_runs` made-up results in `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = SweepMeta("synthetic", PARAMS, True, "0" * 16, "synthetic", 1000)
    runs = synthetic_runs(n_runs, n_cells)
    store.write_meta(meta, out_dir)
    store.write_frame(store.plan_frame(runs), out_dir / store.PLAN)
    x = np.random.default_rng(seed).uniform(-3, 3, meta.n_rows)  # the design of t / hc3: tdm-like rows
    store.write_design(np.column_stack([np.ones_like(x), x, x**2]), 2 - 1.5 * x + 0.8 * x**2, PARAMS, out_dir)
    rng = np.random.default_rng(seed)
    for index, start in enumerate(range(0, n_runs, runs_per_part)):
        task = Task(index, tuple(runs[start : start + runs_per_part]))
        rows = [
            store.result_row(synthetic_result(r, rng, n_points), meta.experiment, meta.param_names, index)
            for r in task.runs
        ]
        store.write_part(out_dir, task.part_name, rows, meta)
    return out_dir
