"""The config schema (Hydra's ConfigStore) and its resolvers; nothing else.

The schema is registered in Hydra's ConfigStore, so a misspelt key fails when Hydra
composes the config. Everything a type cannot check (files, columns, values, the grid,
the launcher) is checked by `pipeline.prepare`, which loads the data once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any, Optional, get_type_hints

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from pipeline.config.launcher import LAUNCHER_CONFS, BaseLauncherConf
from pipeline.config.shipped import SHIPPED_ROOT
from pipeline.core.settings import TrainSettings

ENGINES = ("reference", "batched", "gram", "auto")  # auto: the fastest engine that applies (engines/choice.py)
DTYPES = ("float32", "float64")
DEVICES = ("auto", "cpu", "cuda")


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
    order: Optional[str] = None  # a column to sort the rows by (time); None: the file's order


def _settable_copy(frozen: type, name: str) -> type:
    """A dataclass with `frozen`'s fields, types and defaults that Hydra can override: OmegaConf
    makes a frozen dataclass a read-only node, so `train.epochs=5` would be refused."""
    hints = get_type_hints(frozen)
    return make_dataclass(name, [(f.name, hints[f.name], field(default=f.default)) for f in fields(frozen)])


# The `train` section: the fields of `TrainSettings` (pipeline/core/settings.py), the one
# definition that the training loops read, frozen there.
TrainConf = _settable_copy(TrainSettings, "TrainConf")


@dataclass
class SweepConf:
    name: str = "single"
    # Any, not list[float]: a typed field would resolve `${scaled:${optim.lr},...}`
    # while Hydra merges the sweep group, before the experiment's optim exists.
    lr: Any = None  # list of learning rates; None: the experiment's optim.lr
    init: Any = None  # list of initial vectors; None: the experiment's init
    resamples: int = 0  # bootstrap draws besides resample 0, the original rows
    seed: int = 0  # with the resample index, fixes each draw's rows
    # case: resample (x, y) rows | residual: resample OLS residuals (linear models) | moving_block,
    # circular_block, stationary: rows in their order, in blocks | wild: fitted + residual * v (linear models)
    scheme: str = "case"
    block_length: Any = "auto"  # block schemes: a (mean) block length, or auto (Politis-White on the residuals)
    wild_weights: str = "rademacher"  # wild: rademacher | mammen
    jackknife: bool = False  # one leave-one-row-out run per data row (BCa's acceleration)


@dataclass
class IntervalsConf:
    level: float = 0.95
    statuses: list[str] = field(default_factory=lambda: ["ok"])  # runs used
    # None: every method that applies (percentile, basic, normal; bca with jackknife runs;
    # t and hc3 for models linear in their parameters fitted by MSE)
    methods: Optional[list[str]] = None
    max_dropped_share: float = 0.1  # warn when a cell drops more than this share of its draws
    plots: bool = True  # PNGs of the bootstrap distributions (and the lr/init grid) beside the tables
    # x values for prediction intervals (predictions.parquet): a list (a number per point for
    # one x column, a list per point for several) or a CSV path with the x columns; raw units
    at: Any = None
    hac_lags: Optional[int] = None  # Newey-West lags of the hac interval; None: floor(4 (n/100)^(2/9))


@dataclass
class PipelineConf:
    experiment: str = MISSING
    data: DataConf = field(default_factory=DataConf)
    model: Any = MISSING  # `_target_` of an nn.Module and its arguments
    init: Optional[list[float]] = None  # flat initial parameter vector
    loss: Any = MISSING  # `_target_` of a loss module
    optim: Any = MISSING  # `_target_` of a torch.optim class, `_partial_: true`
    train: TrainConf = field(default_factory=TrainConf)  # type: ignore[valid-type]
    sweep: SweepConf = field(default_factory=SweepConf)
    launcher: BaseLauncherConf = field(default_factory=BaseLauncherConf)  # conf/launcher/: DebugConf, LocalConf, ...
    intervals: IntervalsConf = field(default_factory=IntervalsConf)
    data_dir: str = MISSING
    out_dir: str = MISSING
    report: bool = True  # write report.html (one self-contained page of the sweep) at the end
    # multiples of optim.lr that sweep=lr_grid and sweep=story run (presets choose theirs)
    lr_grid_factors: list[float] = field(default_factory=lambda: [0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0])


@dataclass
class AggregateConf:
    out_dir: str = MISSING
    intervals: IntervalsConf = field(default_factory=IntervalsConf)
    report: bool = True


@dataclass
class ReportConf:
    out_dir: str = MISSING


@dataclass
class CoverageConf(PipelineConf):
    """`pipeline-coverage`: the experiment's config plus how to simulate from a known truth."""

    reps: int = 500  # simulated data sets, each with its own whole bootstrap
    rows: Optional[int] = None  # rows per simulated data set; None: as many as the experiment's data
    truth: Optional[list[float]] = None  # true parameters; None: the OLS fit of the experiment's data
    noise_sd: Optional[float] = None  # sd of the Gaussian noise; None: residual sd of that fit
    noise_ar: float = 0.0  # AR(1) coefficient of the noise, rows in their order (-1 < noise_ar < 1)
    # heteroscedastic noise: its sd grows linearly with the first x column, from noise_sd at the
    # smallest x of the design to (1 + noise_growth) noise_sd at the largest
    noise_growth: float = 0.0
    fixed_x: bool = False  # every data set has the experiment's own x rows, in their order (a time series)
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
    """`${n_columns:${data.x}}`: how many columns a `data.x` / `data.y` value names. Any
    value resolves (a bad one counts as 1), so that `prepare` can name the key, not Hydra."""
    return len(names) if isinstance(names, (list, tuple, ListConfig)) else 1


def register() -> None:
    """Register schema and resolvers; safe to call more than once."""
    # `${project_root:}/data`: the shipped data sets (the repository's, or the installed package's copy)
    OmegaConf.register_new_resolver("project_root", lambda: str(SHIPPED_ROOT), replace=True)
    OmegaConf.register_new_resolver("n_columns", _n_columns, replace=True)
    OmegaConf.register_new_resolver("scaled", _scaled, replace=True)
    OmegaConf.register_new_resolver("scaled_vectors", _scaled_vectors, replace=True)
    OmegaConf.register_new_resolver("bca_requested", _bca_requested, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="pipeline_schema", node=PipelineConf)
    cs.store(name="aggregate_schema", node=AggregateConf)
    cs.store(name="coverage_schema", node=CoverageConf)
    cs.store(name="report_schema", node=ReportConf)
    for cluster, conf in LAUNCHER_CONFS.items():  # conf/launcher/*.yaml start from these (no group: not an option)
        cs.store(name=f"launcher_{cluster}_schema", node=conf)


register()


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """Resolved plain-dict copy of a config: what `prepare` checks, config.yaml stores and run ids hash."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]
