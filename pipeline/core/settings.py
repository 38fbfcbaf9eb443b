"""The records that cross module lines, as frozen dataclasses. Imports nothing of ours.

A `Run` is planned (`plan`), trained (`engines`) into a `RunResult`, and written
(`record`); a `Task` is a chunk of runs one (array) task trains from its `TaskSpec`;
`SweepMeta` is what a sweep folder says about itself (`sweep.json`); `TrainSettings`
is the `train` config section as the loops read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from pipeline.core.meta import SweepMeta, known_fields

SGD_TARGET = "torch.optim.SGD"


@dataclass(frozen=True)
class SGDSettings:
    """`torch.optim.SGD`'s settings that shape its step, with torch's defaults. The engines
    read them from the probed optimiser (`engines.stacked_optim.optimizer_settings`); the
    torch-free learning-rate bound reads them from the config section (`from_config`)."""

    momentum: float = 0.0
    dampening: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    maximize: bool = False

    @classmethod
    def from_config(cls, optim: Any) -> Optional["SGDSettings"]:
        """The settings an `optim` config section gives SGD; None when it names another optimiser."""
        if not isinstance(optim, dict) or optim.get("_target_") != SGD_TARGET:
            return None
        return cls(
            float(optim.get("momentum") or 0.0),
            float(optim.get("dampening") or 0.0),
            float(optim.get("weight_decay") or 0.0),
            bool(optim.get("nesterov", False)),
            bool(optim.get("maximize", False)),
        )


@dataclass(frozen=True)
class AdamSettings:
    """`torch.optim.Adam`'s and `AdamW`'s settings that shape their step."""

    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False
    maximize: bool = False
    decoupled_weight_decay: bool = False  # AdamW


@dataclass(frozen=True)
class TrainSettings:
    """The `train` config section, typed: what every training loop reads. Its one definition:
    the config schema's `TrainConf` is a settable copy of these fields (config/schema.py)."""

    epochs: int = 1000
    log_every: int = 100  # epochs between logged losses (the loss curve) and divergence checks
    grad_tol: float = 1e-3  # final gradient norm above this: not_converged
    device: str = "auto"  # auto: CUDA when present, else CPU
    dtype: str = "float32"  # float32 | float64
    engine: str = "auto"  # auto: the fastest engine that applies | reference | batched | gram

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainSettings":
        return cls(**known_fields(cls, values))


@dataclass(frozen=True)
class TaskSpec:
    """Everything a task needs to train its runs: pickled into each task instead of the config.

    The data spec is the `data` config section (a task reads its data once); model, loss
    and optimiser are Hydra `_target_` specs; `threads` caps torch's threads (None: leave).
    """

    data: dict[str, Any]
    model: dict[str, Any]
    loss: dict[str, Any]
    optim: dict[str, Any]
    train: TrainSettings
    meta: SweepMeta
    threads: Optional[int] = None
