"""The learning rate at which full-batch SGD on a least-squares fit stays stable, per run.

For a model linear in its parameters fitted by MSELoss, the loss is quadratic with the
Hessian H = s F^T F (F: the features of the run's rows; s = 2/n for the mean, 2 for the
sum), so one epoch of `torch.optim.SGD` is a linear map of the error theta - theta*,
mode by mode along the eigenvectors of H' = H + weight_decay I (eigenvalues lambda):
    plain       e <- (1 - lr lambda) e                      stable iff 0 < lr < 2 / lambda_max
    heavy ball  v <- m v + c lambda e, e <- e - lr v          stable iff 0 < lr < 2 (1 + m) / (c lambda_max)
    Nesterov    v <- m v + c lambda e, e <- e - lr (lambda e + m v)
                                                    stable iff 0 < lr < 2 (1 + m) / ((1 + m (1 + c)) lambda_max)
(m momentum, c = 1 - dampening; the last two follow from the Jury conditions on each
mode's 2 x 2 map, |trace| < 1 + det < 2; torch starts the buffer at the first gradient,
which changes the first step, not the stability). Without momentum the fastest
learning rate is 2 / (lambda_min + lambda_max); with momentum it is found numerically,
minimising the spectral radius of the modes' maps. The predicted epochs to
`train.grad_tol` are log(tol / g0) / log(rate), g0 the gradient norm at the run's start
and rate that spectral radius at the run's learning rate (directions with lambda = 0
carry no gradient and are left out). With weight decay the fit tends to the ridge
solution, whose loss gradient is not 0: the epochs are then NaN. numpy and scipy only;
computed at aggregation from design.parquet and each run's resample.
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
