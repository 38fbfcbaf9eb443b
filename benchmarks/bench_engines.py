"""Time the textbook loop against the fast engines on the same runs, in one process.

    python -m benchmarks.bench_engines                  # all three figures (a few minutes on 2 cores)
    python -m benchmarks.bench_engines --only tdm mlp   # skip the whole-sweep timing
    python -m benchmarks.bench_engines --only tdm mlp --device cuda --tdm-runs 10000 --mlp-runs 10000 \
        --record figures.jsonl                          # benchmarks/gpu_check.sh: every figure as a JSON line

Run it from the repository root, so that this checkout's `pipeline` is the one timed.

Figures (float32 unless --dtype, which takes one or both):
- tdm: tdm_quadratic (1,000 rows, 3 parameters), 1,000 bootstrap resamples (--tdm-runs) x 10,000
  epochs: the gram engine on all runs; the batched engine on all runs for
  --batched-epochs epochs, per-run time scaled to 10,000 epochs; the textbook loop
  (`train_reference`) on --reference-runs of the runs, full length.
- mlp: seed 002's toy network (3 -> 4 ReLU -> 2 sigmoid, 20 rows), 512 runs (--mlp-runs) x 2,000
  Adam steps: the batched engine on all runs; the textbook loop on a sample.
- "+ part (whole task)": the engine, then its results as a task writes them (the part's
  Arrow table from the engine's columns, `store.results_table`, and its Parquet file).
- sweep: `pipeline-sweep` end to end (plan, local launcher, training, aggregation) for
  1,000 resamples x 10,000 epochs of tdm_quadratic, wall time of the command.

Each stage runs once untimed on a small chunk first (imports, allocator, thread pools),
then timed between `torch.cuda.synchronize()` calls when on a GPU. Per-run time of a
fast engine is its wall time over the number of runs it trained together.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from benchmarks.figures import cpu_model, record
from pipeline import store
from pipeline.config.schema import to_container
from pipeline.config.shipped import CONF_DIR
from pipeline.core.meta import SweepMeta
from pipeline.core.runs import Run, RunResult
from pipeline.core.settings import TrainSettings
from pipeline.data.load import Dataset, load_dataset
from pipeline.sweep.plan import plan
from pipeline.train.engines import train_reference
from pipeline.train.engines.batched import train_batched
from pipeline.train.engines.gram import train_gram
from pipeline.train.problem import Problem, build_problem, build_problem_parts

REPO = Path(__file__).resolve().parents[1]

TOY_MLP = {
    "_target_": "torch.nn.Sequential",
    "_args_": [
        {"_target_": "torch.nn.Linear", "in_features": 3, "out_features": 4},
        {"_target_": "torch.nn.ReLU"},
        {"_target_": "torch.nn.Linear", "in_features": 4, "out_features": 2},
        {"_target_": "torch.nn.Sigmoid"},
    ],
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], Any]) -> tuple[float, Any]:
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - start, out


def machine() -> str:
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"{cpu_model()}, {len(os.sched_getaffinity(0))} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads){gpu}, Python {platform.python_version()}"
    )


def load() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def compose_config(*overrides: str) -> dict[str, Any]:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return to_container(compose("config", overrides=[*overrides, "out_dir=/tmp/unused"]))


def max_relative_gap(fast: list[RunResult], ref: list[RunResult]) -> float:
    by_id = {r.run.run_id: r for r in fast}
    gaps = [np.max(np.abs(np.subtract(by_id[r.run.run_id].params, r.params)) / np.max(np.abs(r.params))) for r in ref]
    return float(max(gaps))


def report(name: str, per_run_ref: float, per_run_fast: float, note: str = "") -> None:
    print(f"  {name:<34} {per_run_fast * 1e3:10.3f} ms/run   {per_run_ref / per_run_fast:10.0f}x  {note}")


def note_figure(
    args: argparse.Namespace,
    figure: str,
    stage: str,
    *,
    device: torch.device,
    runs: int,
    epochs: int,
    per_run: float,
    **extra: Any,
) -> None:
    """One timing as a record in --record's file (benchmarks/figures.py), per run and in all."""
    record(
        args.record,
        device,
        figure=figure,
        stage=stage,
        dtype=args.dtype,
        runs=runs,
        epochs=epochs,
        ms_per_run=per_run * 1e3,
        seconds=per_run * runs,
        **extra,
    )


