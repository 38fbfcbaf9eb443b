"""predictions.parquet: prediction intervals of the fitted function at `intervals.at`.

Models linear in their parameters (`Features`, `Polynomial`) are predicted torch-free
(`pipeline.prediction_intervals.linear_predictions`); any other model (the MLP) is rebuilt
from config.yaml's `model` `_target_` spec and each run's flat parameter vector is loaded
into it, runs batched with torch.func.functional_call + vmap. The intervals themselves
come from the reader `pipeline.prediction_intervals`. Called by cli at the end of a sweep
and by pipeline-aggregate, only when `intervals.at` is set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from pipeline import store
from pipeline.config.points import read_points, to_fitted
from pipeline.results.raw_columns import feature_spec
from pipeline.stats.ols import fit_design
from pipeline.stats.prediction import (
    RUN_COLUMNS,
    check_x_names,
    linear_predictions,
    prediction_column,
    prediction_intervals,
)
from pipeline.stats.raw_units import feature_matrix
from pipeline.store.folder import read_config

CHUNK = 4096  # runs per vmap batch


def model_predictions(
    model_spec: dict[str, Any], estimates: pd.DataFrame, params: Sequence[str], x_fitted: np.ndarray
) -> np.ndarray:
    """(runs, points, outputs): each run's model (its flat parameter vector) at x, in float64."""
    import torch
    from hydra.utils import instantiate
    from torch.func import functional_call

    model = instantiate(model_spec).to(torch.float64)
    shapes = [(name, p.shape, p.numel()) for name, p in model.named_parameters()]
    flat = torch.tensor(estimates[list(params)].to_numpy(dtype=float), dtype=torch.float64)
    x = torch.tensor(x_fitted, dtype=torch.float64)

    def one(vector):
        chunks, start = {}, 0
        for name, shape, n in shapes:
            chunks[name] = vector[start : start + n].reshape(shape)
            start += n
        return functional_call(model, chunks, (x,))

    out = []
    with torch.no_grad():
        for i in range(0, len(flat), CHUNK):
            out.append(torch.vmap(one)(flat[i : i + CHUNK]))
    values = torch.cat(out).numpy() if out else np.zeros((0, len(x_fitted), 1))
    return values.reshape(len(flat), len(x_fitted), -1)


def write_predictions(
    out_dir: Path,
    *,
    at: Any,
    level: float = 0.95,
    statuses: Sequence[str] = ("ok",),
    methods: Optional[Sequence[str]] = None,
    max_dropped_share: float = 0.1,
    hac_lags: Optional[int] = None,
) -> Optional[Path]:
    """predictions.parquet of a sweep folder (None when `at` is not set).

    A bad `at`, or an x column named like a column of the table, is a ConfigError raised
    before anything is written (the other tables of the folder are left as they are).
    """
    if at is None:
        return None
    out_dir = Path(out_dir)
    meta = store.read_meta(out_dir)
    check_x_names(meta.x_names)
    points = read_points(at, meta.x_names)
    x_fitted = to_fitted(points, meta.x_shift, meta.x_scale)
    estimates = pd.read_parquet(out_dir / store.ESTIMATES)
    config = read_config(out_dir)
    params = list(meta.param_names)
    spec = feature_spec(config.get("model"))
    outputs = list(meta.y_names) or ["y"]
    design, features = None, None
    if spec is not None and spec.n_params == len(params):
        features = feature_matrix(spec, x_fitted)
        preds = linear_predictions(estimates, params, features)
        outputs = outputs[:1]
        saved = store.read_design(out_dir, params) if meta.closed_form else None
        if saved is not None:
            design = fit_design(*saved, hac_lags)
    else:
        values = model_predictions(config["model"], estimates, params, x_fitted)
        keep = [c for c in RUN_COLUMNS if c in estimates.columns]
        columns = {
            prediction_column(i, o): values[:, i, o] for i in range(values.shape[1]) for o in range(values.shape[2])
        }
        preds = estimates[keep].reset_index(drop=True).assign(**columns)
        outputs = outputs[: values.shape[2]] + [f"y{o}" for o in range(len(outputs), values.shape[2])]
    table = prediction_intervals(
        preds,
        points,
        x_names=list(meta.x_names),
        outputs=outputs,
        methods=methods,
        level=level,
        statuses=statuses,
        max_dropped_share=max_dropped_share,
        design=design,
        features=features if design is not None else None,
    )
    path = out_dir / store.PREDICTIONS
    store.write_frame(table, path)
    return path
