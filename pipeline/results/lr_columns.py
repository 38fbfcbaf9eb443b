"""The learning-rate bound columns of estimates.parquet (`stats.lr_bound.COLUMNS`): stored with
each run by its task since tasks compute them from the run's moments; computed here, from
design.parquet and each run's draw, for runs of older parts."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from pipeline import store
from pipeline.core.meta import SweepMeta
from pipeline.core.runs import NOT_CONVERGED
from pipeline.core.settings import PARAM_TOL
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
    train = config.get("train") or {}
    tol, param_tol = float(train.get("grad_tol", 1e-3)), float(train.get("param_tol", PARAM_TOL))
    rule = sgd_rule(config["optim"])
    seen: dict = {}

    def bounds_of(runs: pd.DataFrame) -> pd.DataFrame:
        return bounds_frame(runs, *design, reduction, rule, tol, seen, meta.draw_rule, meta.draw_settings())

    def with_bounds(estimates: pd.DataFrame) -> pd.DataFrame:
        if not all(c in estimates.columns for c in COLUMNS):  # a folder whose parts carry none
            return pd.concat([estimates, bounds_of(estimates)], axis=1)
        missing = estimates[list(COLUMNS)].isna().all(axis=1)  # runs of parts written before tasks stored them
        if not missing.any():
            return estimates
        out = estimates.copy()
        out.loc[missing, list(COLUMNS)] = bounds_of(estimates[missing]).to_numpy()
        return out

    def add(estimates: pd.DataFrame) -> pd.DataFrame:
        if estimates.empty:
            return estimates
        return with_epochs_left(with_bounds(estimates), meta.param_names, param_tol)

    return add


def epochs_left(estimates: pd.DataFrame, names: Sequence[str], param_tol: float) -> np.ndarray:
    """(runs,) epochs more at each run's own contraction `rate` for its parameters to come within
    `param_tol` of the closed-form optimum: log(param_tol scale / gap) / log(rate), the slowest
    mode's count (late in a run the gap lies along it); NaN where the run is within it already,
    or the rate is unknown or not below 1."""
    ols = estimates[[f"ols_{n}" for n in names]].to_numpy(dtype=float)
    scale = np.abs(ols).max(axis=1)
    target = param_tol * np.where(scale > 0, scale, 1.0)
    gap, rate = estimates["gap_to_ols"].to_numpy(dtype=float), estimates["rate"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.log(target / gap) / np.log(rate)
    return np.where((gap > target) & (rate > 0) & (rate < 1), left, np.nan)


def with_epochs_left(estimates: pd.DataFrame, names: Sequence[str], param_tol: float) -> pd.DataFrame:
    """`status_note` of each not_converged run, with the epochs it would still need where its
    learning-rate bound knows its contraction rate (what the task that judged it did not know)."""
    needed = {"status", "status_note", "gap_to_ols", "rate", *(f"ols_{n}" for n in names)}
    if not needed <= set(estimates.columns):
        return estimates
    left = epochs_left(estimates, names, param_tol)
    todo = np.flatnonzero((estimates["status"] == NOT_CONVERGED).to_numpy() & np.isfinite(left))
    if not len(todo):
        return estimates
    notes = estimates["status_note"].astype(object).to_numpy(copy=True)
    for i in todo:
        epochs = int(estimates["epochs"].iloc[i]) if "epochs" in estimates.columns else None
        trained = f" (trained {epochs:.3g})" if epochs is not None else ""
        more = f"about {left[i]:.2g} more epochs at this lr to reach train.param_tol{trained}"
        notes[i] = f"{notes[i]}; {more}" if notes[i] else more
    return estimates.assign(status_note=notes)
