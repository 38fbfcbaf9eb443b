"""Simulate the stand-in for the TDM 30200 course data (`data/tdm/train.csv`, `test.csv`).

The course's own files are not public, so we draw a noisy parabola of the same shape
(columns `x`, `y`) with a fixed seed. Re-running this script rewrites identical files.

    python data/make_tdm.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SEED = 20230309
TRUE_COEF = {"beta0": 2.0, "beta1": -1.5, "beta2": 0.8}
NOISE_SD = 1.0
N_TRAIN, N_TEST = 1000, 250
X_RANGE = (-3.0, 3.0)


def simulate(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(*X_RANGE, size=n)
    b0, b1, b2 = TRUE_COEF.values()
    y = b0 + b1 * x + b2 * x**2 + rng.normal(0.0, NOISE_SD, size=n)
    return x, y


def write_csv(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    lines = ["x,y"] + [f"{a:.6f},{b:.6f}" for a, b in zip(x, y)]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    out = Path(__file__).resolve().parent / "tdm"
    out.mkdir(exist_ok=True)
    rng = np.random.default_rng(SEED)
    write_csv(out / "train.csv", *simulate(N_TRAIN, rng))
    write_csv(out / "test.csv", *simulate(N_TEST, rng))
    truth = {
        "model": "y = beta0 + beta1 x + beta2 x^2 + N(0, noise_sd^2)",
        "coefficients": TRUE_COEF,
        "noise_sd": NOISE_SD,
        "x": f"uniform on [{X_RANGE[0]}, {X_RANGE[1]}]",
        "rows": {"train": N_TRAIN, "test": N_TEST},
        "seed": SEED,
        "made_by": "data/make_tdm.py",
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")


if __name__ == "__main__":
    main()
