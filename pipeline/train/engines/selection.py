"""Which engine can train an experiment, and which one `auto` takes.

Engines (`train.engine`):
- `reference`: the textbook loop, one run after the other (`reference.train_reference`);
- `batched`: any `nn.Module` with SGD or Adam, the chunk as one torch.func computation;
- `gram`: models linear in their parameters (`FeatureModel`) fitted by MSE with SGD,
  at a per-epoch cost independent of the number of rows;
- `auto`: the fastest of these that applies to the experiment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from torch import nn

from pipeline.core.errors import ConfigError
from pipeline.train.engines.stacked_optim import SGDSettings, optimizer_name, optimizer_settings
from pipeline.train.problem import ProblemParts

# Modules whose training-mode forward changes state or draws random numbers: their runs
# cannot be vmapped into the reference loop's numbers.
_STATEFUL = (nn.modules.batchnorm._NormBase, nn.modules.dropout._DropoutNd)


@dataclass(frozen=True)
class EngineChoice:
    name: str
    reason: str


def gram_blocker(parts: ProblemParts) -> Optional[str]:
    """Why the Gram engine cannot train this experiment, or None if it can."""
    if not parts.closed_form:
        return "it needs a model linear in its parameters (a FeatureModel) and torch.nn.MSELoss"
    if parts.loss_fn.reduction not in ("mean", "sum"):
        return f"it needs MSELoss with reduction 'mean' or 'sum'; got {parts.loss_fn.reduction!r}"
    if not isinstance(optimizer_settings(parts.make_optim), SGDSettings):
        return f"it needs torch.optim.SGD; got {optimizer_name(parts.make_optim)}"
    return None


def batched_blocker(parts: ProblemParts) -> Optional[str]:
    """Why the batched engine cannot train this experiment, or None if it can."""
    if optimizer_settings(parts.make_optim) is None:
        return f"it steps SGD, Adam and AdamW only; got {optimizer_name(parts.make_optim)}"
    model = parts.make_model()
    stateful = [type(m).__name__ for m in model.modules() if isinstance(m, _STATEFUL)]
    if stateful:
        return f"the model has {', '.join(stateful)}, whose training forward is stateful or random"
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    if frozen:
        return f"the model has frozen parameters ({', '.join(frozen)}), which it would train"
    return None


BLOCKERS: dict[str, Callable[[ProblemParts], Optional[str]]] = {"gram": gram_blocker, "batched": batched_blocker}


def engine_problems(requested: str, parts: ProblemParts) -> list[str]:
    """Why `train.engine` cannot train this experiment, if it cannot (for `prepare`)."""
    why = BLOCKERS[requested](parts) if requested in BLOCKERS else None
    return [f"`train.engine` {requested!r} cannot train this experiment: {why}"] if why else []


def choose_engine(parts: ProblemParts, requested: str) -> EngineChoice:
    """The engine that trains a chunk; `auto`: Gram, else batched, else the reference loop."""
    if requested == "reference":
        return EngineChoice("reference", "train.engine=reference")
    if requested in BLOCKERS:
        problems = engine_problems(requested, parts)
        if problems:
            raise ConfigError(problems)
        return EngineChoice(requested, f"train.engine={requested}")
    reasons = []
    for name, blocker in BLOCKERS.items():
        why = blocker(parts)
        if why is None:
            return EngineChoice(name, "auto: " + "; ".join(reasons + [f"{name} applies"]))
        reasons.append(f"not {name}: {why}")
    return EngineChoice("reference", "auto: " + "; ".join(reasons))
