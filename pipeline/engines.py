"""Which engine trains a chunk, and how many of its runs go through it at once.

Engines (`train.engine`):
- `reference`: the textbook loop, one run after the other (`train.train_reference`);
- `batched`: any `nn.Module` with SGD or Adam, the chunk as one torch.func computation;
- `gram`: models linear in their parameters (`FeatureModel`) fitted by MSE with SGD,
  at a per-epoch cost independent of the number of rows;
- `auto`: the fastest of these that applies to the experiment.

A chunk is split into batches that fit the task's device: the engine estimates the
bytes one run needs, and a batch takes at most half the free GPU memory, or a quarter
of the RAM available on a CPU node.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn

from pipeline import batched, gram
from pipeline.config import ConfigError
from pipeline.plan import Run
from pipeline.stacked import resample_size
from pipeline.stacked_optim import SGDSettings, optimizer_name, optimizer_settings
from pipeline.train import Problem, ProblemParts, RunResult

log = logging.getLogger(__name__)

FAST_ENGINES: dict[str, tuple[Callable[..., list[RunResult]], Callable[[Problem], int]]] = {
    gram.ENGINE: (gram.train_gram, gram.bytes_per_run),
    batched.ENGINE: (batched.train_batched, batched.bytes_per_run),
}
GPU_SHARE, RAM_SHARE = 0.5, 0.25
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


BLOCKERS: dict[str, Callable[[ProblemParts], Optional[str]]] = {
    gram.ENGINE: gram_blocker, batched.ENGINE: batched_blocker}


def engine_problems(requested: str, parts: ProblemParts) -> list[str]:
    """Why `train.engine` cannot train this experiment, if it cannot (for `config.validate`)."""
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


def available_memory(device: torch.device) -> tuple[int, str]:
    """Bytes a batch may take on `device`, and where that figure comes from."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * GPU_SHARE), f"{GPU_SHARE:.0%} of {free / 2**30:.1f} GiB free on {device}"
    ram = _available_ram()
    return int(ram * RAM_SHARE), f"{RAM_SHARE:.0%} of {ram / 2**30:.1f} GiB RAM available"


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def batch_size(n_runs: int, run_bytes: int, device: torch.device) -> tuple[int, str]:
    """How many runs go through an engine at once, and a sentence saying why."""
    budget, source = available_memory(device)
    fits = max(1, budget // max(run_bytes, 1))
    return min(n_runs, fits), f"about {run_bytes / 2**10:.1f} KiB per run; {source} fit {fits} runs"


def train_fast(engine: str, problem: Problem, runs: list[Run], train_cfg: dict[str, Any],
               on_batch_done: Callable[[list[RunResult]], None]) -> list[RunResult]:
    """Train `runs` with a fast engine, batch by batch; report each batch when done.

    A batch holds runs with as many rows (jackknife runs, one row short, go together),
    at most as many as fit the memory; results come back in the order of `runs`.
    """
    train, run_bytes = FAST_ENGINES[engine]
    size, why = batch_size(len(runs), run_bytes(problem), problem.device)
    by_rows: dict[int, list[int]] = {}
    for i, run in enumerate(runs):
        by_rows.setdefault(resample_size(problem, run), []).append(i)
    batches = [members[b:b + size] for members in by_rows.values() for b in range(0, len(members), size)]
    apart = f" (runs of {len(by_rows)} data sizes, rows {sorted(by_rows)}, apart)" if len(by_rows) > 1 else ""
    log.info("engine %s on %s: %s; %d runs -> %d batch(es) of up to %d%s", engine, problem.device, why,
             len(runs), len(batches), size, apart)
    results: list[Optional[RunResult]] = [None] * len(runs)
    for batch in batches:
        done = train(problem, [runs[i] for i in batch], train_cfg)
        for i, result in zip(batch, done):
            results[i] = result
        on_batch_done(done)
    return results  # type: ignore[return-value]