def textbook(problem: Problem, runs: list[Run], cfg: TrainSettings) -> tuple[float, list[RunResult]]:
    train_reference(problem, runs[0], replace(cfg, epochs=20))  # burn-in
    wall, results = timed(problem.device, lambda: [train_reference(problem, run, cfg) for run in runs])
    return wall / len(runs), results


def fast(
    engine: Callable[..., list[RunResult]], problem: Problem, runs: list[Run], cfg: TrainSettings
) -> tuple[float, list[RunResult]]:
    engine(problem, runs[:4], replace(cfg, epochs=20))  # burn-in
    wall, results = timed(problem.device, lambda: engine(problem, runs, cfg))
    return wall / len(runs), results


def with_part(engine: Callable[..., Any], meta: SweepMeta) -> Callable[..., Any]:
    """The engine, then its results as a task writes them: a part's table and its Parquet file."""

    def whole_task(problem: Problem, runs: list[Run], cfg: TrainSettings) -> Any:
        results = engine(problem, runs, cfg)
        with tempfile.TemporaryDirectory() as tmp:
            store.write_table(store.results_table(results, meta, 0), Path(tmp) / "part.parquet")
        return results

    return whole_task


def problem_meta(problem: Problem, name: str) -> SweepMeta:
    return SweepMeta(name, problem.parts.param_names, problem.parts.closed_form, "", "", problem.x.shape[0])


