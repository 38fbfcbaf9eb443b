"""The learning-rate bound columns of estimates.parquet (`stats.lr_bound.COLUMNS`): stored with
each run by its task since tasks compute them from the run's moments; computed here, from
design.parquet and each run's draw, for runs of older parts."""

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
    """A function giving estimates the `COLUMNS`, where the sweep's model, loss and optimiser
    allow. Tasks store them with each run (`train.engines.stability`); for runs of parts
    written before that, they are computed here from each run's rows: the folder's config and
    design read once, and each draw's curvature computed once, however many grid cells
    aggregation hands it."""
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
        if not all(c in estimates.columns for c in COLUMNS):  # a folder whose parts carry none
            frame = bounds_frame(estimates, *design, reduction, rule, tol, seen, meta.draw_rule)
            return pd.concat([estimates, frame], axis=1)
        missing = estimates[list(COLUMNS)].isna().all(axis=1)  # runs of parts written before tasks stored them
        if not missing.any():
            return estimates
        out = estimates.copy()
        out.loc[missing, list(COLUMNS)] = bounds_frame(
            estimates[missing], *design, reduction, rule, tol, seen, meta.draw_rule
        ).to_numpy()
        return out

    return add
