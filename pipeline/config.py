"""Config schema, resolvers and the one validation pass that runs before any task.

The schema is registered in Hydra's ConfigStore, so a misspelt key fails when Hydra
composes the config. `validate` then checks what a type cannot: data files, columns,
values, the grid, the launcher. It collects every problem and raises one
`ConfigError` that names each config key, the rule and the value it got.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = PROJECT_ROOT / "conf"

ENGINES = ("reference", "batched", "gram", "auto")  # auto: the fastest engine that applies (engines.py)
DTYPES = ("float32", "float64")
DEVICES = ("auto", "cpu", "cuda")
CLUSTERS = ("debug", "local", "slurm")


class ConfigError(ValueError):
    """A user's config or data cannot be run; the message lists every problem found."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in the sweep config:\n{lines}")


@dataclass
class DataConf:
    path: Optional[str] = None  # CSV or Parquet with the training rows
    test_path: Optional[str] = None  # optional held-out rows, same columns
    x: Any = "x"  # one column name or a list of them
    y: Any = "y"  # one column name or a list of them
    generate: Any = None  # `_target_` of a function returning (train, test) DataFrames
    rows: Optional[str] = None  # pandas condition selecting rows, e.g. "year <= 2022"
    x_shift: Any = 0.0  # x used = (x - x_shift) / x_scale; a number or one per x column
    x_scale: Any = 1.0
    standardize: bool = False  # x used = (x - mean) / sd of the training rows instead
    test_share: Optional[float] = None  # hold out this share of rows when there is no test file
    split_seed: int = 0  # fixes which rows test_share holds out


@dataclass
class TrainConf:
    epochs: int = 1000
    log_every: int = 100  # epochs between logged losses (the loss curve)
    grad_tol: float = 1e-3  # final gradient norm above this: status not_converged
    device: str = "auto"  # auto: CUDA when present, else CPU
    dtype: str = "float32"
    engine: str = "auto"


@dataclass
class SweepConf:
    name: str = "single"
    # Any, not list[float]: a typed field would resolve `${scaled:${optim.lr},...}`
    # while Hydra merges the sweep group, before the experiment's optim exists.
    lr: Any = None  # list of learning rates; None: the experiment's optim.lr
    init: Any = None  # list of initial vectors; None: the experiment's init
    resamples: int = 0  # bootstrap draws besides resample 0, the original rows
    seed: int = 0  # with the resample index, fixes each draw's rows
    scheme: str = "case"  # case: resample (x, y) rows | residual: resample OLS residuals (linear models)
    jackknife: bool = False  # one leave-one-row-out run per data row (BCa's acceleration)


@dataclass
class LauncherConf:
    """How tasks run. SLURM keys carry submitit's names (slurm/README.md maps them to sbatch)."""

    name: str = "local"
    cluster: str = "local"  # submitit cluster: debug | local | slurm
    runs_per_task: int = 10  # training runs one task (array task) trains
    max_parallel: int = 0  # local: tasks at once (0: one per CPU core)
    timeout_min: int = 60  # the task's wall-clock limit (sbatch --time)
    progress: bool = True  # a progress bar of runs done / total
    wait: bool = True  # slurm: block until the sweep ends (false: submit and return)
    dry_run: bool = False  # print plan, arrays and sbatch script; submit nothing
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    cpus_per_task: int = 1
    mem_gb: float = 2.0
    gpus_per_node: int = 0
    gres: Optional[str] = None
    array_parallelism: int = 256  # at most this many array tasks at once (the %N throttle)
    signal_delay_s: int = 90  # USR2 this long before the time limit: checkpoint and requeue
    max_num_timeout: int = 3  # requeues after a timeout before giving up
    max_array_size: Optional[int] = None  # None: the cluster's MaxArraySize (scontrol)
    additional_parameters: dict[str, Any] = field(default_factory=dict)  # other sbatch --key=value
    setup: list[str] = field(default_factory=list)  # shell lines before the task (module load, venv)


@dataclass
class IntervalsConf:
    level: float = 0.95
    statuses: list[str] = field(default_factory=lambda: ["ok"])  # runs used
    # None: every method that applies (percentile, basic, normal; bca with jackknife runs;
    # t and hc3 for models linear in their parameters fitted by MSE)
    methods: Optional[list[str]] = None
    max_dropped_share: float = 0.1  # warn when a cell drops more than this share of its draws
    plots: bool = True  # PNGs of the bootstrap distributions (and the lr/init grid) beside the tables


@dataclass
class PipelineConf:
    experiment: str = MISSING
    data: DataConf = field(default_factory=DataConf)
    model: Any = MISSING  # `_target_` of an nn.Module and its arguments
    init: Optional[list[float]] = None  # flat initial parameter vector
    loss: Any = MISSING  # `_target_` of a loss module
    optim: Any = MISSING  # `_target_` of a torch.optim class, `_partial_: true`
    train: TrainConf = field(default_factory=TrainConf)
    sweep: SweepConf = field(default_factory=SweepConf)
    launcher: LauncherConf = field(default_factory=LauncherConf)
    intervals: IntervalsConf = field(default_factory=IntervalsConf)
    data_dir: str = MISSING
    out_dir: str = MISSING


