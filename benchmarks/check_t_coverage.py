"""An independent check of the classical `t` intervals of a `pipeline-coverage` study.

    python -m benchmarks.check_t_coverage results/<coverage folder> [--extra 20000]

`t` is exact for the Gaussian data `pipeline-coverage` simulates, so its coverage tells
Monte-Carlo noise from a defect. This script rebuilds the study's data sets
(`coverage.simulate`, the same seeds), fits each by numpy least squares, forms the t
interval with scipy's quantile, and (1) checks that its covered flags equal the study's
`t` flags, data set by data set; (2) reports the coverage of that interval over `--extra`
further data sets (seed 7), whose Monte-Carlo error is sqrt(0.95 x 0.05 / extra).
Run it from the repository root. Models linear in their parameters only (as the study).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from pipeline.config.compose import compose_config
from pipeline.studies.coverage import _DATA_STREAM, _features, make_truth, prepare_coverage, simulate

EXTRA_SEED = 7  # the further data sets: apart from the study's seeds 0 and 1


def t_covered(truth, parts, seed: int, reps: int, level: float) -> np.ndarray:
    """(reps, parameters): whether numpy's OLS t interval covers each true parameter."""
    beta = np.asarray(truth.params)
    flags = []
    for rep in range(reps):
        data = simulate(truth, parts, np.random.default_rng([seed, rep, _DATA_STREAM]))
        X, y = _features(parts, data.x), data.y[:, 0]
        coef, rss = np.linalg.lstsq(X, y, rcond=None)[:2]
        df = len(y) - X.shape[1]
        se = np.sqrt(np.diag(rss[0] / df * np.linalg.inv(X.T @ X)))
        flags.append(np.abs(coef - beta) <= stats.t.ppf(0.5 + level / 2, df) * se)
    return np.array(flags)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a pipeline-coverage output folder")
    parser.add_argument("--extra", type=int, default=20000, help="further data sets for the t coverage")
    args = parser.parse_args()
    meta = json.loads((args.folder / "coverage.json").read_text())
    overrides = [
        f"experiment={meta['experiment']}",
        f"rows={meta['rows']}",
        f"noise_sd={meta['noise_sd']}",
        "truth=[" + ",".join(repr(v) for v in meta["truth"].values()) + "]",
        f"out_dir={args.folder}",
    ]
    cfg = compose_config(overrides, "coverage")
    prepared = prepare_coverage(cfg)
    truth = make_truth(cfg, prepared.dataset, prepared.parts)
    reps = pd.read_parquet(args.folder / "coverage_reps.parquet").query("method == 't'")
    study = reps.pivot(index="rep", columns="parameter", values="covered")[list(prepared.parts.param_names)]
    level = float(reps["level"].iloc[0])
    mine = t_covered(truth, prepared.parts, meta["seed"], meta["reps"], level)
    print(f"study's t flags equal numpy's on all {meta['reps']} data sets: {bool((study.to_numpy() == mine).all())}")
    extra = t_covered(truth, prepared.parts, EXTRA_SEED, args.extra, level)
    se = np.sqrt(level * (1 - level) / args.extra)
    print(
        f"numpy t coverage over {args.extra} further data sets: "
        + ", ".join(f"{n} {c:.4f}" for n, c in zip(prepared.parts.param_names, extra.mean(axis=0)))
        + f" (Monte-Carlo se {se:.4f})"
    )


if __name__ == "__main__":
    main()
