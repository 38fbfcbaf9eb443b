"""Coverage of every bootstrap scheme and closed-form interval when rows are not independent.

A GISTEMP-sized trend (`experiment=gistemp_line`: its 143 years as x, in order, `fixed_x=true`;
the truth the OLS line of the data, the noise sd its residual sd) under two noise models:

    ar      AR(1) noise, phi = 0.6, in year order (`noise_ar=0.6`)
    hetero  independent noise whose sd grows linearly from 1x to 4x over the years (`noise_growth=3`)

Each scheme (case, residual, moving_block, circular_block, stationary, wild) is one
`pipeline-coverage` run of `--reps` simulated data sets with `--resamples` draws each, trained by
gradient descent (the gram engine), block lengths `auto` (Politis-White on each data set's own
residuals); t, hc3 and hac come with every run (the same data sets: the seed fixes them), and
are reported once. Prints each command, its wall time, and a markdown table of coverage with
its Monte-Carlo error sqrt(c (1 - c) / n) and the mean width.

    python benchmarks/coverage_dependent.py --reps 500 --resamples 199 --out results/coverage-dependent
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

SCHEMES = ("case", "residual", "moving_block", "circular_block", "stationary", "wild")
NOISE = {"ar": ("noise_ar=0.6",), "hetero": ("noise_growth=3",)}
CLOSED_FORM = ("t", "hc3", "hac")


def command(noise: str, scheme: str, reps: int, resamples: int, out: Path) -> list[str]:
    return [
        "pipeline-coverage",
        "experiment=gistemp_line",
        "fixed_x=true",
        *NOISE[noise],
        f"reps={reps}",
        f"sweep.resamples={resamples}",
        f"sweep.scheme={scheme}",
        "train.epochs=2000",
        "'intervals.methods=[percentile,t,hc3,hac]'",
        f"out_dir={out / noise / scheme}",
    ]


def run(noise: str, scheme: str, reps: int, resamples: int, out: Path) -> float:
    words = command(noise, scheme, reps, resamples, out)
    print("$", " ".join(words), flush=True)
    start = time.perf_counter()
    subprocess.run(" ".join(words) + " launcher.progress=false", shell=True, check=True)
    return time.perf_counter() - start


def rows(noise: str, scheme: str, out: Path) -> list[dict]:
    folder = out / noise / scheme
    table = pd.read_parquet(folder / "coverage.parquet")
    block = json.loads((folder / "coverage.json").read_text()).get("draw_settings", {}).get("block_lengths") or {}
    picked = []
    for _, row in table.iterrows():
        closed = row["method"] in CLOSED_FORM
        if closed and scheme != SCHEMES[0]:
            continue  # the same data sets in every run: once is enough
        picked.append(
            {
                "noise": noise,
                "interval": row["method"] if closed else f"{row['method']}, {scheme}",
                "parameter": row["parameter"],
                "coverage": row["coverage"],
                "mc_se": row["mc_se"],
                "mean_width": row["mean_width"],
                "n": int(row["n_intervals"]),
                "block": f"{block['min']:g}-{block['max']:g} (mean {block['mean']:.3g})" if block else "",
            }
        )
    return picked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=500)
    parser.add_argument("--resamples", type=int, default=199)
    parser.add_argument("--out", type=Path, default=Path("results/coverage-dependent"))
    parser.add_argument("--noise", choices=[*NOISE, "both"], default="both")
    parser.add_argument("--table-only", action="store_true", help="read the folders of an earlier run")
    args = parser.parse_args()
    noises = list(NOISE) if args.noise == "both" else [args.noise]
    if not args.table_only:
        for noise in noises:
            for scheme in SCHEMES:
                print(f"  wall {run(noise, scheme, args.reps, args.resamples, args.out):.0f} s", flush=True)
    table = pd.DataFrame([r for noise in noises for scheme in SCHEMES for r in rows(noise, scheme, args.out)])
    print("| noise | interval | parameter | coverage | Monte-Carlo se | mean width | intervals | block length |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in table.itertuples(index=False):
        print(
            f"| {r.noise} | {r.interval} | {r.parameter} | {r.coverage:.3f} | {r.mc_se:.3f} | {r.mean_width:.4f} "
            f"| {r.n} | {r.block} |"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
