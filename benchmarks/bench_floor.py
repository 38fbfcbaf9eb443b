"""The floor of the Gram path: the bare arithmetic a bootstrap of gradient-descent runs on a
least-squares fit needs, written out directly, timed beside the Gram engine (and the whole
task: engine, part table, Parquet file) on the same runs, in one process.

    python -m benchmarks.bench_floor                        # 10,000 runs of tdm_quadratic, 10,000 epochs
    python -m benchmarks.bench_floor --runs 2000 --rounds 5

The floor, per run (issue 24): its row counts (a multinomial draw, from the same counter-based
generator the pipeline uses, so the draws cost what they cost there), one BLAS product of all
runs' counts with the per-row products F_i F_i^T, F_i y_i, y_i^2, a p x p solve for the closed
form, a p x p eigenvalue problem for the bound, and log2(k) products of (p+1) x (p+1) epoch
matrices per logged block of k epochs (the state advanced through them, and the loss at each
logged epoch from the moments). No rounding to the training dtype, no divergence checks, no
curves kept, no result rows: what any implementation must compute.

Run it from the repository root, so that this checkout's `pipeline` is the one timed. Rounds
alternate floor and engine, and the ratio is taken round by round (the median is printed).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_engines import compose_config, load, machine, problem_meta
from pipeline import store
from pipeline.core.resampling import keyed_indices
from pipeline.core.settings import TrainSettings
from pipeline.data.load import load_dataset
from pipeline.sweep.plan import plan
from pipeline.train.engines.gram import train_gram
from pipeline.train.problem import build_problem, build_problem_parts


def floor(features: torch.Tensor, y: torch.Tensor, seed: int, resamples: np.ndarray, lr: float, epochs: int,
          log_every: int, theta0: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """The bare arithmetic of plain full-batch SGD on MSE for every draw: returns the final parameters."""
    n, p = features.shape
    products = torch.cat([(features[:, :, None] * features[:, None, :]).reshape(n, -1), features * y[:, None]], 1)
    products = torch.cat([products, (y * y)[:, None]], dim=1)
    runs, block = len(resamples), 256  # blocks of runs: each draw's counts made while in cache
    sums = torch.empty(runs, products.shape[1], dtype=torch.float64)
    for start in range(0, runs, block):
        rows = keyed_indices(seed, resamples[start : start + block], n, n)  # the draw: n rows with replacement
        rows += np.arange(len(rows))[:, None] * n
        counts = np.bincount(rows.ravel(), minlength=len(rows) * n).reshape(len(rows), n).astype(float)
        sums[start : start + block] = torch.from_numpy(counts) @ products  # the moments, one product
    g = sums[:, : p * p].reshape(runs, p, p) / n
    c = sums[:, p * p : p * p + p] / n
    yy = sums[:, -1] / n
    torch.linalg.solve(g, c)  # the closed form
    torch.linalg.eigvalsh(g)  # the bound
    m = torch.zeros(runs, p + 1, p + 1, dtype=torch.float64)  # theta <- theta - lr 2 (G theta - c)
    m[:, :p, :p] = torch.eye(p, dtype=torch.float64) - 2 * lr * g
    m[:, :p, p] = 2 * lr * c
    m[:, p, p] = 1.0
    power = torch.linalg.matrix_power(m, log_every)
    state = torch.cat([theta0.expand(runs, p), torch.ones(runs, 1, dtype=torch.float64)], dim=1)
    for _ in range(epochs // log_every):
        state = (power @ state.unsqueeze(2))[..., 0]
        theta = state[:, :p]
        (theta.unsqueeze(1) @ g @ theta.unsqueeze(2))[:, 0, 0] - 2 * (theta * c).sum(1) + yy  # the logged loss
    return state[:, :p]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10_000, help="bootstrap draws (runs) timed together")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as a local task)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = compose_config(
        "experiment=tdm_quadratic", "sweep=bootstrap", f"sweep.resamples={args.runs - 1}", "optim.lr=0.03"
    )
    dataset = load_dataset(cfg["data"])
    train = TrainSettings.from_dict(cfg["train"])
    parts = build_problem_parts(cfg["model"], cfg["loss"], cfg["optim"], dataset)
    problem = build_problem(parts, dataset, device="cpu", dtype=train.dtype)
    runs = plan(cfg, dataset.digest())
    meta = problem_meta(problem, "tdm_quadratic")
    features = parts.make_model().features(problem.x.double())
    y = problem.y.double()[:, 0]
    theta0 = torch.tensor(cfg["init"], dtype=torch.float64)
    resamples = np.arange(1, len(runs) + 1)
    print(f"machine: {machine()} ({load()})")
    print(
        f"tdm_quadratic: {len(runs)} runs x {train.epochs} epochs (logged every {train.log_every}), "
        f"{dataset.n_rows} rows, {train.dtype}, {torch.get_num_threads()} torch thread(s)"
    )

    def whole_task() -> None:
        batch = train_gram(problem, runs, train)
        with tempfile.TemporaryDirectory() as tmp:
            store.write_table(store.results_table(batch, meta, 0), Path(tmp) / "part.parquet")

    floor(features, y, 0, resamples[:50], 0.03, 200, 100, theta0)  # burn-in: imports, pools
    train_gram(problem, runs[:50], train)
    times: dict[str, list[float]] = {"floor": [], "gram engine": [], "whole task": []}
    for _ in range(args.rounds):
        for name, fn in (
            ("floor", lambda: floor(features, y, 0, resamples, 0.03, train.epochs, train.log_every, theta0)),
            ("gram engine", lambda: train_gram(problem, runs, train)),
            ("whole task", whole_task),
        ):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        ratios = [t / f for t, f in zip(values, times["floor"])]
        print(
            f"  {name:<12} {statistics.median(values) * 1e6 / len(runs):8.1f} us/run  "
            f"(median of {args.rounds}: {', '.join(f'{v:.3f}' for v in values)} s)   "
            f"{statistics.median(ratios):5.2f}x the floor"
        )
    print(f"({load()})")


if __name__ == "__main__":
    main()
