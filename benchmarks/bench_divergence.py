"""Time the Gram engine on a diverging run against a converging one, 10^6 epochs logged once.

    python -m benchmarks.bench_divergence                      # float32, best of 3
    python -m benchmarks.bench_divergence --dtype float64

Run it from the repository root, so that this checkout's `pipeline` is the one timed
(it prints the file it imported). One run of tdm_quadratic (1,000 rows, 3 parameters,
init 5, 4, 3) at a time: lr 0.03 converges, lr 0.5 diverges (it overflows near epoch 30
in float32, 260 in float64). Both train 10^6 epochs with train.log_every = 10^6, so the
diverging run overflows inside the one block of 10^6 epochs and is found diverged at its
end, with the parameters stepping all of them gives (NaN). Each run is timed
`--repeats` times after an untimed burn-in; the best time is printed.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.bench_engines import compose_config, load, machine, timed
from pipeline.core.settings import TrainSettings
from pipeline.data.load import load_dataset
from pipeline.sweep.plan import Run
from pipeline.train.engines import gram
from pipeline.train.problem import build_problem, build_problem_parts

EPOCHS = 10**6
INIT = (5.0, 4.0, 3.0)
LRS = {"converging": 0.03, "diverging": 0.5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--repeats", type=int, default=3, help="timings per run; the best is printed")
    args = parser.parse_args()
    cfg = compose_config("experiment=tdm_quadratic", f"train.dtype={args.dtype}", "train.device=cpu")
    dataset = load_dataset(cfg["data"])
    train = replace(TrainSettings.from_dict(cfg["train"]), epochs=EPOCHS, log_every=EPOCHS)
    problem = build_problem(
        build_problem_parts(cfg["model"], cfg["loss"], cfg["optim"], dataset),
        dataset,
        device=train.device,
        dtype=train.dtype,
    )
    print(f"command: {shlex.join(sys.orig_argv)} (in {Path.cwd()})")
    print(f"machine: {machine()}")
    print(f"timed: {gram.__file__}")
    print(
        f"tdm_quadratic, {problem.x.shape[0]} rows, {args.dtype}, epochs = log_every = {EPOCHS:,}, "
        f"best of {args.repeats} ({load()})"
    )
    best = {}
    for kind, lr in LRS.items():
        run = Run(kind, lr, 0, INIT, 0, 0)
        gram.train_gram(problem, [run], replace(train, epochs=20, log_every=20))  # burn-in
        times = []
        for _ in range(args.repeats):
            wall, (result,) = timed(torch.device("cpu"), lambda: gram.train_gram(problem, [run], train))
            times.append(wall)
        best[kind] = min(times)
        print(
            f"  {kind:<11} lr {lr:<5} {best[kind]:9.3f} s   (all: {', '.join(f'{t:.3f}' for t in times)})   "
            f"{result.status}, epochs {result.epochs}, params {result.params}"
        )
    print(f"  diverging / converging: {best['diverging'] / best['converging']:.1f}x ({load()})")


if __name__ == "__main__":
    main()
