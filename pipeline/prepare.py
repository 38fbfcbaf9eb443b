"""Prepare a sweep: every check before launch, with the data read and the problem built once.

`prepare(cfg)` takes the resolved config, loads the data, instantiates model, loss and
optimiser, checks what a type cannot (numbers, grid, files, columns, values, engine,
interval methods), plans the runs, and returns a `PreparedSweep` that `launch` takes as
it is. Every problem found is collected into one `ConfigError` naming its config key.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from pipeline.config import CLUSTERS, DEVICES, DTYPES, ENGINES
from pipeline.data import Dataset, load_dataset
from pipeline.engines import engine_problems
from pipeline.errors import ConfigError
from pipeline.intervals import CLOSED_FORM_METHODS, METHODS
from pipeline.plan import init_grid, lr_grid, plan
from pipeline.problem import ProblemParts, build_problem_parts, design_matrix
from pipeline.records import RESIDUAL, SCHEMES, STATUSES, Run, SweepMeta, TaskSpec, TrainSettings


@dataclass(frozen=True)
class PreparedSweep:
    """A checked sweep, ready to launch: what `launch` and the tasks need, built once."""

    cfg: dict[str, Any]  # the resolved config: saved as config.yaml; run ids hash it
    out_dir: Path
    dataset: Dataset
    parts: ProblemParts
    meta: SweepMeta
    runs: list[Run]
    train: TrainSettings
    design: Optional[tuple[np.ndarray, np.ndarray]]  # closed-form features and response, if linear

    @property
    def launcher(self) -> dict[str, Any]:
        return self.cfg["launcher"]

    def task_spec(self, threads: Optional[int]) -> TaskSpec:
        cfg = self.cfg
        return TaskSpec(cfg["data"], cfg["model"], cfg["loss"], cfg["optim"], self.train, self.meta, threads)


def _check_lr(cfg: dict[str, Any]) -> list[str]:
    lrs = cfg["sweep"]["lr"]
    if lrs is not None and len(lrs) == 0:
        return ["`sweep.lr` is empty: give at least one learning rate, e.g. sweep.lr=[1e-3]"]
    if lrs is None and "lr" not in (cfg.get("optim") or {}):
        return ["`optim.lr` is not set and `sweep.lr` is null: no learning rate to train with"]
    key = "optim.lr" if lrs is None else "sweep.lr"
    return [f"`{key}` must hold positive finite learning rates; got {lr}"
            for lr in lr_grid(cfg) if not (math.isfinite(lr) and lr > 0)]


def _check_init(cfg: dict[str, Any], n_params: Optional[int]) -> list[str]:
    inits = cfg["sweep"]["init"]
    if inits is not None and len(inits) == 0:
        return ["`sweep.init` is empty: give at least one initial vector, or null for the experiment's init"]
    key, problems = ("init" if inits is None else "sweep.init"), []
    for vec in init_grid(cfg):
        if vec is None:
            continue
        if n_params is not None and len(vec) != n_params:
            problems.append(f"`{key}` vectors need one value per model parameter ({n_params}); got {vec}")
        if not all(math.isfinite(v) for v in vec):
            problems.append(f"`{key}` must hold finite numbers; got {vec}")
    return problems


def _auto_or_positive(value: Any) -> bool:
    return value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)


def _check_numbers(cfg: dict[str, Any]) -> list[str]:
    t, lc, problems = cfg["train"], cfg["launcher"], []
    rules = [
        ("train.epochs", t["epochs"], t["epochs"] >= 1, ">= 1"),
        ("train.log_every", t["log_every"], t["log_every"] >= 1, ">= 1"),
        ("train.grad_tol", t["grad_tol"], t["grad_tol"] > 0, "> 0"),
        ("sweep.resamples", cfg["sweep"]["resamples"], cfg["sweep"]["resamples"] >= 0, ">= 0"),
        ("launcher.runs_per_task", lc["runs_per_task"], _auto_or_positive(lc["runs_per_task"]),
         "auto or an integer >= 1"),
        ("launcher.max_parallel", lc["max_parallel"], lc["max_parallel"] >= 0, ">= 0"),
        ("launcher.timeout_min", lc["timeout_min"], lc["timeout_min"] > 0, "> 0"),
        ("launcher.cpus_per_task", lc["cpus_per_task"], lc["cpus_per_task"] >= 1, ">= 1"),
        ("launcher.mem_gb", lc["mem_gb"], lc["mem_gb"] > 0, "> 0"),
        ("launcher.gpus_per_node", lc["gpus_per_node"], lc["gpus_per_node"] >= 0, ">= 0"),
        ("launcher.array_parallelism", lc["array_parallelism"], lc["array_parallelism"] >= 1, ">= 1"),
        ("launcher.max_array_size", lc["max_array_size"], lc["max_array_size"] is None or lc["max_array_size"] >= 1,
         ">= 1 or null"),
        ("intervals.level", cfg["intervals"]["level"], 0 < cfg["intervals"]["level"] < 1, "between 0 and 1"),
    ]
    problems += [f"`{key}` must be {rule}; got {value}" for key, value, ok, rule in rules if not ok]
    for key, allowed in (("engine", ENGINES), ("dtype", DTYPES), ("device", DEVICES)):
        if t[key] not in allowed:
            problems.append(f"`train.{key}` must be one of {', '.join(allowed)}; got {t[key]!r}")
    if lc["cluster"] not in CLUSTERS:
        problems.append(f"`launcher.cluster` must be one of {', '.join(CLUSTERS)}; got {lc['cluster']!r}")
    elif lc["cluster"] == "slurm" and not lc["dry_run"] and shutil.which("sbatch") is None:
        problems.append("`launcher=slurm` needs `sbatch` on PATH (is this a SLURM login node? "
                        "bash slurm/local-cluster.sh start brings up a local one)")
    return problems


def _check_intervals(cfg: dict[str, Any], closed_form: Optional[bool]) -> list[str]:
    """Interval methods, statuses and resampling scheme, and what each needs of the sweep."""
    ic, sweep, problems = cfg["intervals"], cfg["sweep"], []
    methods = [str(m).lower() for m in ic["methods"] or []]
    problems += [f"`intervals.methods` must hold names from {', '.join(METHODS)}; got {m!r}"
                 for m in methods if m not in METHODS]
    problems += [f"`intervals.statuses` must hold names from {', '.join(STATUSES)}; got {s!r}"
                 for s in ic["statuses"] if s not in STATUSES]
    if not 0 <= ic["max_dropped_share"] <= 1:
        problems.append(f"`intervals.max_dropped_share` must be between 0 and 1; got {ic['max_dropped_share']}")
    if "bca" in methods and not sweep["jackknife"]:
        problems.append("`intervals.methods` includes bca, whose acceleration needs jackknife runs; "
                        "got sweep.jackknife=false (set it true, or drop bca)")
    if sweep["scheme"] not in SCHEMES:
        problems.append(f"`sweep.scheme` must be one of {', '.join(SCHEMES)}; got {sweep['scheme']!r}")
    no_closed_form = "a model linear in its parameters fitted by MSE (e.g. pipeline.models.Polynomial)"
    if closed_form is False and sweep["scheme"] == RESIDUAL:
        problems.append(f"`sweep.scheme` residual needs {no_closed_form}; got model "
                        f"{(cfg.get('model') or {}).get('_target_')!r} with loss {(cfg.get('loss') or {}).get('_target_')!r}")
    wanted = [m for m in methods if m in CLOSED_FORM_METHODS]
    if closed_form is False and wanted:
        problems.append(f"`intervals.methods` {', '.join(wanted)} need {no_closed_form}; got model "
                        f"{(cfg.get('model') or {}).get('_target_')!r}")
    return problems


def _check_loss_and_optim(cfg: dict[str, Any], parts: ProblemParts, dataset: Dataset) -> list[str]:
    """The loss must give one number on the model's output, and the optimiser must accept
    its keyword arguments: a misspelt `momentum` would otherwise fail in every task."""
    model = parts.make_model()
    rows = slice(0, 2)
    try:
        loss = parts.loss_fn(model(torch.tensor(dataset.x[rows], dtype=torch.float32)),
                             torch.tensor(dataset.y[rows], dtype=torch.float32))
    except Exception as err:  # noqa: BLE001 - any failure here is the user's loss spec
        return [f"`loss` ({cfg['loss'].get('_target_')}) fails on the model's output and y: {err}"]
    if loss.dim() != 0:
        return [f"`loss` ({cfg['loss'].get('_target_')}) must give one number; it gives shape "
                f"{tuple(loss.shape)} (reduction 'none'?)"]
    try:
        parts.make_optim(model.parameters(), lr=1e-3)
    except Exception as err:  # noqa: BLE001
        return [f"`optim` ({cfg['optim'].get('_target_')}) cannot be built with these arguments: {err}"]
    return []


def sweep_meta(cfg: dict[str, Any], dataset: Dataset, parts: ProblemParts) -> SweepMeta:
    return SweepMeta(cfg["experiment"], parts.param_names, parts.closed_form, dataset.digest(), dataset.source,
                     dataset.n_rows, dataset.x_names, dataset.y_names, dataset.x_shift, dataset.x_scale,
                     bool(cfg["data"].get("standardize")))


def _load(cfg: dict[str, Any]) -> tuple[Optional[Dataset], Optional[ProblemParts], list[str]]:
    """The data and the problem parts, each built once, and what is wrong with them."""
    try:
        dataset = load_dataset(cfg["data"])
        parts = build_problem_parts(cfg["model"], cfg["loss"], cfg["optim"], dataset)
    except ConfigError as err:
        return None, None, err.problems
    return dataset, parts, _check_loss_and_optim(cfg, parts, dataset) + engine_problems(cfg["train"]["engine"], parts)


def prepare(cfg: dict[str, Any]) -> PreparedSweep:
    """Check everything a sweep needs before a task starts; raise one ConfigError listing
    every problem, or return the prepared sweep (data, problem and plan built once)."""
    problems = _check_numbers(cfg) + _check_lr(cfg)
    dataset, parts, found = _load(cfg)
    problems += found
    problems += _check_init(cfg, parts.n_params if parts else None)
    problems += _check_intervals(cfg, parts.closed_form if parts else None)
    if problems or dataset is None or parts is None:
        raise ConfigError(problems)
    meta = sweep_meta(cfg, dataset, parts)
    runs = plan(cfg, meta.data_digest, meta.n_rows)
    return PreparedSweep(cfg, Path(cfg["out_dir"]).resolve(), dataset, parts, meta, runs,
                         TrainSettings.from_dict(cfg["train"]), design_matrix(parts, dataset))


def validate(cfg: dict[str, Any]) -> None:
    """`prepare`, for its checks alone."""
    prepare(cfg)
