"""Prepare a sweep: every check before launch, with the data read and the problem built once.

`prepare(cfg)` takes the resolved config, loads the data, instantiates model, loss and
optimiser, checks what a type cannot (numbers, grid, files, columns, values, engine,
interval methods), plans the runs, and returns a `PreparedSweep` that `launch` takes as
it is. Every problem found is collected into one `ConfigError` naming its config key.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from pipeline import store
from pipeline.config.schema import DEVICES, DTYPES, ENGINES, scaled_values
from pipeline.core.errors import ConfigError
from pipeline.core.meta import SweepMeta
from pipeline.core.resampling import DRAW_RULE, KEYED_RULE, residual_fit
from pipeline.core.runs import (
    BLOCK_SCHEMES,
    CIRCULAR_BLOCK,
    MOVING_BLOCK,
    RESIDUAL,
    SCHEMES,
    STATUSES,
    WILD,
    WILD_WEIGHTS,
    Run,
)
from pipeline.core.settings import PARAM_TOL, TaskSpec, TrainSettings
from pipeline.data.load import Dataset, load_dataset, split_seed_problems
from pipeline.launch.backends import Backend, backend_for
from pipeline.launch.identity import other_sweep_problems
from pipeline.stats.block_length import draw_settings
from pipeline.stats.intervals import BOOTSTRAP_METHODS, CLOSED_FORM_METHODS, DESIGN_METHODS, METHODS
from pipeline.stats.lr_bound import resolve_auto_lr, why_no_bound
from pipeline.stats.ols import closed_form_problem
from pipeline.sweep.plan import plan
from pipeline.train.engines import engine_problems
from pipeline.train.problem import (
    ProblemParts,
    build_problem_parts,
    design_matrix,
    linear_in_params,
    probe_optimizer,
)

log = logging.getLogger(__name__)


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


def _as_number(value: Any) -> Optional[float]:
    """A config value as a float, or None when it is no number (text, a list, a bool)."""
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _scaled_from_optim_lr(cfg: dict[str, Any]) -> bool:
    """Whether `sweep.lr` is `optim.lr` x `lr_grid_factors` (sweep=story, sweep=lr_grid): then a
    bad value there is a mistake in one of those two keys, which is what the user typed."""
    lrs, base, factors = cfg["sweep"]["lr"], (cfg.get("optim") or {}).get("lr"), cfg.get("lr_grid_factors")
    if not isinstance(lrs, list) or _as_number(base) is None or not isinstance(factors, list):
        return False
    if any(_as_number(f) is None for f in factors) or any(_as_number(v) is None for v in lrs):
        return False
    return [float(v) for v in lrs] == scaled_values(base, factors)


def _scaled_lr_problems(cfg: dict[str, Any]) -> list[str]:
    """One problem naming `optim.lr` (or `lr_grid_factors`) for a grid scaled from it."""
    base, factors, lrs = cfg["optim"]["lr"], cfg["lr_grid_factors"], cfg["sweep"]["lr"]
    where = f"sweep={cfg['sweep'].get('name')} runs optim.lr x lr_grid_factors as sweep.lr = {lrs}"
    if not _positive_finite(base):
        return [f"`optim.lr` must be a positive finite learning rate; got {_shown(base)} ({where})"]
    bad = [f for f in factors if not _positive_finite(f)]
    return [f"`lr_grid_factors` must hold positive finite factors; got {', '.join(map(_shown, bad))} ({where})"]


def _check_lr(cfg: dict[str, Any]) -> list[str]:
    lrs = cfg["sweep"]["lr"]
    if lrs is not None and not isinstance(lrs, list):
        return [f"`sweep.lr` must be a list of learning rates, e.g. sweep.lr=[1e-3,1e-2]; got {lrs!r}"]
    if lrs is not None and len(lrs) == 0:
        return ["`sweep.lr` is empty: give at least one learning rate, e.g. sweep.lr=[1e-3]"]
    if lrs is None and "lr" not in (cfg.get("optim") or {}):
        return ["`optim.lr` is not set and `sweep.lr` is null: no learning rate to train with"]
    key, values = ("optim.lr", [cfg["optim"]["lr"]]) if lrs is None else ("sweep.lr", lrs)
    if lrs is not None and not all(map(_positive_finite, lrs)) and _scaled_from_optim_lr(cfg):
        return _scaled_lr_problems(cfg)
    return [
        f"`{key}` must hold positive finite learning rates; got {_shown(lr)}"
        for lr in values
        if not _positive_finite(lr)
    ]


def _shown(value: Any) -> str:
    """A number as the float it is read as (0 -> 0.0), anything else as written ('abc')."""
    number = _as_number(value)
    return repr(value) if number is None else str(number)


def _positive_finite(value: Any) -> bool:
    number = _as_number(value)
    return number is not None and 0 < number < math.inf


def _vector_problems(vec: Any, key: str, n_params: Optional[int]) -> list[str]:
    """What is wrong with one initial vector: its type, its length, its values."""
    if not isinstance(vec, list):
        return [f"`{key}` vectors must be lists of numbers, one per model parameter; got {vec!r}"]
    numbers = [_as_number(v) for v in vec]
    if any(n is None for n in numbers):
        return [f"`{key}` must hold numbers; got {vec!r}"]
    problems = []
    if n_params is not None and len(vec) != n_params:
        problems.append(f"`{key}` vectors need one value per model parameter ({n_params}); got {vec}")
    if not all(math.isfinite(n) for n in numbers):
        problems.append(f"`{key}` must hold finite numbers; got {vec}")
    return problems


def _check_init(cfg: dict[str, Any], n_params: Optional[int]) -> list[str]:
    inits = cfg["sweep"]["init"]
    if inits is None:
        return [] if cfg.get("init") is None else _vector_problems(cfg["init"], "init", n_params)
    if not isinstance(inits, list):
        return [f"`sweep.init` must be a list of initial vectors, e.g. sweep.init=[[0,0],[1,1]]; got {inits!r}"]
    if len(inits) == 0:
        return ["`sweep.init` is empty: give at least one initial vector, or null for the experiment's init"]
    if all(_as_number(v) is not None for v in inits):
        return [
            f"`sweep.init` is a list of initial vectors; got one flat vector {inits!r}: "
            f"write sweep.init=[{inits!r}] (or init={inits!r})".replace("'", "")
        ]
    problems = [p for vec in inits for p in _vector_problems(vec, "sweep.init", n_params)]
    return list(dict.fromkeys(problems))


def _rule_problems(rules: list[tuple[str, Any, str]]) -> list[str]:
    """(key, value, rule) triples -> a message for each value its rule refuses."""
    tests = {
        ">= 0": lambda v: v >= 0,
        ">= 1": lambda v: v >= 1,
        "> 0": lambda v: v > 0,
        "finite and > 0": lambda v: 0 < v < math.inf,
        "between 0 and 1": lambda v: 0 < v < 1,
        ">= 1 or null": lambda v: v >= 1,
    }
    problems = []
    for key, value, rule in rules:
        if value is None and rule.endswith("or null"):
            continue
        number = _as_number(value)
        if number is None or not tests[rule](number):
            hint = " (a share: 0.95, not 95)" if key == "intervals.level" and (number or 0) > 1 else ""
            problems.append(f"`{key}` must be {rule}; got {value!r}{hint}")
    return problems


def _auto_or_positive(value: Any) -> bool:
    return value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)


def _check_numbers(cfg: dict[str, Any]) -> list[str]:
    t, lc, sw = cfg["train"], cfg["launcher"], cfg["sweep"]
    rules = [
        ("train.epochs", t["epochs"], ">= 1"),
        ("train.log_every", t["log_every"], ">= 1"),
        ("train.grad_tol", t["grad_tol"], "> 0"),
        ("train.param_tol", t.get("param_tol", PARAM_TOL), "> 0"),  # an old config.yaml has none
        ("sweep.resamples", sw["resamples"], ">= 0"),
        ("sweep.seed", sw["seed"], ">= 0"),
        ("intervals.level", cfg["intervals"]["level"], "between 0 and 1"),
    ]
    problems = _rule_problems(rules) + split_seed_problems(cfg["data"])
    if not _auto_or_positive(lc["runs_per_task"]):
        problems.append(f"`launcher.runs_per_task` must be auto or an integer >= 1; got {lc['runs_per_task']!r}")
    for key, allowed in (("engine", ENGINES), ("dtype", DTYPES), ("device", DEVICES)):
        if t[key] not in allowed:
            problems.append(f"`train.{key}` must be one of {', '.join(allowed)}; got {t[key]!r}")
    return problems + _check_launcher(lc, t["device"])


def _check_launcher(launcher: dict[str, Any], device: str) -> list[str]:
    """The backend's own keys and what it needs of this machine."""
    try:
        backend = backend_for(launcher)
    except ConfigError as err:  # no such backend
        return err.problems
    return _rule_problems(backend.rules()) + backend.environment_problems() + _check_device(device, backend)


