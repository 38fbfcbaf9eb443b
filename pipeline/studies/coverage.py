"""Do the intervals cover the truth as often as they claim? `pipeline-coverage` simulates it.

Each of `reps` replicates draws a data set from a known truth with the experiment's
design: `rows` x rows drawn with replacement from the experiment's own x (or, with
`fixed_x`, the experiment's x rows themselves, in their order: a time series), and
y = features(x) @ truth + noise. The noise is Gaussian with sd `noise_sd`; with
`noise_ar` = phi an AR(1) series in row order (e_t = phi e_{t-1} + sqrt(1 - phi^2) z_t,
stationary, so its sd stays noise_sd); with `noise_growth` = g heteroscedastic, its sd
growing linearly with the first x column from noise_sd at the design's smallest x to
(1 + g) noise_sd at its largest. The truth defaults to the OLS fit of the experiment's
data and its residual sd. On that data set the whole bootstrap runs, as
`pipeline-sweep` would plan it (resample 0, `sweep.resamples` draws by `sweep.scheme`,
and the jackknife fits when bca is wanted), trained by `engines.train_chunk` (gradient descent,
the engine the sweep uses) or, with `fits=closed_form`, solved by least squares on each
resample (the optimum gradient descent converges to: fast, for large studies). Every
interval is then checked against the truth.

The summary gives, per grid cell, parameter and method, the empirical coverage among
the replicates that formed an interval, its Monte-Carlo standard error
sqrt(c (1 - c) / n), the mean width, and how many replicates formed no interval.
Models must be linear in their parameters and fitted by MSE (the truth is a
coefficient vector and the noise is added to a linear predictor).

Runs whose status is not in `intervals.statuses` (default: only `ok`; `not_converged`
and `diverged` fits) are left out of each interval exactly as in a sweep
(`n_dropped_*` in coverage_reps.parquet); a replicate whose cell drops more than
`intervals.max_dropped_share`, or whose fit on the original rows is not `ok`, forms no
interval and counts in `reps - n_intervals`, not as a miss. Every run's engine and
status are counted in coverage.json (`runs`), so a study can show that `fits=train`
went through the engine it meant (`gram` under `train.engine=auto`).

Threads: the study runs in this process, replicate after replicate, on small tensors, so
it takes torch's threads as a task of its launcher would (`Backend.task_threads`: one under
`launcher=local`, the default; `cpus_per_task` under slurm; untouched under debug). On a
busy 2-core machine two threads made each replicate 3x (tdm_quadratic) to 40-90x (sine_cubic:
batched least squares of 200-row resamples) slower than one.

Prediction intervals: with `intervals.at` set, each replicate also forms the sweep's
prediction intervals (`pipeline.prediction_intervals`: the bootstrap methods from the
per-run predictions features(x) @ theta, `t` and `hc3` from the OLS fit of the
replicate's rows) and checks them against the TRUE mean function at those points,
features(x) @ truth. The points are in the data's raw units, as for a sweep; the
experiment's x transform (Dataset.x_shift/x_scale, fixed by the experiment's own data
and the same for every replicate, since the simulated x are drawn from the stored,
transformed x) maps them to the fitted units with `prediction_points.to_fitted`. They
go to separate tables, coverage_predictions.parquet (one row per cell, point and method;
the point's raw x in its x column(s)) and coverage_predictions_reps.parquet (per
replicate), so the parameter tables keep their columns.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from pipeline import store
from pipeline.config.points import read_points, to_fitted
from pipeline.core.errors import ConfigError
from pipeline.core.resampling import DRAW_RULE, residual_fit
from pipeline.core.runs import BLOCK_SCHEMES, BOOTSTRAP, OK, WILD, Run, RunResult
from pipeline.core.settings import TrainSettings
from pipeline.data.load import Dataset
from pipeline.launch.backends import backend_for
from pipeline.launch.prepare import PreparedSweep, prepare
from pipeline.launch.task import set_threads
from pipeline.models import least_squares
from pipeline.stats.block_length import draw_settings
from pipeline.stats.intervals import bootstrap_intervals
from pipeline.stats.ols import fit_design
from pipeline.stats.prediction import linear_predictions, prediction_intervals
from pipeline.sweep.plan import plan
from pipeline.train.engines import choose_engine, train_chunk
from pipeline.train.problem import Problem, ProblemParts, build_problem, resample_data

log = logging.getLogger(__name__)

FITS = ("train", "closed_form")
_DATA_STREAM = 0xDA7A  # keeps the data draws' random streams apart from the resamples'


@dataclass(frozen=True)
class Truth:
    """What the replicates are simulated from."""

    params: tuple[float, ...]
    noise_sd: float
    design_x: np.ndarray  # x rows the simulated rows are drawn from
    rows: int
    x_names: tuple[str, ...]
    y_names: tuple[str, ...]
    x_shift: tuple[float, ...] = ()  # the experiment's x transform (raw -> fitted), for `intervals.at`
    x_scale: tuple[float, ...] = ()
    noise_ar: float = 0.0  # AR(1) coefficient of the noise, rows in their order
    noise_growth: float = 0.0  # the noise sd at the design's largest first x is (1 + this) times noise_sd
    fixed_x: bool = False  # the design's x rows themselves, in order, instead of drawn rows

    def noise_text(self) -> str:
        """The noise model in words, for the study's header line."""
        words = f"noise sd {self.noise_sd:.4g}"
        if self.noise_growth:
            words += f" growing to {(1 + self.noise_growth) * self.noise_sd:.4g} with x"
        if self.noise_ar:
            words += f", AR(1) {self.noise_ar:g} in row order"
        return words + ("; x fixed, in order" if self.fixed_x else "")


