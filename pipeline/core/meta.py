"""`SweepMeta`: what a sweep folder says about itself (`sweep.json`), read without the config."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Optional

# The draw rules (how bootstrap draws are made: `core.resampling`), named here without numpy
# so that reading sweep.json (or answering --help) imports none.
LEGACY_RULE = "default_rng"  # one numpy Generator per draw: a folder whose sweep.json names no rule
KEYED_RULE = "splitmix64"  # counter-based, vectorised over draws
DRAW_RULE = KEYED_RULE  # the rule new sweeps get
DRAW_RULES = (LEGACY_RULE, KEYED_RULE)


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
    # how bootstrap draws are made (`core.resampling`): kept for the folder's life, so its runs stay valid
    draw_rule: str = DRAW_RULE
    # SGD on a least-squares fit: each task stores its runs' learning-rate bounds (stats.lr_bound.COLUMNS)
    lr_bounds: bool = False
    # whether the model's output is linear in its parameters (checked at launch); None: not
    # recorded (a folder from before). Not linear (an MLP): single parameters need not be
    # identifiable, so the answer is what the model predicts (`store.DATA_POINTS`).
    linear_in_params: Optional[bool] = None
    # what the draws of the block and wild schemes read (None where the scheme reads none): the
    # (mean) block length, `sweep.block_length` or its Politis-White estimate, and the wild weights
    block_length: Optional[float] = None
    wild_weights: Optional[str] = None

    def draw_settings(self) -> dict[str, Any]:
        """The settings the sweep's draws read (`core.resampling.draw`); empty for case and residual."""
        return {
            k: v for k, v in (("block_length", self.block_length), ("wild_weights", self.wild_weights)) if v is not None
        }

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "SweepMeta":
        known = {"draw_rule": LEGACY_RULE, **known_fields(cls, values)}  # named since the second rule
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in known.items()})