def _check_device(device: str, backend: Backend) -> list[str]:
    """`train.device=cuda` where the tasks run on this machine needs CUDA here; SLURM tasks
    run on other nodes, which this (login) node cannot see: a warning only."""
    if device != "cuda" or torch.cuda.is_available():
        return []
    build = f"torch {torch.__version__}" + (", a CPU-only build" if torch.version.cuda is None else "")
    if not backend.runs_here:
        log.warning(
            "train.device=cuda: this node has no CUDA device (%s); the SLURM tasks need GPU nodes "
            "(launcher=slurm_gpu or launcher.gpus_per_node)",
            build,
        )
        return []
    return [
        f"`train.device` is 'cuda' but torch finds no CUDA device on this machine ({build}), where "
        f"launcher.cluster={backend.conf.cluster} runs the tasks; available here: cpu "
        "(or auto, which picks CUDA when present)"
    ]


def out_dir_problems(out_dir: Any) -> list[str]:
    """The sweep folder must be a folder that exists or can be created, and be writable.

    Checked by creating (and removing) a probe folder where the sweep folder is or would
    go, so nothing is left behind and a read-only file system or missing permission
    shows as it would to the tasks."""
    path = Path(str(out_dir)).expanduser().absolute()
    if path.exists() and not path.is_dir():
        return [f"`out_dir`: {path} exists and is a file, not a folder: choose another out_dir"]
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return [f"`out_dir`: {path} cannot be created: {parent} is a file, not a folder"]
    try:
        tempfile.TemporaryDirectory(dir=parent, prefix=".pipeline-write-check-").cleanup()
    except OSError as err:
        where = "" if parent == path else f" (the nearest existing folder above it, {parent}, is not writable)"
        return [f"`out_dir`: cannot write to {path}{where}: {err.strerror or err}"]
    return []


