"""Raw-unit columns of a sweep's tables: coefficients per unit of x, beside those per sd.

A sweep fits on z = (x - x_shift) / x_scale (`data.standardize`, or fixed numbers;
saved in sweep.json). A reader of a published data set wants the coefficients in the
data's own units, so the tables report both, by this convention:

- estimates.parquet: `<name>` stays as fitted (it is what `init`, `ols_<name>`,
  `gap_to_ols` and the loss curves refer to) and `<name>_raw` (and `ols_<name>_raw`)
  are added beside it;
- intervals.parquet: a `units` column; `raw` rows (every method, in the data's own
  units) come first, then the `fitted` rows. A sweep whose x was not transformed has
  `raw` rows only: its fitted units are the raw units.

The raw values exist for models linear in their parameters (`pipeline.models.Features`
and `Polynomial`, read from config.yaml's `model`), through `pipeline.rawunits`' exact
matrix M (theta_raw = M theta); any other model keeps its `fitted` rows, and their note
says "per-sd only". numpy, pandas and PyYAML only: no torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from pipeline.core.meta import SweepMeta
from pipeline.stats.intervals import RAW
from pipeline.stats.raw_units import FeatureSpec, RawUnits, raw_unit_matrix, raw_unit_problem, to_raw
from pipeline.store import read_config

log = logging.getLogger(__name__)

RAW_SUFFIX = "_raw"
_FEATURES, _POLYNOMIAL = "pipeline.models.Features", "pipeline.models.Polynomial"


@dataclass(frozen=True)
class SweepUnits:
    """How a sweep's x was transformed and, when it was, the map to raw units (or why none)."""

    transformed: bool
    raw: Optional[RawUnits] = None
    why_not: str = ""  # transformed, and no raw units: the reason

    @property
    def matrix(self) -> Optional[np.ndarray]:
        return None if self.raw is None else self.raw.matrix

    def label(self, intervals: pd.DataFrame) -> pd.DataFrame:
        """The `units` of an intervals table as the sweep folder reports them (module docstring)."""
        if not self.transformed:
            return intervals.assign(units=RAW)
        if self.raw is not None:
            return intervals
        per_sd = f"per-sd only: {self.why_not}"
        notes = intervals["note"].fillna("")
        return intervals.assign(note=np.where(notes == "", per_sd, notes + "; " + per_sd))


def feature_spec(model: Any) -> Optional[FeatureSpec]:
    """The FeatureSpec of config.yaml's `model` section, or None when it is not a
    `pipeline.models.Features` / `Polynomial` (no raw units then)."""
    if not isinstance(model, dict):
        return None
    target = model.get("_target_")
    try:
        if target == _POLYNOMIAL:
            return FeatureSpec.polynomial(int(model["degree"]))
        if target == _FEATURES:
            return FeatureSpec(
                int(model.get("inputs", 1)),
                int(model.get("degree", 1)),
                tuple(model.get("knots") or ()),
                bool(model.get("intercept", True)),
            )
    except (KeyError, TypeError, ValueError) as err:
        log.warning("no raw units: config.yaml's model %s does not read as %s: %s", model, target, err)
    return None


def is_transformed(meta: SweepMeta) -> bool:
    """Whether x as fitted differs from x as read: a shift other than 0 or a scale other than 1."""
    return any(s != 0.0 for s in meta.x_shift) or any(s != 1.0 for s in meta.x_scale)


def sweep_units(meta: SweepMeta, config: dict[str, Any]) -> SweepUnits:
    """The sweep's units from sweep.json's transform and config.yaml's model."""
    if not is_transformed(meta):
        return SweepUnits(False)
    spec = feature_spec(config.get("model"))
    target = (config.get("model") or {}).get("_target_") if isinstance(config.get("model"), dict) else None
    if spec is None:
        return SweepUnits(
            True,
            why_not=f"x was fitted as (x - shift) / scale and model {target!r} is not "
            "linear in its parameters (Features, Polynomial), so no raw-unit values",
        )
    if spec.n_params != len(meta.param_names):
        return SweepUnits(
            True,
            why_not=f"model {target!r} has {spec.n_params} features but the sweep {len(meta.param_names)} parameters",
        )
    raw = raw_unit_matrix(spec, meta.x_shift, meta.x_scale)
    return SweepUnits(True, raw, "" if raw else raw_unit_problem(spec, meta.x_shift, meta.x_scale) or "")


def folder_units(out_dir: Path, meta: SweepMeta) -> SweepUnits:
    """`sweep_units` of a sweep folder."""
    return sweep_units(meta, read_config(out_dir))


def with_raw_columns(estimates: pd.DataFrame, params: tuple[str, ...], units: SweepUnits) -> pd.DataFrame:
    """`<name>_raw` (and `ols_<name>_raw`) beside the fitted columns, when the sweep has raw units."""
    if units.raw is None or estimates.empty:
        return estimates
    columns = {}
    for prefix in ("", "ols_"):
        names = [prefix + name for name in params]
        if all(c in estimates.columns for c in names):
            raw = to_raw(estimates[names].to_numpy(dtype=float), units.raw.matrix)
            columns.update({c + RAW_SUFFIX: raw[:, j] for j, c in enumerate(names)})
    return _insert_after(estimates, columns, params)


def _insert_after(frame: pd.DataFrame, columns: dict[str, np.ndarray], params: tuple[str, ...]) -> pd.DataFrame:
    """Each new column right after its fitted one: `b, w, b_raw, w_raw` reads better at the end."""
    out = frame.drop(columns=[c for c in columns if c in frame.columns])
    raw_params = [name + RAW_SUFFIX for name in params]
    anchor = list(out.columns).index(params[-1]) + 1
    for offset, name in enumerate(raw_params):
        out.insert(anchor + offset, name, columns[name])
    for name, values in columns.items():
        if name not in out.columns:
            out[name] = values
    return out
