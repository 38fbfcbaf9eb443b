"""Confidence intervals from a table of estimates: bootstrap and closed-form.

One public entry point, `bootstrap_intervals`, usable on the `estimates.parquet` of a
sweep or on any DataFrame of the same shape: one row per run, a `resample` column
(0 = the original rows, k >= 1 = bootstrap draw k, -(j+1) = jackknife fit without row
j; a `kind` column, if present, says the same in words), a `status` column, one column
per parameter, and the grid columns that define a cell.

Methods, with alpha = 1 - level, theta_hat the estimate on the original rows and
q(p) the linear-interpolation quantile (numpy's default, as scipy.stats.bootstrap) of
the B usable bootstrap values:
    percentile  [q(alpha/2), q(1 - alpha/2)]
    basic       [2 theta_hat - q(1 - alpha/2), 2 theta_hat - q(alpha/2)]
    bca         [q(a1), q(a2)]: bias-corrected and accelerated, as scipy's `_bca_interval`
                (z0 from the share of values below theta_hat, ties counted half; the
                acceleration from the jackknife fits)
    normal      theta_hat -/+ z(1 - alpha/2) se, se the sd of the bootstrap values
    t           the OLS fit on the original rows -/+ t(n - p) x its classical se
    hc3         the OLS fit -/+ z(1 - alpha/2) x its HC3 (heteroskedasticity-robust) se;
                statsmodels' `fit(cov_type="HC3").conf_int()`, which uses the normal quantile
    hac         the OLS fit -/+ z(1 - alpha/2) x its Newey-West (heteroskedasticity- and
                autocorrelation-robust) se, rows in their order (`pipeline.stats.ols`); statsmodels'
                `fit(cov_type="HAC", cov_kwds={"maxlags": hac_lags}).conf_int()`
    studentized bootstrap-t: [theta_hat - q_t(1 - alpha/2) se_hat, theta_hat - q_t(alpha/2) se_hat],
                q_t the quantiles of t* = (theta* - theta_hat) / se*, se* each draw's own
                classical OLS se on its rows (`stats.studentized`), se_hat the original rows'
`t`, `hc3`, `hac` and `studentized` need the design: pass the feature matrix `X` and the response `y`.

Units (`units` column): with `raw_units` = M (theta_raw = M theta, `stats.raw_units`),
every row comes twice: `raw` (each draw's parameters mapped by M, the closed-form fit and
covariances by M cov M^T, which is the fit on the raw design) and `fitted` (as fitted).

Monte-Carlo error of an endpoint (`mc_se_lower`, `mc_se_upper`): for the quantile-based
methods the asymptotic standard error of a sample quantile, sqrt(p (1 - p) / B) / f(q),
with f a Gaussian kernel density estimate of the bootstrap values (for bca, p is its
adjusted level; the Monte-Carlo error of z0 is not included); for `normal`,
z se / sqrt(2 (B - 1)), the error of a standard deviation; 0 for the closed-form methods.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

from pipeline.core.errors import DegenerateCellWarning, DroppedRunsWarning
from pipeline.core.resampling import DRAW_RULE
from pipeline.core.runs import BOOTSTRAP, JACKKNIFE, ORIGINAL
from pipeline.stats.bounds import Bounds, bootstrap_bounds
from pipeline.stats.cells import (
    Cell,
    as_float,
    bca_note,
    cell_notes,
    counts_text,
    estimate_notes,
    grid_cells,
    note_dependence,
    optimisation_share,
    optimiser_sets_width,
    split_cell,
    why_no_interval,
)
from pipeline.stats.draws import SE_PREFIX, in_raw_units, kinds_of, raw_matrix_iv, with_draw_se
from pipeline.stats.ols import ClosedFormDesign, ClosedFormInterval, fit_design
from pipeline.stats.studentized import draw_covariances

METHODS = ("percentile", "basic", "bca", "normal", "t", "hc3", "hac", "studentized")
BOOTSTRAP_METHODS = ("percentile", "basic", "bca", "normal", "studentized")
CLOSED_FORM_METHODS = ("t", "hc3", "hac")
DESIGN_METHODS = ("t", "hc3", "hac", "studentized")  # need the design (X, y): models linear in their parameters
# What `estimate` is on each row (`estimate_source`): the sweep's own fit on the original rows
# (bootstrap methods are built around it), or the closed-form optimum (t, hc3, hac are centred on it).
GRADIENT_DESCENT, LEAST_SQUARES = "gradient descent", "least squares"
RAW, FITTED = "raw", "fitted"  # the `units` column: the data's own units of x, or x as fitted (per sd)
GRID_COLUMNS = ("lr", "init_index")

# an interval's own columns, in every table (parameters here, predictions in stats.prediction)
BOUND_COLUMNS = ("estimate", "estimate_source", "lower", "upper", "se", "n_used", "n_dropped")
COLUMNS = (
    "parameter",
    "method",
    "level",
    "scheme",
    "block_length",
    *BOUND_COLUMNS,
    "n_dropped_diverged",
    "n_dropped_not_converged",
    "dropped",
    "mc_se_lower",
    "mc_se_upper",
    "gap_to_ols",
    "opt_to_sampling",
    "z0",
    "acceleration",
    "estimate_status",
    "note",
    "units",
)


# --- the table ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValueIntervals:
    """The bootstrap intervals of one value (a parameter, a prediction) in one grid cell."""

    estimate: float  # the value on the original rows (theta_hat)
    se: float  # the sd of the usable draws
    gap_to_ols: float  # |estimate - closed-form optimum| where the runs carry it, else NaN
    bounds: dict[str, Bounds]  # per method; NaN bounds where it cannot be formed, `note` saying why
    opt_to_sampling: float = np.nan  # the draws' median distance to their own optima / se (cells.optimisation_share)


def value_intervals(
    cell: Cell,
    column: str,
    methods: Sequence[str],
    alpha: float,
    statuses: Sequence[str],
    notes_of_cell: tuple[list[str], list[str]],
    student: Optional[tuple[np.ndarray, float]] = None,
) -> ValueIntervals:
    """Each bootstrap method's interval of `column` in `cell`, with the notes that qualify it.

    `notes_of_cell`: `cell_notes(cell, ...)` (what makes the cell's intervals impossible, what
    qualifies them). Percentile needs only the distribution; the other methods are built
    around the estimate, so an estimate that is not usable (its status) leaves them without bounds.
    """
    cell_fatal, cell_caveats = notes_of_cell
    boot = cell.boot[column].to_numpy(dtype=float)
    se = float(np.std(boot, ddof=1)) if len(boot) >= 2 else np.nan
    est_fatal, est_caveats, gap = estimate_notes(cell, column, statuses, se)
    opt = optimisation_share(cell.boot, column, se)
    if optimiser_sets_width(opt):
        est_caveats.append(
            f"the draws lie a median {opt:.2g} bootstrap SEs from their own closed-form optima "
            "(opt_to_sampling): the optimiser, not only the data, sets this width"
        )
    if est_fatal and not cell_fatal:  # usable draws, an unusable estimate: the rule's reason leads too
        est_fatal = [why_no_interval(cell.runs(statuses)) or "", *est_fatal]
    theta_hat = np.nan if cell.original is None else as_float(cell.original[column])
    bounds = {}
    for method in methods:
        fatal = bool(cell_fatal or (est_fatal and method != "percentile"))
        bca_ok, why_bca = bca_note(cell) if method == "bca" else (True, "")
        found = (
            Bounds()
            if fatal or not bca_ok
            else bootstrap_bounds(method, boot, theta_hat, cell.jack[column].to_numpy(dtype=float), alpha, student)
        )
        notes = cell_fatal + est_fatal + [why_bca, found.note] + cell_caveats + est_caveats
        bounds[method] = replace(found, note="; ".join(dict.fromkeys(n for n in notes if n)))
    return ValueIntervals(theta_hat, se, gap, bounds, opt)


def _bootstrap_rows(
    cell: Cell,
    params: Sequence[str],
    methods: Sequence[str],
    level: float,
    statuses: Sequence[str],
    max_dropped_share: float,
) -> list[dict]:
    notes_of_cell = cell_notes(cell, statuses, max_dropped_share)
    dropped = cell.dropped
    common = {
        "level": level,
        "scheme": cell.scheme,
        "block_length": cell.block_length,
        "n_used": len(cell.boot),
        "n_dropped": len(dropped),
        "n_dropped_diverged": int((dropped == "diverged").sum()),
        "n_dropped_not_converged": int((dropped == "not_converged").sum()),
        "dropped": counts_text(dropped),
        "estimate_status": None if cell.original is None else cell.original["status"],
    }
    rows = []
    for name in params:
        student = (
            None
            if SE_PREFIX + name not in cell.boot.columns or cell.original is None
            else (cell.boot[SE_PREFIX + name].to_numpy(dtype=float), float(cell.original[SE_PREFIX + name]))
        )
        value = value_intervals(cell, name, methods, 1.0 - level, statuses, notes_of_cell, student)
        for method, bounds in value.bounds.items():
            rows.append(
                {
                    "parameter": name,
                    "method": method,
                    **common,
                    "estimate": value.estimate,
                    "estimate_source": GRADIENT_DESCENT,
                    "lower": bounds.lower,
                    "upper": bounds.upper,
                    "se": value.se,
                    "mc_se_lower": bounds.mc_se_lower,
                    "mc_se_upper": bounds.mc_se_upper,
                    "gap_to_ols": value.gap_to_ols,
                    "opt_to_sampling": value.opt_to_sampling,
                    "z0": bounds.z0,
                    "acceleration": bounds.acceleration,
                    "note": bounds.note,
                }
            )
    return rows


def closed_form_columns(form: ClosedFormInterval, i: int, method: str, level: float, status: Any) -> dict[str, Any]:
    """The columns of a closed-form (t, hc3, hac) row that the parameter and prediction tables
    share: value `i` of `form`, which uses no draws (n_used, n_dropped: NA)."""
    return {
        "method": method,
        "level": level,
        "scheme": None,
        "estimate": form.estimate[i],
        "estimate_source": LEAST_SQUARES,
        "lower": form.lower[i],
        "upper": form.upper[i],
        "se": form.se[i],
        "n_used": pd.NA,
        "n_dropped": pd.NA,
        "estimate_status": status,
        "note": form.note,
    }


def _closed_form_rows(
    cell: Cell, params: Sequence[str], methods: Sequence[str], level: float, design: ClosedFormDesign
) -> list[dict]:
    status = None if cell.original is None else cell.original["status"]
    rows = []
    for method in methods:
        form = design.interval(method, 1.0 - level, np.eye(len(params)))  # the coefficients
        if method == "hac" and design.fit is not None and not form.note:
            form = replace(form, note=f"Newey-West, Bartlett kernel, {design.fit.hac_lags} lag(s)")
        for j, name in enumerate(params):
            gap = np.nan if cell.original is None else abs(as_float(cell.original[name]) - form.estimate[j])
            rows.append(
                {
                    "parameter": name,
                    **closed_form_columns(form, j, method, level, status),
                    "block_length": np.nan,
                    "n_dropped_diverged": pd.NA,
                    "n_dropped_not_converged": pd.NA,
                    "dropped": "",
                    "mc_se_lower": 0.0,
                    "mc_se_upper": 0.0,
                    "gap_to_ols": gap,
                    "opt_to_sampling": np.nan,  # no draws: the closed form has no optimisation error
                    "z0": np.nan,
                    "acceleration": np.nan,
                }
            )
    return rows


def applicable_methods(method: Union[str, Sequence[str], None], estimates: pd.DataFrame, has_design: bool) -> list[str]:
    """What `bootstrap_intervals` computes for `method`, lower-cased and checked; None picks
    every method that applies."""
    if method is None:
        kinds = set(kinds_of(estimates)) if len(estimates) else set()
        chosen = ["percentile"] + (["basic", "normal"] if BOOTSTRAP in kinds else [])
        chosen += ["bca"] if JACKKNIFE in kinds else []
        return chosen + (list(CLOSED_FORM_METHODS) if has_design else [])
    chosen = [method.lower()] if isinstance(method, str) else [str(m).lower() for m in method]
    unknown = [m for m in chosen if m not in METHODS]
    if unknown or not chosen:
        raise ValueError(f"`method` must be one or more of {', '.join(METHODS)}; got {method!r}")
    if not has_design and any(m in DESIGN_METHODS for m in chosen):
        raise ValueError(
            "`method` t, hc3, hac and studentized need the closed-form OLS design: pass it as X= "
            "(features) and y= (response)"
        )
    return list(dict.fromkeys(chosen))


def _design_iv(
    X: Optional[np.ndarray], y: Optional[np.ndarray], params: Sequence[str], hac_lags: Optional[int] = None
) -> Optional[ClosedFormDesign]:
    """The closed-form fit of the design, if one was given; a misuse of the arguments raises,
    a design that cannot be fitted (data) gives a fit of None and the reason."""
    if X is None and y is None:
        return None
    if X is None or y is None:
        raise ValueError("`X` and `y` go together: pass both (the features and the response) or neither")
    X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float).reshape(-1)
    if X.ndim != 2 or X.shape[1] != len(params) or X.shape[0] != len(y):
        raise ValueError(
            f"`X` must be (rows, {len(params)}: one column per parameter) and `y` (rows,); "
            f"got X {X.shape} and y {y.shape}"
        )
    if hac_lags is not None and (
        isinstance(hac_lags, bool) or not isinstance(hac_lags, (int, np.integer)) or hac_lags < 0
    ):
        raise ValueError(f"`hac_lags` must be a whole number >= 0 or None; got {hac_lags!r}")
    return fit_design(X, y, hac_lags)


def _warn(table: pd.DataFrame, by: Sequence[str], max_dropped_share: float) -> None:
    closed = table[table["method"].isin(CLOSED_FORM_METHODS) & table["lower"].isna()]
    if len(closed):
        warnings.warn(
            f"{len(closed)} closed-form interval(s) without bounds: {closed['note'].iloc[0]}",
            DegenerateCellWarning,
            stacklevel=3,
        )
    boot = table[table["method"].isin(BOOTSTRAP_METHODS)]
    if boot.empty:
        return
    bad = boot[boot["lower"].isna() & (boot["n_used"] + boot["n_dropped"] > 0)]
    if len(bad):
        warnings.warn(
            f"{len(bad)} interval(s) without bounds: {bad['note'].iloc[0]}", DegenerateCellWarning, stacklevel=3
        )
    total = (boot["n_used"] + boot["n_dropped"]).astype(float)
    heavy = boot[boot["n_dropped"].astype(float) > max_dropped_share * total]
    if len(heavy):
        row = heavy.iloc[0]
        n_cells = len(heavy.drop_duplicates(subset=list(by))) if by else 1
        warnings.warn(
            f"{n_cells} cell(s) dropped more than {max_dropped_share:.0%} of their bootstrap draws, "
            f"e.g. {row['n_dropped']} of {row['n_used'] + row['n_dropped']} ({row['dropped']})",
            DroppedRunsWarning,
            stacklevel=3,
        )


def _table(
    estimates: pd.DataFrame,
    params: Sequence[str],
    methods: Sequence[str],
    level: float,
    by: Sequence[str],
    statuses: Sequence[str],
    max_dropped_share: float,
    design: Optional[ClosedFormDesign],
    units: str,
) -> pd.DataFrame:
    """The intervals of every cell in one set of units."""
    boot_methods = [m for m in methods if m in BOOTSTRAP_METHODS]
    form_methods = [m for m in methods if m in CLOSED_FORM_METHODS]
    order = {(p, m): i for i, (p, m) in enumerate((p, m) for p in params for m in methods)}
    rows = []
    for key, frame in grid_cells(estimates, by):
        cell = split_cell(frame, statuses)
        cell_rows = _bootstrap_rows(cell, params, boot_methods, level, statuses, max_dropped_share)
        cell_rows += _closed_form_rows(cell, params, form_methods, level, design) if form_methods else []
        note_dependence(cell_rows, cell.scheme, design)
        rows += [
            {**key, **row, "units": units}
            for row in sorted(cell_rows, key=lambda r: order[r["parameter"], r["method"]])
        ]
    table = pd.DataFrame(rows, columns=[*by, *COLUMNS])
    for col in ("n_used", "n_dropped", "n_dropped_diverged", "n_dropped_not_converged"):
        table[col] = table[col].astype("Int64")  # NA for the closed-form methods, which use no draws
    return table


def warn_about(table: pd.DataFrame, by: Sequence[str] = GRID_COLUMNS, max_dropped_share: float = 0.1) -> None:
    """The warnings `bootstrap_intervals` gives, for a table built cell by cell."""
    _warn(table, by, max_dropped_share)


def bootstrap_intervals(
    estimates: pd.DataFrame,
    *,
    params: Sequence[str],
    method: Union[str, Sequence[str], None] = None,
    level: float = 0.95,
    by: Sequence[str] = GRID_COLUMNS,
    statuses: Sequence[str] = ("ok",),
    max_dropped_share: float = 0.1,
    X: Optional[np.ndarray] = None,
    y: Optional[np.ndarray] = None,
    raw_units: Optional[np.ndarray] = None,
    hac_lags: Optional[int] = None,
    draw_rule: str = DRAW_RULE,
    draw_settings: Optional[Mapping[str, Any]] = None,
) -> pd.DataFrame:
    """Per grid cell, parameter and method: the estimate on the original rows and its interval.

    `method` is one name or a list of `METHODS`; None takes every one that applies:
    percentile, basic and normal (the latter two when there are bootstrap draws), bca
    when there are jackknife fits, t, hc3 and hac when `X` (features, one column per
    parameter, rows in their order) and `y` (response) are given. `studentized` (bootstrap-t)
    is computed only when asked for, and needs `X` and `y` (each draw's OLS se from its own
    rows, drawn again by `draw_rule` and `draw_settings`: the sweep folder's, `SweepMeta.draw_rule`
    and `.draw_settings()`).

    Runs whose status is not in `statuses` (by default: diverged or not converged) are
    left out and counted in `n_dropped` (and by reason). A cell with fewer than two
    usable draws gets NaN bounds, a `note` saying why, and a `DegenerateCellWarning`;
    a cell dropping more than `max_dropped_share` of its draws gets a note and a
    `DroppedRunsWarning`. Columns: the `by` columns, then `COLUMNS`.

    `raw_units`: the matrix M of `stats.raw_units` (theta_raw = M theta). Given, the
    table has `units` raw rows (every parameter in the data's own units) before the
    `units` fitted rows; otherwise every row's `units` is fitted.

    `hac_lags`: the Newey-West lags of `hac` (None: floor(4 (n / 100)^(2/9))). When the
    residuals of the OLS fit look dependent (`cells.dependence_note`), the rows of the methods
    that assume independent rows say so in their `note`. `block_length`: the draws' (mean)
    block length in a block scheme's cells, NaN elsewhere.

    A design that cannot give the closed-form fit (rank-deficient, no more rows than
    parameters, non-finite) gives t, hc3 and hac rows with NaN bounds and a `note`: data never
    make this raise; wrong arguments (columns, shapes, level) do.
    """
    if not 0 < level < 1:
        raise ValueError(f"`level` must lie between 0 and 1; got {level}")
    if not 0 <= max_dropped_share <= 1:
        raise ValueError(f"`max_dropped_share` must lie between 0 and 1; got {max_dropped_share}")
    missing = [c for c in ("resample", "status", *params, *by) if c not in estimates.columns]
    if missing:
        raise ValueError(f"`estimates` lack column(s) {', '.join(missing)}")
    design = _design_iv(X, y, params, hac_lags)
    methods = applicable_methods(method, estimates, design is not None)
    matrix = raw_matrix_iv(raw_units, params)
    covs = None
    if "studentized" in methods:  # each draw solved once, for both units
        runs = estimates[kinds_of(estimates).isin([ORIGINAL, BOOTSTRAP])]
        covs = draw_covariances(runs, np.asarray(X, dtype=float), np.asarray(y, dtype=float), draw_rule, draw_settings)
    common = (methods, level, by, statuses, max_dropped_share)
    tables = []
    if matrix is not None:
        raw = in_raw_units(estimates, params, matrix)
        raw = with_draw_se(raw, params, X, y, matrix, covs, draw_rule) if covs is not None else raw
        tables.append(_table(raw, params, *common, None if design is None else design.mapped(matrix), RAW))
    fitted = with_draw_se(estimates, params, X, y, None, covs, draw_rule) if covs is not None else estimates
    tables.append(_table(fitted, params, *common, design, FITTED))
    _warn(tables[-1], by, max_dropped_share)  # once: the raw rows share the fitted rows' draws
    return pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