def bench_tdm(args: argparse.Namespace) -> None:
    cfg = compose_config(
        "experiment=tdm_quadratic",
        "sweep=bootstrap",
        f"sweep.resamples={args.tdm_runs - 1}",
        *([f"train.epochs={args.epochs}"] if args.epochs else []),
        f"train.dtype={args.dtype}",
        f"train.device={args.device}",
    )
    dataset = load_dataset(cfg["data"])
    train = TrainSettings.from_dict(cfg["train"])
    problem = build_problem(
        build_problem_parts(cfg["model"], cfg["loss"], cfg["optim"], dataset),
        dataset,
        device=train.device,
        dtype=train.dtype,
    )
    runs = plan(cfg, dataset.digest())
    print(
        f"\ntdm_quadratic: {len(runs)} runs x {train.epochs} epochs, {dataset.n_rows} rows, "
        f"{args.dtype} on {problem.device} ({load()})"
    )
    sample = runs[:: len(runs) // args.reference_runs][: args.reference_runs]
    ref_time, ref = textbook(problem, sample, train)
    print(
        f"  {'textbook loop (train_reference)':<34} {ref_time * 1e3:10.1f} ms/run   (mean of {len(sample)} full runs)"
    )
    figure = partial(note_figure, args, "tdm_quadratic", device=problem.device, epochs=train.epochs)
    figure("textbook loop", runs=len(sample), per_run=ref_time, note=f"mean of {len(sample)} full runs")
    gram_time, gram = fast(train_gram, problem, runs, train)
    gap = max_relative_gap(gram, ref)
    report("gram engine", ref_time, gram_time, f"max gap to textbook {gap:.1e}")
    figure("gram engine", runs=len(runs), per_run=gram_time, note=f"max gap to textbook {gap:.1e}")
    task_time, _ = fast(with_part(train_gram, problem_meta(problem, "tdm_quadratic")), problem, runs, train)
    report("gram engine + part (whole task)", ref_time, task_time, "(results as a part's table, Parquet written)")
    figure("gram engine + part (whole task)", runs=len(runs), per_run=task_time)
    batched_epochs = min(args.batched_epochs, train.epochs)
    scale = train.epochs / batched_epochs
    batched_time, _ = fast(train_batched, problem, runs, replace(train, epochs=batched_epochs))
    note = f"{batched_epochs} epochs timed, x{scale:g}"
    report("batched engine", ref_time, batched_time * scale, f"({note})")
    figure("batched engine", runs=len(runs), per_run=batched_time * scale, note=note)


def toy_mlp_rows(n: int = 20) -> Dataset:
    """Seed 002's kind of data: 3 standard-normal inputs, 2 targets in (0, 1)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 3))
    y = 1 / (1 + np.exp(-np.stack([x[:, 0] - x[:, 1], x[:, 2] * x[:, 0]], axis=1)))
    return Dataset(x, y, None, None, ("x0", "x1", "x2"), ("y0", "y1"), "toy mlp rows")


def bench_mlp(args: argparse.Namespace) -> None:
    rows = toy_mlp_rows()
    parts = build_problem_parts(
        TOY_MLP, {"_target_": "torch.nn.MSELoss"}, {"_target_": "torch.optim.Adam", "_partial_": True}, rows
    )
    problem = build_problem(parts, rows, device=args.device, dtype=args.dtype)
    train = TrainSettings(epochs=args.mlp_steps, log_every=min(100, args.mlp_steps), grad_tol=1e-3)
    lrs = (3e-3, 1e-2, 3e-2, 1e-1)
    resamples = math.ceil(args.mlp_runs / (len(lrs) * 8))
    grid = [Run(f"mlp-{lr}-{i}-{k}", lr, i, None, k, 0) for lr in lrs for i in range(8) for k in range(resamples)]
    runs = grid[: args.mlp_runs]
    print(
        f"\ntoy MLP 3-4-2 (seed 002): {len(runs)} runs (4 lr x 8 inits x {resamples} resamples) x "
        f"{train.epochs} Adam steps, 20 rows, {args.dtype} on {problem.device} ({load()})"
    )
    originals = [run for run in runs if run.resample == 0]  # reordering rows keeps their problem
    sample = originals[:: max(1, len(originals) // args.reference_runs)][: args.reference_runs]
    ref_time, ref = textbook(problem, sample, train)
    print(
        f"  {'textbook loop (train_reference)':<34} {ref_time * 1e3:10.1f} ms/run   (mean of {len(sample)} full runs)"
    )
    figure = partial(note_figure, args, "toy MLP, Adam", device=problem.device, epochs=train.epochs)
    figure("textbook loop", runs=len(sample), per_run=ref_time, note=f"mean of {len(sample)} full runs")
    batched_time, batched = fast(train_batched, problem, runs, train)
    gap = max_relative_gap(batched, ref)
    report("batched engine", ref_time, batched_time, f"max gap to textbook {gap:.1e}")
    figure("batched engine", runs=len(runs), per_run=batched_time, note=f"max gap to textbook {gap:.1e}")
    task_time, _ = fast(with_part(train_batched, problem_meta(problem, "toy mlp")), problem, runs, train)
    report("batched engine + part (whole task)", ref_time, task_time, "(results as a part's table, Parquet written)")
    figure("batched engine + part (whole task)", runs=len(runs), per_run=task_time)
    # Adam near an optimum amplifies rounding: the textbook loop on the same rows in
    # another order (another rounding, same problem) ends about as far from itself.
    reordered = replace(problem, x=problem.x.flip(0), y=problem.y.flip(0))
    again = [train_reference(reordered, run, train) for run in sample]
    print(
        f"  {'(textbook on rows in reverse order)':<34} {'':>26}  max gap to textbook "
        f"{max_relative_gap(again, ref):.1e}"
    )


def bench_sweep(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            "-c",
            "from pipeline.cli import sweep_main; sweep_main()",
            "experiment=tdm_quadratic",
            "sweep=bootstrap",
            "sweep.resamples=999",
            "launcher=local",
            "launcher.runs_per_task=1000",
            f"train.dtype={args.dtype}",
            f"out_dir={tmp}/sweep",
        ]
        print(f"\nwhole sweep ({load()}):\n  {shlex.join(command)}")
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"the sweep failed:\n{proc.stderr[-3000:]}")
        summary = [line.strip() for line in proc.stdout.splitlines() if line.startswith("  ") and "runs" in line]
        print(f"  {wall:.1f} s wall: {summary[0] if summary else proc.stdout[-300:]}")


STAGES = {"tdm": bench_tdm, "mlp": bench_mlp, "sweep": bench_sweep}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(STAGES), default=list(STAGES))
    parser.add_argument("--dtype", nargs="+", choices=["float32", "float64"], default=["float32"], help="one or both")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--reference-runs", type=int, default=5, help="textbook runs timed per figure")
    parser.add_argument("--batched-epochs", type=int, default=1000, help="epochs of the tdm batched stage")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--tdm-runs", type=int, default=1000, help="runs of the tdm figure (resample 0 and draws)")
    parser.add_argument("--mlp-runs", type=int, default=512, help="runs of the mlp figure")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of the tdm figure (default: the preset's)")
    parser.add_argument("--mlp-steps", type=int, default=2000, help="Adam steps of the mlp figure")
    parser.add_argument("--record", type=Path, default=None, help="append each figure as a JSON line to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"command: {shlex.join(sys.orig_argv)} (in {Path.cwd()})")
    print(f"machine: {machine()}")
    for dtype in args.dtype:
        for name in args.only:
            STAGES[name](argparse.Namespace(**{**vars(args), "dtype": dtype}))


if __name__ == "__main__":
    main()