@dataclass
class AggregateConf:
    out_dir: str = MISSING
    intervals: IntervalsConf = field(default_factory=IntervalsConf)


@dataclass
class CoverageConf(PipelineConf):
    """`pipeline-coverage`: the experiment's config plus how to simulate from a known truth."""

    reps: int = 500  # simulated data sets, each with its own whole bootstrap
    rows: Optional[int] = None  # rows per simulated data set; None: as many as the experiment's data
    truth: Optional[list[float]] = None  # true parameters; None: the OLS fit of the experiment's data
    noise_sd: Optional[float] = None  # sd of the Gaussian noise; None: residual sd of that fit
    fits: str = "train"  # train: gradient descent (train_chunk) | closed_form: OLS on each resample
    seed: int = 0  # with the replicate index, fixes each simulated data set


def _scaled(base: float, factors: Any) -> ListConfig:
    """`${scaled:${optim.lr},[0.1,1,10]}`: a grid of multiples of one value."""
    return OmegaConf.create([float(f"{float(base) * float(f):.12g}") for f in factors])


def _scaled_vectors(base: Any, factors: Any) -> ListConfig:
    """`${scaled_vectors:${init},[0,0.5,1,2]}`: multiples of an initial vector."""
    return OmegaConf.create([] if base is None else [[float(v) * float(f) for v in base] for f in factors])


def _bca_requested(methods: Any) -> bool:
    """`${bca_requested:${intervals.methods}}`: plan jackknife runs when bca is asked for."""
    return methods is not None and "bca" in [str(m).lower() for m in methods]


def _n_columns(names: Any) -> int:
    """`${n_columns:${data.x}}`: how many columns a `data.x` / `data.y` value names."""
    return 1 if isinstance(names, str) else len(names)


def register() -> None:
    """Register schema and resolvers; safe to call more than once."""
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)
    OmegaConf.register_new_resolver("n_columns", _n_columns, replace=True)
    OmegaConf.register_new_resolver("scaled", _scaled, replace=True)
    OmegaConf.register_new_resolver("scaled_vectors", _scaled_vectors, replace=True)
    OmegaConf.register_new_resolver("bca_requested", _bca_requested, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="pipeline_schema", node=PipelineConf)
    cs.store(name="aggregate_schema", node=AggregateConf)
    cs.store(name="coverage_schema", node=CoverageConf)


register()


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """Resolved plain-dict copy of a config: what tasks receive and run ids hash."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]


def lr_grid(cfg: dict[str, Any]) -> list[float]:
    lrs = cfg["sweep"]["lr"]
    return [float(cfg["optim"]["lr"])] if lrs is None else [float(v) for v in lrs]


def init_grid(cfg: dict[str, Any]) -> list[Optional[list[float]]]:
    """The distinct initial vectors of the grid, in order (a repeat would be the same runs)."""
    inits = cfg["sweep"]["init"]
    if inits is None:
        return [cfg["init"]]
    unique = []
    for vec in ([float(v) for v in vec] for vec in inits):
        if vec not in unique:
            unique.append(vec)
    return unique


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


def _check_numbers(cfg: dict[str, Any]) -> list[str]:
    t, lc, problems = cfg["train"], cfg["launcher"], []
    rules = [
        ("train.epochs", t["epochs"], t["epochs"] >= 1, ">= 1"),
        ("train.log_every", t["log_every"], t["log_every"] >= 1, ">= 1"),
        ("train.grad_tol", t["grad_tol"], t["grad_tol"] > 0, "> 0"),
        ("sweep.resamples", cfg["sweep"]["resamples"], cfg["sweep"]["resamples"] >= 0, ">= 0"),
        ("launcher.runs_per_task", lc["runs_per_task"], lc["runs_per_task"] >= 1, ">= 1"),
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
    from pipeline.intervals import CLOSED_FORM_METHODS, METHODS
    from pipeline.plan import RESIDUAL, SCHEMES
    from pipeline.train import STATUSES

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


def _check_loss_and_optim(cfg: dict[str, Any], parts: Any, dataset: Any) -> list[str]:
    """The loss must give one number on the model's output, and the optimiser must accept
    its keyword arguments: a misspelt `momentum` would otherwise fail in every task."""
    import torch

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


def validate(cfg: dict[str, Any]) -> None:
    """Check everything a sweep needs before a task starts; raise one ConfigError.

    Loads the data and builds the model once, so a bad file, column, value or
    `_target_` is found here rather than in a thousand array tasks.
    """
    from pipeline.data import load_dataset
    from pipeline.engines import engine_problems
    from pipeline.train import build_problem_parts

    problems = _check_numbers(cfg) + _check_lr(cfg)
    n_params = closed_form = None
    try:
        dataset = load_dataset(cfg["data"])
        parts = build_problem_parts(cfg, dataset)
        n_params, closed_form = parts.n_params, parts.closed_form
        problems += _check_loss_and_optim(cfg, parts, dataset)
        problems += engine_problems(cfg["train"]["engine"], parts)
    except ConfigError as err:
        problems += err.problems
    problems += _check_init(cfg, n_params) + _check_intervals(cfg, closed_form)
    if problems:
        raise ConfigError(problems)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