@dataclass(frozen=True)
class PredictionPoints:
    """`intervals.at`: the points (raw units), their features (fitted units) and the true mean there."""

    raw: np.ndarray  # (points, x columns)
    features: np.ndarray  # (points, parameters): the model's features of the fitted-unit x
    true_mean: np.ndarray  # (points,): features @ truth


@dataclass
class CoverageReport:
    out_dir: Path
    summary: pd.DataFrame  # one row per cell, parameter and method
    replicates: pd.DataFrame  # one row per replicate, cell, parameter and method
    truth: Truth
    predictions: Optional[pd.DataFrame] = None  # one row per cell, point and method (intervals.at)
    prediction_replicates: Optional[pd.DataFrame] = None
    runs: Optional[dict[str, dict[str, int]]] = None  # run counts per engine and per status

    def _draws_line(self) -> list[str]:
        """The bootstrap's scheme, unless case, and its block lengths over the replicates."""
        schemes = self.replicates["scheme"].dropna().unique()
        if not len(schemes) or list(schemes) == ["case"]:
            return []
        lengths = self.replicates["block_length"].dropna() if "block_length" in self.replicates else []
        spread = (
            f", block length {lengths.min():g} to {lengths.max():g} (mean {lengths.mean():.3g})" if len(lengths) else ""
        )
        return [f"  bootstrap draws: {'/'.join(schemes)}{spread}"]

    def text(self) -> str:
        cols = ["parameter", "method", "truth", "coverage", "mc_se", "mean_width", "n_intervals", "reps"]
        several_cells = self.summary[["lr", "init_index"]].drop_duplicates().shape[0] > 1
        table = self.summary[(["lr", "init_index"] if several_cells else []) + cols]
        lines = [
            f"coverage folder: {self.out_dir}",
            f"  {self.replicates['rep'].nunique()} simulated data sets of {self.truth.rows} rows; truth "
            f"{', '.join(f'{v:.6g}' for v in self.truth.params)}; {self.truth.noise_text()}",
            *self._draws_line(),
            table.to_string(index=False, float_format=lambda v: f"{v:.4g}"),
        ]
        short = self.summary[self.summary["n_intervals"] < self.summary["reps"]]
        if len(short):
            row = short.iloc[0]
            lines.append(
                f"  note: {len(short)} row(s) formed fewer intervals than replicates, e.g. {row['method']} "
                f"of {row['parameter']}: {row['n_intervals']} of {row['reps']} (see `note` in "
                f"{store.COVERAGE_REPS}; unconverged fits are left out)"
            )
        if self.runs:
            lines.append(f"  runs: {_counts_text(self.runs['engine'])} (engine); {_counts_text(self.runs['status'])}")
        tables = f"{store.COVERAGE}, {store.COVERAGE_REPS}"
        if self.predictions is not None:
            x_cols = [c for c in self.truth.x_names if c in self.predictions.columns]
            pcols = ["point", *x_cols, "method", "truth", "coverage", "mc_se", "mean_width", "n_intervals", "reps"]
            lines += [
                "  prediction intervals at intervals.at against the true mean features(x) @ truth:",
                self.predictions[(["lr", "init_index"] if several_cells else []) + pcols].to_string(
                    index=False, float_format=lambda v: f"{v:.4g}"
                ),
            ]
            tables += f", {store.COVERAGE_PREDICTIONS}, {store.COVERAGE_PREDICTIONS_REPS}"
        lines.append(f"  tables: {tables} (pandas.read_parquet)")
        return "\n".join(lines)


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n:,}" for name, n in sorted(counts.items()))


