"""The records that cross module lines, as frozen dataclasses. Imports nothing of ours.

A `Run` is planned (`plan`), trained (`engines`) into a `RunResult`, and written
(`record`); a `Task` is a chunk of runs one (array) task trains from its `TaskSpec`;
`SweepMeta` is what a sweep folder says about itself (`sweep.json`); `TrainSettings`
is the `train` config section as the loops read it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Optional


def known_fields(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in values.items() if k in names}


@dataclass(frozen=True)
class SweepMeta:
    """What a sweep folder records about its sweep (`sweep.json`), read without the config."""

    experiment: str
    param_names: tuple[str, ...]
    closed_form: bool  # linear in its parameters and fitted by MSE: OLS is the optimum
    data_digest: str
    data_source: str
    n_rows: int
    x_names: tuple[str, ...] = ()
    y_names: tuple[str, ...] = ()
    # x as fitted = (x as read - x_shift) / x_scale, per x column
    x_shift: tuple[float, ...] = ()
    x_scale: tuple[float, ...] = ()
    standardize: bool = False
    # whether the model's output is linear in its parameters (checked at launch); None: not
    # recorded (a folder from before). Not linear (an MLP): single parameters need not be
    # identifiable, so the answer is what the model predicts (`store.DATA_POINTS`).
    linear_in_params: Optional[bool] = None

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "SweepMeta":
        known = known_fields(cls, values)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in known.items()})