def _check_intervals(cfg: dict[str, Any], closed_form: Optional[bool]) -> list[str]:
    """Interval methods, statuses and resampling scheme, and what each needs of the sweep."""
    ic, sweep, problems = cfg["intervals"], cfg["sweep"], []
    methods = [str(m).lower() for m in ic["methods"] or []]
    if ic["methods"] is not None and not methods:
        problems.append(
            f"`intervals.methods` is an empty list: name at least one of {', '.join(METHODS)}, "
            "or null for every method that applies"
        )
    problems += [
        f"`intervals.methods` must hold names from {', '.join(METHODS)}; got {m!r}" for m in methods if m not in METHODS
    ]
    if not ic["statuses"]:
        problems.append(
            f"`intervals.statuses` is an empty list: no run would be used; name at least one of "
            f"{', '.join(STATUSES)} (the default: [ok])"
        )
    problems += [
        f"`intervals.statuses` must hold names from {', '.join(STATUSES)}; got {s!r}"
        for s in ic["statuses"]
        if s not in STATUSES
    ]
    if not 0 <= ic["max_dropped_share"] <= 1:
        problems.append(f"`intervals.max_dropped_share` must be between 0 and 1; got {ic['max_dropped_share']}")
    if "bca" in methods and not sweep["jackknife"]:
        problems.append(
            "`intervals.methods` includes bca, whose acceleration needs jackknife runs; "
            "got sweep.jackknife=false (set it true, or drop bca)"
        )
    hac_lags = ic.get("hac_lags")
    if hac_lags is not None and (isinstance(hac_lags, bool) or not isinstance(hac_lags, int) or hac_lags < 0):
        problems.append(
            f"`intervals.hac_lags` must be a whole number >= 0 (Newey-West lags), or null for "
            f"floor(4 (n/100)^(2/9)); got {hac_lags!r}"
        )
    wanted = [m for m in methods if m in DESIGN_METHODS]
    if closed_form is False and wanted:
        problems.append(
            f"`intervals.methods` {', '.join(wanted)} need {NO_CLOSED_FORM}; got model "
            f"{(cfg.get('model') or {}).get('_target_')!r}"
        )
    if ic.get("at") is not None:
        from pipeline.config.points import read_points, x_names_of
        from pipeline.stats.prediction import check_x_names

        names = x_names_of(cfg["data"]["x"])
        for check, args in ((check_x_names, (names,)), (read_points, (ic["at"], names))):
            try:
                check(*args)
            except ConfigError as err:
                problems += err.problems
    return problems


NO_CLOSED_FORM = "a model linear in its parameters fitted by MSE (e.g. pipeline.models.Polynomial)"


