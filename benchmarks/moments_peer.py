"""The peer of `pipeline-sweep experiment=tdm_quadratic sweep=bootstrap sweep.resamples=999
optim.lr=0.03` (issue 24): the same bootstrap written by hand, as one would without the
pipeline, on moments: G and c per draw, 10,000 explicit full-batch SGD steps of all draws
at once, the 95% percentile interval printed. No files, no checks, no report.

    python -m benchmarks.moments_peer
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]


def main(resamples: int = 999, lr: float = 0.03, epochs: int = 10_000) -> None:
    torch.set_num_threads(1)
    data = pd.read_csv(REPO / "data" / "tdm" / "train.csv")
    x, y = data["x"].to_numpy(), data["y"].to_numpy()
    features = np.column_stack([np.ones_like(x), x, x * x])
    n = len(y)
    rng = np.random.default_rng(0)
    rows = np.vstack([np.arange(n), rng.integers(0, n, size=(resamples, n))])  # resample 0: the data
    counts = np.stack([np.bincount(r, minlength=n) for r in rows]).astype(float)
    products = np.column_stack([(features[:, :, None] * features[:, None, :]).reshape(n, -1), features * y[:, None]])
    sums = torch.from_numpy(counts @ products)
    g, c = sums[:, :9].reshape(-1, 3, 3) * (2 / n), sums[:, 9:] * (2 / n)
    theta = torch.tensor([5.0, 4.0, 3.0], dtype=torch.float64).repeat(len(rows), 1)
    for _ in range(epochs):
        theta = theta - lr * ((g @ theta.unsqueeze(2))[..., 0] - c)
    boot = theta[1:].numpy()
    lower, upper = np.quantile(boot, [0.025, 0.975], axis=0)
    for name, estimate, lo, hi in zip(("beta0", "beta1", "beta2"), theta[0].tolist(), lower, upper):
        print(f"{name}  {estimate:.4f}  [{lo:.4f}, {hi:.4f}]")


if __name__ == "__main__":
    main()
