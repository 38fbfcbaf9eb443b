"""The synthetic data sets of the course presets, as `data.generate` functions.

Each returns (train, test) DataFrames (test None: no held-out rows) from its own seeded
generator, never the global random state; the presets name them in `_target_`
(`pipeline.data.linear_synthetic`, `toy_binary`, `sine`), and old sweep folders'
config.yaml do too, so those paths stay.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def linear_synthetic(
    n: int = 100,
    true_b: float = 1.0,
    true_w: float = 2.0,
    noise: float = 0.1,
    seed: int = 42,
    train_share: float = 0.8,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """y = b + w x + noise N(0,1), drawn and split exactly as course seed 004 does.

    The order of numpy calls (x, noise, shuffle) matters: it fixes which rows land in
    the training split, and so the fitted b = 1.0235, w = 1.9690.
    """
    rng = np.random.RandomState(seed)  # the legacy stream np.random.seed(42) gives, not global
    x = rng.rand(n, 1)
    y = true_b + true_w * x + noise * rng.randn(n, 1)
    idx = np.arange(n)
    rng.shuffle(idx)
    cut = int(n * train_share)
    frame = pd.DataFrame({"x": x[:, 0], "y": y[:, 0]})
    return frame.iloc[idx[:cut]].reset_index(drop=True), frame.iloc[idx[cut:]].reset_index(drop=True)


def toy_binary(n: int = 20, seed: int = 0) -> tuple[pd.DataFrame, None]:
    """Course seed 002's toy data: x ~ N(0, I_3) and two 0/1 targets of x.

    y1 is 1 where |x1 + x2| (if x3 > 0) or |x1 - x2| (if x3 < 0) exceeds 1.33, y2 where
    the norm of x does. The draw is `torch.randn(n, 3)` after seeding with `seed`, as in
    the seed, but from a private generator so no global state is touched.
    """
    import torch  # lazily: only this generator needs torch here

    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed))
    upper, lower = (x[:, 2] > 0).to(x.dtype), (x[:, 2] < 0).to(x.dtype)
    mixed = (x[:, 0] + x[:, 1]) * upper + (x[:, 0] - x[:, 1]) * lower
    y = (torch.stack([mixed, x.norm(dim=1)], dim=1).abs() > 1.33).to(x.dtype)
    frame = pd.DataFrame(x.numpy(), columns=["x1", "x2", "x3"])
    frame[["y1", "y2"]] = y.numpy()
    return frame, None


def sine(n: int = 2000, low: float = -np.pi, high: float = np.pi) -> tuple[pd.DataFrame, None]:
    """Course seed 003's data: n evenly spaced x in [low, high] and y = sin(x)."""
    x = np.linspace(low, high, n)
    return pd.DataFrame({"x": x, "y": np.sin(x)}), None