def _check_scheme(cfg: dict[str, Any], closed_form: Optional[bool], n_rows: Optional[int]) -> list[str]:
    """`sweep.scheme` and the settings of its draws: block length, wild weights."""
    sweep = cfg["sweep"]
    scheme, length = sweep["scheme"], sweep.get("block_length", "auto")
    if scheme not in SCHEMES:
        return [f"`sweep.scheme` must be one of {', '.join(SCHEMES)}; got {scheme!r}"]
    problems = []
    if sweep.get("wild_weights", WILD_WEIGHTS[0]) not in WILD_WEIGHTS:
        problems.append(f"`sweep.wild_weights` must be one of {', '.join(WILD_WEIGHTS)}; got {sweep['wild_weights']!r}")
    number = None if length == "auto" else _as_number(length)
    if length != "auto" and (number is None or not 1 <= number < math.inf):
        problems.append(
            f"`sweep.block_length` must be auto (Politis-White on the original fit's residuals) or a number "
            f">= 1; got {length!r}"
        )
    elif number is not None and scheme in (MOVING_BLOCK, CIRCULAR_BLOCK) and number != int(number):
        problems.append(f"`sweep.block_length` of the {scheme} scheme is a whole number of rows; got {length!r}")
    elif number is not None and scheme in BLOCK_SCHEMES and n_rows is not None and number > n_rows:
        problems.append(f"`sweep.block_length` {length!r} is longer than the data ({n_rows} rows)")
    model = (
        f"got model {(cfg.get('model') or {}).get('_target_')!r} with loss {(cfg.get('loss') or {}).get('_target_')!r}"
    )
    if closed_form is False and scheme in (RESIDUAL, WILD):
        problems.append(f"`sweep.scheme` {scheme} needs {NO_CLOSED_FORM}; {model}")
    if closed_form is False and scheme in BLOCK_SCHEMES and length == "auto":
        problems.append(
            f"`sweep.block_length` auto reads the residuals of the closed-form fit, which needs {NO_CLOSED_FORM}; "
            f"{model}: give a number (e.g. sweep.block_length=5)"
        )
    return problems


def _check_loss_and_optim(cfg: dict[str, Any], parts: ProblemParts, dataset: Dataset) -> list[str]:
    """The loss must give one number on the model's output, and the optimiser must accept
    its keyword arguments: a misspelt `momentum` would otherwise fail in every task."""
    model = parts.make_model()
    rows = slice(0, 2)
    try:
        loss = parts.loss_fn(
            model(torch.tensor(dataset.x[rows], dtype=torch.float32)),
            torch.tensor(dataset.y[rows], dtype=torch.float32),
        )
    except Exception as err:  # noqa: BLE001 - any failure here is the user's loss spec
        return [f"`loss` ({cfg['loss'].get('_target_')}) fails on the model's output and y: {err}"]
    if loss.dim() != 0:
        return [
            f"`loss` ({cfg['loss'].get('_target_')}) must give one number; it gives shape "
            f"{tuple(loss.shape)} (reduction 'none'?)"
        ]
    try:
        probe_optimizer(parts.make_optim, lr=1e-3)  # its own argument checks, without torch._dynamo
    except Exception as err:  # noqa: BLE001
        args = {k: v for k, v in cfg["optim"].items() if not k.startswith("_")}
        return [f"`optim` ({cfg['optim'].get('_target_')}) cannot be built with arguments {args}: {err}"]
    return []


def sweep_meta(
    cfg: dict[str, Any], dataset: Dataset, parts: ProblemParts, design: Optional[tuple[np.ndarray, np.ndarray]] = None
) -> SweepMeta:
    """What the sweep folder will record; a folder that holds a sweep keeps its draw rule. The
    draws' settings (`SweepMeta.draw_settings`) are resolved here, `sweep.block_length=auto`
    from the residuals of the closed-form fit of `design`, rows in their order."""
    sweep = cfg["sweep"]
    residuals = None if design is None else residual_fit(*design)[1]
    settings = draw_settings(sweep["scheme"], sweep.get("block_length", "auto"), sweep.get("wild_weights"), residuals)
    if sweep.get("block_length", "auto") == "auto" and "block_length" in settings:
        log.info(
            "sweep.block_length=auto: %s for %s (Politis-White on the original fit's residuals, %d rows in order)",
            settings["block_length"],
            sweep["scheme"],
            dataset.n_rows,
        )
    return SweepMeta(
        cfg["experiment"],
        parts.param_names,
        parts.closed_form,
        dataset.digest(),
        dataset.source,
        dataset.n_rows,
        dataset.x_names,
        dataset.y_names,
        dataset.x_shift,
        dataset.x_scale,
        bool(cfg["data"].get("standardize")),
        store.folder_draw_rule(Path(cfg["out_dir"])) or DRAW_RULE,
        why_no_bound(cfg, parts.closed_form) is None,
        linear_in_params(parts, dataset),
        settings.get("block_length"),
        settings.get("wild_weights"),
    )


