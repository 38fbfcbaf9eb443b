"""The learning-rate bound columns of estimates.parquet (`lr_max_stable`, `lr_fastest`, `rate`,
`epochs_to_tol`): `stats.lr_bound` computes them, per run, at aggregation, from design.parquet
and each run's resample, for a model linear in its parameters fitted by MSE with SGD (its
docstring has the rule); any other sweep gets none.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import pandas as pd

from pipeline import store
from pipeline.core.meta import SweepMeta
from pipeline.stats.lr_bound import COLUMNS, bounds_frame, sgd_rule, why_no_bound
from pipeline.store.folder import read_config

log = logging.getLogger(__name__)


def lr_bounds_adder(out_dir: Path, meta: SweepMeta) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """A function adding `COLUMNS` to estimates, where the sweep's model, loss and optimiser
    allow; the folder's config and design are read once, and each draw's curvature computed
    once, however many grid cells aggregation hands it."""
    if not meta.closed_form:
        return lambda estimates: estimates
    config = read_config(out_dir)
    reason = why_no_bound(config, meta.closed_form)
    design = store.read_design(out_dir, meta.param_names)
    if reason or design is None:
        log.info("no learning-rate bounds in estimates.parquet: %s", reason or f"no {store.DESIGN}")
        return lambda estimates: estimates
    reduction = str((config.get("loss") or {}).get("reduction", "mean"))
    tol = float((config.get("train") or {}).get("grad_tol", 1e-3))
    rule = sgd_rule(config["optim"])
    seen: dict = {}

    def add(estimates: pd.DataFrame) -> pd.DataFrame:
        if estimates.empty:
            return estimates
        frame = bounds_frame(estimates, *design, reduction, rule, tol, seen, meta.draw_rule, meta.draw_settings())
        return pd.concat([estimates.drop(columns=[c for c in COLUMNS if c in estimates.columns]), frame], axis=1)

    return add
