"""What the interval methods read of each run besides its fitted parameters: its kind, its
parameters in raw units (a linear map of each draw, `pipeline.rawunits`), and its own OLS
standard errors (the studentized method). numpy and pandas only: a reader of sweep folders."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from pipeline.core.resampling import DRAW_RULE
from pipeline.core.runs import BOOTSTRAP, ORIGINAL, resample_kind
from pipeline.stats.raw_units import to_raw
from pipeline.stats.studentized import draw_covariances, standard_errors

SE_PREFIX = "__se__"  # prefix of the per-draw OLS standard-error columns the studentized method reads


def kinds_of(frame: pd.DataFrame) -> pd.Series:
    """Each run's kind (original, bootstrap, jackknife): the `kind` column, else from `resample`."""
    from_resample = frame["resample"].map(resample_kind)
    if "kind" not in frame.columns:
        return from_resample
    return frame["kind"].where(frame["kind"].notna(), from_resample)


def with_draw_se(
    estimates: pd.DataFrame,
    params: Sequence[str],
    X: np.ndarray,
    y: np.ndarray,
    matrix: Optional[np.ndarray],
    covs: Optional[np.ndarray],
    draw_rule: str = DRAW_RULE,
    draw_settings: Optional[Mapping[str, Any]] = None,
) -> pd.DataFrame:
    """The estimates with each original and bootstrap run's own OLS se beside its parameters
    (`covs`: their covariances, else computed here from draws by `draw_rule` and `draw_settings`)."""
    kinds = kinds_of(estimates)
    runs = estimates[kinds.isin([ORIGINAL, BOOTSTRAP])]
    se = standard_errors(draw_covariances(runs, X, y, draw_rule, draw_settings) if covs is None else covs, matrix)
    columns = {
        SE_PREFIX + name: pd.Series(se[:, j], index=runs.index).reindex(estimates.index)
        for j, name in enumerate(params)
    }
    return estimates.assign(**columns)


def in_raw_units(estimates: pd.DataFrame, params: Sequence[str], matrix: np.ndarray) -> pd.DataFrame:
    """The estimates with every run's parameters (and `ols_` fit, where present) mapped to
    raw units: theta_raw = M theta, a linear map of each draw."""
    out = estimates.copy()
    out[list(params)] = to_raw(estimates[list(params)].to_numpy(dtype=float), matrix)
    ols = [f"ols_{name}" for name in params]
    if all(c in estimates.columns for c in ols):
        out[ols] = to_raw(estimates[ols].to_numpy(dtype=float), matrix)
    return out


def raw_matrix_iv(raw_units: Optional[np.ndarray], params: Sequence[str]) -> Optional[np.ndarray]:
    if raw_units is None:
        return None
    matrix = np.asarray(raw_units, dtype=float)
    if matrix.shape != (len(params), len(params)) or not np.isfinite(matrix).all():
        raise ValueError(
            f"`raw_units` must be a finite ({len(params)}, {len(params)}) matrix (theta_raw = M theta); "
            f"got shape {matrix.shape}"
        )
    return matrix