def _check_rule(cfg: dict[str, Any], meta: SweepMeta) -> list[str]:
    """The block and wild schemes draw by the keyed rule only: a folder of the first rule keeps it."""
    scheme = cfg["sweep"]["scheme"]
    if scheme in (*BLOCK_SCHEMES, WILD) and meta.draw_rule != KEYED_RULE:
        return [
            f"`sweep.scheme` {scheme}: `out_dir` {cfg['out_dir']} holds a sweep of the {meta.draw_rule} draw rule, "
            f"which it keeps, and the {scheme} scheme draws by the {KEYED_RULE} rule only: choose a new out_dir"
        ]
    return []


def _load(cfg: dict[str, Any]) -> tuple[Optional[Dataset], Optional[ProblemParts], list[str]]:
    """The data and the problem parts, each built once, and what is wrong with them."""
    try:
        dataset = load_dataset(cfg["data"])
        parts = build_problem_parts(cfg["model"], cfg["loss"], cfg["optim"], dataset)
    except ConfigError as err:
        return None, None, err.problems
    return dataset, parts, _check_loss_and_optim(cfg, parts, dataset) + engine_problems(cfg["train"]["engine"], parts)


def warn_unformable_intervals(cfg: dict[str, Any], design: Optional[tuple[np.ndarray, np.ndarray]]) -> list[str]:
    """Say before any run which interval methods the sweep cannot form, and why (a warning:
    the runs are still worth training; the intervals table gives those rows NaN bounds)."""
    methods = cfg["intervals"]["methods"]
    wanted = [str(m).lower() for m in methods] if methods is not None else [*CLOSED_FORM_METHODS, "percentile"]
    reasons = []
    why = closed_form_problem(*design) if design is not None else ""
    closed = [m for m in wanted if m in CLOSED_FORM_METHODS]
    if why and closed:
        reasons.append(f"intervals {', '.join(closed)} cannot be formed: {why}")
    boot = [m for m in wanted if m in BOOTSTRAP_METHODS]
    if methods is not None and boot and cfg["sweep"]["resamples"] == 0:
        reasons.append(f"intervals {', '.join(boot)} cannot be formed: sweep.resamples=0 (no bootstrap draws)")
    for reason in reasons:
        log.warning("%s; their rows in intervals.parquet will have NaN bounds and this note", reason)
    return reasons


def prepare(cfg: dict[str, Any]) -> PreparedSweep:
    """Check everything a sweep needs before a task starts; raise one ConfigError listing
    every problem, or return the prepared sweep (data, problem and plan built once)."""
    problems = _check_numbers(cfg) + out_dir_problems(cfg["out_dir"])
    dataset, parts, found = _load(cfg)
    # sweep.lr=auto: a grid around the stability bound of SGD on these rows (pipeline/lr_bound.py)
    if parts is not None and dataset is not None:
        features = (design_matrix(parts, dataset) or (None,))[0]
        cfg, auto_problems = resolve_auto_lr(cfg, features, getattr(parts.loss_fn, "reduction", "mean"))
        problems += auto_problems
    problems += [] if isinstance(cfg["sweep"]["lr"], str) else _check_lr(cfg)  # a string left: reported above
    problems += found
    problems += _check_init(cfg, parts.n_params if parts else None)
    problems += _check_intervals(cfg, parts.closed_form if parts else None)
    problems += _check_scheme(cfg, parts.closed_form if parts else None, dataset.n_rows if dataset else None)
    if problems or dataset is None or parts is None:
        raise ConfigError(list(dict.fromkeys(problems)))
    design = design_matrix(parts, dataset)
    meta = sweep_meta(cfg, dataset, parts, design)
    problems = other_sweep_problems(cfg, meta.data_digest) or _check_rule(cfg, meta)
    if problems:
        raise ConfigError(problems)
    runs = plan(cfg, meta.data_digest, meta.n_rows, meta.draw_rule, meta.draw_settings())
    warn_unformable_intervals(cfg, design)
    return PreparedSweep(
        cfg, Path(cfg["out_dir"]).resolve(), dataset, parts, meta, runs, TrainSettings.from_dict(cfg["train"]), design
    )


def validate(cfg: dict[str, Any]) -> None:
    """`prepare`, for its checks alone."""
    prepare(cfg)