def _features(problem_parts: Any, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return problem_parts.make_model().features(torch.tensor(x, dtype=torch.float64)).numpy()


def prepare_coverage(cfg: dict[str, Any]) -> PreparedSweep:
    """The sweep checks of `prepare` (data read once), plus what a coverage study needs; one ConfigError."""
    problems, prepared = [], None
    try:
        prepared = prepare(cfg)
    except ConfigError as err:
        problems += err.problems
    rules = [
        ("reps", cfg["reps"], cfg["reps"] >= 1, ">= 1"),
        ("rows", cfg["rows"], cfg["rows"] is None or cfg["rows"] >= 3, ">= 3 or null"),
        ("noise_sd", cfg["noise_sd"], cfg["noise_sd"] is None or cfg["noise_sd"] > 0, "> 0 or null"),
        ("noise_ar", cfg["noise_ar"], -1 < cfg["noise_ar"] < 1, "between -1 and 1 (an AR(1) coefficient)"),
        ("noise_growth", cfg["noise_growth"], cfg["noise_growth"] >= 0, ">= 0"),
    ]
    problems += [f"`{key}` must be {rule}; got {value}" for key, value, ok, rule in rules if not ok]
    if cfg["fixed_x"] and cfg["rows"] is not None and prepared is not None and cfg["rows"] != prepared.dataset.n_rows:
        problems.append(
            f"`rows` ({cfg['rows']}) and `fixed_x`: fixed x are the experiment's {prepared.dataset.n_rows} rows; "
            "leave rows null"
        )
    if cfg["fits"] not in FITS:
        problems.append(f"`fits` must be one of {', '.join(FITS)}; got {cfg['fits']!r}")
    if prepared is not None and not prepared.parts.closed_form:
        problems.append(
            "`model`: a coverage study needs a model linear in its parameters fitted by MSE "
            f"(a known coefficient vector to simulate from); got {cfg['model'].get('_target_')!r}"
        )
    elif prepared is not None and cfg["truth"] is not None and len(cfg["truth"]) != prepared.parts.n_params:
        problems.append(f"`truth` needs one value per parameter {list(prepared.parts.param_names)}; got {cfg['truth']}")
    if problems or prepared is None:
        raise ConfigError(problems)
    return prepared


def make_truth(cfg: dict[str, Any], dataset: Dataset, parts: Any) -> Truth:
    """The configured truth, or the OLS fit of the experiment's data and its residual sd."""
    features = _features(parts, dataset.x)
    coef = least_squares(torch.tensor(features), torch.tensor(dataset.y)).numpy()
    resid = dataset.y[:, 0] - features @ coef
    params = coef if cfg["truth"] is None else np.asarray(cfg["truth"], dtype=float)
    noise_sd = cfg["noise_sd"] or float(np.sqrt(resid @ resid / (len(resid) - len(coef))))
    return Truth(
        tuple(float(v) for v in params),
        float(noise_sd),
        dataset.x,
        cfg["rows"] or dataset.n_rows,
        dataset.x_names,
        dataset.y_names,
        tuple(dataset.x_shift),
        tuple(dataset.x_scale),
        float(cfg["noise_ar"]),
        float(cfg["noise_growth"]),
        bool(cfg["fixed_x"]),
    )


def prediction_points(at: Any, truth: Truth, parts: Any) -> Optional[PredictionPoints]:
    """`intervals.at` read in raw units, mapped to the fitted units the truth and the
    replicates live in (the experiment's transform), and the true mean there; None when unset."""
    if at is None:
        return None
    raw = read_points(at, truth.x_names)
    features = _features(parts, to_fitted(raw, truth.x_shift, truth.x_scale))
    return PredictionPoints(raw, features, features @ np.asarray(truth.params))


def simulate(truth: Truth, parts: Any, rng: np.random.Generator) -> Dataset:
    """One data set: x rows drawn from the design (or the design's own, with `fixed_x`), y from
    the truth plus the noise model's noise."""
    x = truth.design_x if truth.fixed_x else truth.design_x[rng.integers(0, len(truth.design_x), size=truth.rows)]
    mean = _features(parts, x) @ np.asarray(truth.params)
    if not truth.noise_ar and not truth.noise_growth:  # the i.i.d. study as it always drew
        return _dataset(truth, x, mean + rng.normal(0.0, truth.noise_sd, size=len(x)))
    return _dataset(truth, x, mean + noise_sds(truth, x) * ar1_series(rng.normal(size=len(x)), truth.noise_ar))


def _dataset(truth: Truth, x: np.ndarray, y: np.ndarray) -> Dataset:
    return Dataset(x, y[:, None], None, None, truth.x_names, truth.y_names, "simulated from the truth")


def ar1_series(shocks: np.ndarray, phi: float) -> np.ndarray:
    """e_0 = z_0, e_t = phi e_{t-1} + sqrt(1 - phi^2) z_t: a stationary AR(1) with unit variance."""
    e = np.empty_like(shocks)
    e[0] = shocks[0]
    innovation = np.sqrt(1 - phi**2)
    for t in range(1, len(shocks)):
        e[t] = phi * e[t - 1] + innovation * shocks[t]
    return e


def noise_sds(truth: Truth, x: np.ndarray) -> np.ndarray:
    """Each row's noise sd: noise_sd (1 + noise_growth (x - min) / (max - min)), x the first
    column, min and max over the design (constant when the design's x is)."""
    first = truth.design_x[:, 0]
    span = first.max() - first.min()
    share = (x[:, 0] - first.min()) / span if span > 0 else np.zeros(len(x))
    return truth.noise_sd * (1 + truth.noise_growth * share)


def replicate_seed(sweep_seed: int, rep: int) -> int:
    """The resampling seed of replicate `rep`: distinct per (sweep.seed, rep)."""
    return int(np.random.SeedSequence([sweep_seed, rep]).generate_state(1)[0])


def closed_form_fits(problem: Problem, runs: list[Run]) -> list[RunResult]:
    """Least squares on each run's resample, batched by resample size (float64).

    This is the optimum gradient descent converges to; `fits=closed_form` uses it in
    place of training when only the statistics of the converged fits matter.
    """
    model = problem.parts.make_model()
    groups: dict[int, list[tuple[Run, torch.Tensor, torch.Tensor]]] = defaultdict(list)
    for run in runs:
        x, y = resample_data(problem, run)
        groups[len(x)].append((run, model.features(x.double()), y.double()))
    results = {}
    for group in groups.values():
        features = torch.stack([f for _, f, _ in group])
        ys = torch.stack([y for _, _, y in group])
        coef = torch.linalg.lstsq(features, ys).solution  # (runs, params, 1)
        losses = ((features @ coef - ys) ** 2).mean(dim=(1, 2)).tolist()
        for (run, _, _), params, loss in zip(group, coef[..., 0].tolist(), losses):
            results[run.run_id] = RunResult(
                run,
                params,
                loss,
                None,
                0.0,
                0,
                OK,
                ols=params,
                ols_loss=loss,
                device=str(problem.device),
                engine="closed_form",
            )
    return [results[r.run_id] for r in runs]


def replicate_draw_settings(cfg: dict[str, Any], X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """What a sweep of one replicate's rows (features `X`, response `y`) would record as its draw
    settings (`SweepMeta.draw_settings`): `sweep.block_length=auto` is Politis-White on the
    replicate's own original fit, so every replicate has its own block length."""
    sweep = cfg["sweep"]
    auto = sweep["scheme"] in BLOCK_SCHEMES and sweep.get("block_length", "auto") == "auto"
    residuals = residual_fit(X, y)[1] if auto else None
    return draw_settings(sweep["scheme"], sweep.get("block_length", "auto"), sweep.get("wild_weights"), residuals)


def replicate_estimates(
    cfg: dict[str, Any], parts: ProblemParts, dataset: Dataset, rep: int, drawn: Optional[dict[str, Any]] = None
) -> pd.DataFrame:
    """The estimates table of one replicate's whole bootstrap (as `estimates.parquet`); `drawn`:
    its draw settings (`replicate_draw_settings`, computed here when not given)."""
    # shallow copies of the two sections that change: a deep copy of the whole config per
    # replicate cost more than planning the runs
    rep_cfg = {
        **cfg,
        "sweep": {**cfg["sweep"], "seed": replicate_seed(cfg["sweep"]["seed"], rep)},
        "train": {**cfg["train"], **({"dtype": "float64"} if cfg["fits"] == "closed_form" else {})},
    }
    if drawn is None:
        drawn = replicate_draw_settings(cfg, _features(parts, dataset.x), dataset.y[:, 0])
    settings = TrainSettings.from_dict(rep_cfg["train"])
    problem = build_problem(parts, dataset, device=settings.device, dtype=settings.dtype, draw_settings=drawn)
    runs = plan(rep_cfg, dataset.digest(), dataset.n_rows, DRAW_RULE, drawn)
    if cfg["fits"] == "closed_form":
        results = closed_form_fits(problem, runs)
    else:
        results = train_chunk(problem, runs, settings)
    frame = results_frame(results, parts.param_names)
    if "block_length" in drawn:  # beside each draw, as in a sweep's estimates.parquet
        frame["block_length"] = np.where(frame["kind"] == BOOTSTRAP, float(drawn["block_length"]), np.nan)
    return frame


def results_frame(results: list[RunResult], names: tuple[str, ...]) -> pd.DataFrame:
    """The columns of `estimates.parquet` that intervals read, built column-wise (fast)."""
    runs = [r.run for r in results]
    frame = pd.DataFrame(
        {
            "lr": [r.lr for r in runs],
            "init_index": [r.init_index for r in runs],
            "resample": [r.resample for r in runs],
            "kind": [r.kind for r in runs],
            "scheme": [r.scheme for r in runs],
            "status": [r.status for r in results],
            "engine": [r.engine for r in results],
        }
    )
    params = np.array([r.params for r in results], dtype=float).reshape(len(results), len(names))
    frame[list(names)] = params
    if all(r.ols is not None for r in results):
        frame[[f"ols_{n}" for n in names]] = np.array([r.ols for r in results], dtype=float)
    return frame


def replicate_intervals(
    cfg: dict[str, Any],
    dataset: Dataset,
    parts: Any,
    rep: int,
    estimates: pd.DataFrame,
    X: np.ndarray,
    drawn: Optional[dict[str, Any]] = None,
) -> pd.DataFrame:
    """Every interval of one replicate, from its estimates (`replicate_estimates`) and X, the
    features of its rows (computed once per replicate: building the model for them costs);
    `drawn`: its draw settings (studentized redraws each draw's rows)."""
    ic = cfg["intervals"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate cells are counted in the summary instead
        table = bootstrap_intervals(
            estimates,
            params=list(parts.param_names),
            method=ic["methods"],
            level=ic["level"],
            statuses=ic["statuses"],
            max_dropped_share=ic["max_dropped_share"],
            X=X,
            y=dataset.y[:, 0],
            hac_lags=ic.get("hac_lags"),
            draw_settings=drawn,
        )
    return table.assign(rep=rep)


def replicate_predictions(
    cfg: dict[str, Any],
    dataset: Dataset,
    parts: Any,
    rep: int,
    estimates: pd.DataFrame,
    points: PredictionPoints,
    X: np.ndarray,
) -> pd.DataFrame:
    """Every prediction interval of one replicate at `intervals.at`, as a sweep's predictions.parquet
    (t and hc3 from the OLS fit of the replicate's own rows), with the true mean and whether it is covered."""
    ic = cfg["intervals"]
    per_run = linear_predictions(estimates, parts.param_names, points.features)
    design = fit_design(X, dataset.y[:, 0], ic.get("hac_lags"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = prediction_intervals(
            per_run,
            points.raw,
            x_names=list(dataset.x_names),
            methods=ic["methods"],
            level=ic["level"],
            statuses=ic["statuses"],
            max_dropped_share=ic["max_dropped_share"],
            design=design,
            features=points.features,
        )
    truth = points.true_mean[table["point"].to_numpy()]
    return table.assign(rep=rep, truth=truth, covered=(table["lower"] <= truth) & (truth <= table["upper"]))


def drawn_text(cfg: dict[str, Any], replicates: pd.DataFrame) -> dict[str, Any]:
    """The draw settings of the study: the wild weights, or the block length (as set, and the
    replicates' range when each estimated its own with `auto`)."""
    sweep = cfg["sweep"]
    if sweep["scheme"] == WILD:
        return {"wild_weights": sweep.get("wild_weights")}
    if sweep["scheme"] not in BLOCK_SCHEMES:
        return {}
    lengths = replicates.groupby("rep")["block_length"].max().dropna()  # NaN on the closed-form rows
    found = (
        {"min": float(lengths.min()), "mean": float(lengths.mean()), "max": float(lengths.max())}
        if len(lengths)
        else {}
    )
    return {"block_length": sweep.get("block_length", "auto"), "block_lengths": found}


PARAMETER_KEYS = ("lr", "init_index", "parameter", "method", "level", "truth")


def prediction_keys(x_names: tuple[str, ...]) -> tuple[str, ...]:
    """The summary keys of prediction coverage: one row per cell, point (and its raw x) and method."""
    return ("lr", "init_index", "point", *x_names, "method", "level", "truth")


def summarise(replicates: pd.DataFrame, keys: tuple[str, ...] = PARAMETER_KEYS) -> pd.DataFrame:
    """Coverage, its Monte-Carlo standard error and the mean width per cell, quantity (`keys`) and method."""
    frame = replicates.assign(
        formed=replicates["lower"].notna() & replicates["upper"].notna(),
        width=replicates["upper"] - replicates["lower"],
    )
    keys = list(keys)
    summary = frame.groupby(keys, sort=False).agg(
        reps=("rep", "nunique"), n_intervals=("formed", "sum"), covered=("covered", "sum"), mean_width=("width", "mean")
    )
    summary = summary.reset_index()
    n = summary["n_intervals"].where(summary["n_intervals"] > 0)
    summary["coverage"] = summary["covered"] / n
    summary["mc_se"] = np.sqrt(summary["coverage"] * (1 - summary["coverage"]) / n)
    return summary[[*keys, "reps", "n_intervals", "covered", "coverage", "mc_se", "mean_width"]]


def run_coverage(prepared: PreparedSweep, out_dir: Path) -> CoverageReport:
    """Simulate `reps` data sets, bootstrap each, and write and return the coverage tables."""
    cfg, parts = prepared.cfg, prepared.parts
    truth = make_truth(cfg, prepared.dataset, parts)
    truth_of = dict(zip(parts.param_names, truth.params))
    points = prediction_points(cfg["intervals"].get("at"), truth, parts)
    set_threads(backend_for(cfg["launcher"]).task_threads)
    if cfg["fits"] == "train":
        choice = choose_engine(parts, cfg["train"]["engine"])
        log.info("fits=train: every run trained by the %s engine (%s)", choice.name, choice.reason)
    frames, pred_frames = [], []
    engines: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    for rep in tqdm(range(cfg["reps"]), unit="rep", desc="replicates", disable=not cfg["launcher"]["progress"]):
        dataset = simulate(truth, parts, np.random.default_rng([cfg["seed"], rep, _DATA_STREAM]))
        X = _features(parts, dataset.x)
        drawn = replicate_draw_settings(cfg, X, dataset.y[:, 0])
        estimates = replicate_estimates(cfg, parts, dataset, rep, drawn)
        engines.update(estimates["engine"])
        statuses.update(estimates["status"])
        frames.append(replicate_intervals(cfg, dataset, parts, rep, estimates, X, drawn))
        if points is not None:
            pred_frames.append(replicate_predictions(cfg, dataset, parts, rep, estimates, points, X))
    replicates = pd.concat(frames, ignore_index=True)
    replicates["truth"] = replicates["parameter"].map(truth_of)
    replicates["covered"] = (replicates["lower"] <= replicates["truth"]) & (replicates["truth"] <= replicates["upper"])
    summary = summarise(replicates)
    runs = {"engine": dict(engines), "status": dict(statuses)}
    out_dir.mkdir(parents=True, exist_ok=True)
    store.write_frame(summary, out_dir / store.COVERAGE)
    store.write_frame(replicates, out_dir / store.COVERAGE_REPS)
    predictions = pred_replicates = None
    if points is not None:
        pred_replicates = pd.concat(pred_frames, ignore_index=True)
        predictions = summarise(pred_replicates, prediction_keys(truth.x_names))
        store.write_frame(predictions, out_dir / store.COVERAGE_PREDICTIONS)
        store.write_frame(pred_replicates, out_dir / store.COVERAGE_PREDICTIONS_REPS)
    store.write_json(
        {
            "experiment": cfg["experiment"],
            "truth": truth_of,
            "noise_sd": truth.noise_sd,
            "noise_ar": truth.noise_ar,
            "noise_growth": truth.noise_growth,
            "fixed_x": truth.fixed_x,
            "rows": truth.rows,
            "reps": cfg["reps"],
            "resamples": cfg["sweep"]["resamples"],
            "scheme": cfg["sweep"]["scheme"],
            "draw_settings": drawn_text(cfg, replicates),
            "fits": cfg["fits"],
            "seed": cfg["seed"],
            "runs": runs,
            "at": None if points is None else points.raw.tolist(),
            "true_mean_at": None if points is None else points.true_mean.tolist(),
        },
        out_dir / store.COVERAGE_META,
    )
    return CoverageReport(out_dir, summary, replicates, truth, predictions, pred_replicates, runs)
