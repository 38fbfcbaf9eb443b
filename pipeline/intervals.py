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
`t` and `hc3` need the design: pass the feature matrix `X` and the response `y`.

Monte-Carlo error of an endpoint (`mc_se_lower`, `mc_se_upper`): for the quantile-based
methods the asymptotic standard error of a sample quantile, sqrt(p (1 - p) / B) / f(q),
with f a Gaussian kernel density estimate of the bootstrap values (for bca, p is its
adjusted level; the Monte-Carlo error of z0 is not included); for `normal`,
z se / sqrt(2 (B - 1)), the error of a standard deviation; 0 for the closed-form methods.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd
from scipy import stats
from scipy.linalg import solve_triangular
from scipy.special import ndtr, ndtri

from pipeline.records import BOOTSTRAP, CASE, JACKKNIFE, ORIGINAL, resample_kind

METHODS = ("percentile", "basic", "bca", "normal", "t", "hc3")
BOOTSTRAP_METHODS = ("percentile", "basic", "bca", "normal")
CLOSED_FORM_METHODS = ("t", "hc3")
GRID_COLUMNS = ("lr", "init_index")
DROP_REASONS = ("diverged", "not_converged")
# A point estimate further than this share of a bootstrap SE from the closed-form optimum
# is called unconverged in the note: the interval then describes the optimiser.
GAP_SHARE_OF_SE = 0.1

COLUMNS = ("parameter", "method", "level", "scheme", "estimate", "lower", "upper", "se", "n_used",
           "n_dropped", "n_dropped_diverged", "n_dropped_not_converged", "dropped", "mc_se_lower",
           "mc_se_upper", "gap_to_ols", "z0", "acceleration", "estimate_status", "note")


class DegenerateCellWarning(UserWarning):
    """A grid cell had too few usable resamples for an interval: its bounds are NaN, with the reason."""


class DroppedRunsWarning(UserWarning):
    """A grid cell left out more than `max_dropped_share` of its bootstrap draws."""


@dataclass
class _Bounds:
    """One interval of one parameter, with its Monte-Carlo errors and why it may be missing."""

    lower: float = np.nan
    upper: float = np.nan
    mc_se_lower: float = np.nan
    mc_se_upper: float = np.nan
    z0: float = np.nan
    acceleration: float = np.nan
    note: str = ""


# --- the formulas, on plain arrays --------------------------------------------------------------


def _density(values: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Gaussian kernel density with Scott's bandwidth: scipy.stats.gaussian_kde in one dimension."""
    bandwidth = np.std(values, ddof=1) * len(values) ** -0.2
    z = (points[:, None] - values[None, :]) / bandwidth
    return np.exp(-0.5 * z**2).mean(axis=1) / (bandwidth * np.sqrt(2 * np.pi))


def _quantile_mc_se(values: np.ndarray, probs: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """sqrt(p (1 - p) / B) / f(q): the Monte-Carlo standard error of sample quantiles."""
    if len(values) < 3 or np.ptp(values) == 0:
        return np.full(len(probs), np.nan)
    with np.errstate(divide="ignore"):
        return np.sqrt(probs * (1 - probs) / len(values)) / _density(values, quantiles)


def _quantile_bounds(values: np.ndarray, probs: np.ndarray) -> _Bounds:
    q = np.quantile(values, probs)
    mc = _quantile_mc_se(values, probs, q)
    return _Bounds(float(q[0]), float(q[1]), float(mc[0]), float(mc[1]))


def percentile_bounds(boot: np.ndarray, alpha: float) -> _Bounds:
    return _quantile_bounds(boot, np.array([alpha / 2, 1 - alpha / 2]))


def basic_bounds(boot: np.ndarray, theta_hat: float, alpha: float) -> _Bounds:
    p = percentile_bounds(boot, alpha)
    return _Bounds(2 * theta_hat - p.upper, 2 * theta_hat - p.lower, p.mc_se_upper, p.mc_se_lower)


def normal_bounds(boot: np.ndarray, theta_hat: float, alpha: float) -> _Bounds:
    se, z = float(np.std(boot, ddof=1)), float(ndtri(1 - alpha / 2))
    mc = z * se / np.sqrt(2 * (len(boot) - 1))
    return _Bounds(theta_hat - z * se, theta_hat + z * se, mc, mc)


def bca_bounds(boot: np.ndarray, theta_hat: float, jack: np.ndarray, alpha: float) -> _Bounds:
    """scipy.stats.bootstrap's BCa interval (Efron and Tibshirani 14.3, 15.4) from given values."""
    share = (np.count_nonzero(boot < theta_hat) + np.count_nonzero(boot <= theta_hat)) / (2 * len(boot))
    z0 = float(ndtri(share))
    u = jack.mean() - jack  # scipy's (n - 1) factor cancels in the ratio below
    with np.errstate(divide="ignore", invalid="ignore"):
        a = float(np.sum(u**3) / (6 * np.sum(u**2) ** 1.5))
    levels = []
    for z in (float(ndtri(alpha / 2)), float(ndtri(1 - alpha / 2))):
        num = z0 + z
        with np.errstate(divide="ignore", invalid="ignore"):
            levels.append(float(ndtr(z0 + num / (1 - a * num))))
    if not np.isfinite(z0):
        return _Bounds(z0=z0, acceleration=a, note="bca undefined: the estimate lies outside the bootstrap "
                                                   "distribution (z0 infinite)")
    if not all(np.isfinite(levels)):
        return _Bounds(z0=z0, acceleration=a, note="bca undefined: the jackknife values are all equal "
                                                   "(no acceleration)")
    bounds = _quantile_bounds(boot, np.array(levels))
    bounds.z0, bounds.acceleration = z0, a
    return bounds


@dataclass(frozen=True)
class OLSFit:
    """Closed-form least squares on the original rows, with classical and HC3 standard errors."""

    coef: np.ndarray
    se: np.ndarray
    se_hc3: np.ndarray
    df: int


def ols_fit(X: np.ndarray, y: np.ndarray) -> OLSFit:
    """OLS by QR; the classical se from s^2 (X'X)^-1, HC3 from residuals scaled by 1 / (1 - h)."""
    n, p = X.shape
    q, r = np.linalg.qr(X)
    coef = solve_triangular(r, q.T @ y)
    resid = y - X @ coef
    r_inv = solve_triangular(r, np.eye(p))
    xtx_inv = r_inv @ r_inv.T
    s2 = resid @ resid / (n - p)
    leverage = np.sum(q**2, axis=1)
    scaled = X * (resid / (1 - leverage))[:, None]
    cov_hc3 = xtx_inv @ (scaled.T @ scaled) @ xtx_inv
    return OLSFit(coef, np.sqrt(s2 * np.diag(xtx_inv)), np.sqrt(np.diag(cov_hc3)), n - p)


def closed_form_bounds(fit: OLSFit, method: str, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(se, lower, upper) of every coefficient for `t` or `hc3`."""
    if method == "t":
        se, crit = fit.se, stats.t.ppf(1 - alpha / 2, fit.df)
    else:
        se, crit = fit.se_hc3, ndtri(1 - alpha / 2)
    return se, fit.coef - crit * se, fit.coef + crit * se


# --- the table ----------------------------------------------------------------------------------


@dataclass
class _Cell:
    """One grid cell's runs, split by kind and by whether their status is used."""

    original: Optional[pd.Series]  # the run on the original rows
    boot: pd.DataFrame  # bootstrap draws whose status is used
    dropped: pd.Series  # statuses of the bootstrap draws left out
    jack: pd.DataFrame  # jackknife fits whose status is used
    jack_dropped: pd.Series
    scheme: str

    @property
    def n_boot(self) -> int:
        return len(self.boot) + len(self.dropped)


def kinds_of(frame: pd.DataFrame) -> pd.Series:
    """Each run's kind (original, bootstrap, jackknife): the `kind` column, else from `resample`."""
    from_resample = frame["resample"].map(resample_kind)
    if "kind" not in frame.columns:
        return from_resample
    return frame["kind"].where(frame["kind"].notna(), from_resample)


def _split_cell(cell: pd.DataFrame, statuses: Sequence[str]) -> _Cell:
    kinds = kinds_of(cell)
    used = cell["status"].isin(statuses)
    original = cell[kinds == ORIGINAL]
    boot_all = cell[kinds == BOOTSTRAP]
    schemes = boot_all["scheme"].dropna().unique() if "scheme" in cell.columns else []
    return _Cell(
        original=original.iloc[0] if len(original) else None,
        boot=boot_all[used[kinds == BOOTSTRAP]],
        dropped=boot_all.loc[~used[kinds == BOOTSTRAP], "status"],
        jack=cell[(kinds == JACKKNIFE) & used],
        jack_dropped=cell.loc[(kinds == JACKKNIFE) & ~used, "status"],
        scheme="/".join(sorted(schemes)) if len(schemes) else CASE,
    )


def _counts(statuses: pd.Series) -> str:
    return "; ".join(f"{status}: {n}" for status, n in statuses.value_counts().sort_index().items())


def _cell_notes(cell: _Cell, statuses: Sequence[str], max_dropped_share: float) -> tuple[list[str], list[str]]:
    """(notes that make the cell's bootstrap intervals impossible, notes that qualify them)."""
    fatal, caveats = [], []
    if cell.n_boot == 0:
        fatal.append("no bootstrap resamples in this cell (sweep.resamples=0)")
    elif len(cell.boot) < 2:
        fatal.append(f"{len(cell.boot)} usable resample(s) of {cell.n_boot} (statuses used: "
                     f"{', '.join(statuses)}; dropped {_counts(cell.dropped)})")
    if cell.n_boot and len(cell.dropped) / cell.n_boot > max_dropped_share and len(cell.boot) >= 2:
        caveats.append(f"{len(cell.dropped)} of {cell.n_boot} draws dropped ({_counts(cell.dropped)}), more than "
                       f"max_dropped_share={max_dropped_share:g}: the draws kept may not be a random subset")
    unconverged = int((cell.boot["status"] != "ok").sum())
    if unconverged:
        caveats.append(f"{unconverged} of the draws used did not converge: the interval describes the optimiser "
                       "as much as the data")
    return fatal, caveats


def _estimate_notes(cell: _Cell, name: str, statuses: Sequence[str], se: float) -> tuple[list[str], list[str], float]:
    """(fatal notes, caveats, gap to the closed-form optimum) for the point estimate."""
    if cell.original is None:
        return ["no run on the original rows (resample 0) in this cell"], [], np.nan
    fatal, caveats = [], []
    status = cell.original["status"]
    if status not in statuses:
        fatal.append(f"the fit on the original rows is {status}")
    ols_col = f"ols_{name}"
    gap = abs(float(cell.original[name]) - float(cell.original[ols_col])) if ols_col in cell.original.index \
        and pd.notna(cell.original[ols_col]) else np.nan
    if np.isfinite(gap) and (status != "ok" or (np.isfinite(se) and gap > GAP_SHARE_OF_SE * se)):
        share = f" = {gap / se:.2g} bootstrap SEs" if np.isfinite(se) and se > 0 else ""
        caveats.append(f"the point estimate is {gap:.3g} from the closed-form optimum{share}: an interval of "
                       "unconverged fits describes the optimiser, not the data")
    return fatal, caveats, gap


def _bootstrap_bounds(method: str, boot: np.ndarray, theta_hat: float, jack: np.ndarray, alpha: float) -> _Bounds:
    if method == "percentile":
        return percentile_bounds(boot, alpha)
    if method == "basic":
        return basic_bounds(boot, theta_hat, alpha)
    if method == "normal":
        return normal_bounds(boot, theta_hat, alpha)
    return bca_bounds(boot, theta_hat, jack, alpha)


def _bca_note(cell: _Cell) -> tuple[bool, str]:
    """(whether bca can be formed, why not or how its acceleration was found)."""
    n_jack = len(cell.jack) + len(cell.jack_dropped)
    if n_jack == 0:
        return False, "bca needs jackknife fits (sweep.jackknife=true); none in this cell"
    if len(cell.jack) < 3:
        return False, (f"bca needs at least 3 usable jackknife fits; {len(cell.jack)} of {n_jack} "
                       f"({_counts(cell.jack_dropped)})")
    if len(cell.jack_dropped):
        return True, f"acceleration from {len(cell.jack)} of {n_jack} jackknife fits ({_counts(cell.jack_dropped)})"
    return True, ""


def _bootstrap_rows(cell: _Cell, params: Sequence[str], methods: Sequence[str], level: float,
                    statuses: Sequence[str], max_dropped_share: float) -> list[dict]:
    alpha = 1.0 - level
    cell_fatal, cell_caveats = _cell_notes(cell, statuses, max_dropped_share)
    dropped = cell.dropped
    common = {"level": level, "scheme": cell.scheme, "n_used": len(cell.boot), "n_dropped": len(dropped),
              "n_dropped_diverged": int((dropped == "diverged").sum()),
              "n_dropped_not_converged": int((dropped == "not_converged").sum()), "dropped": _counts(dropped),
              "estimate_status": None if cell.original is None else cell.original["status"]}
    rows = []
    for name in params:
        boot = cell.boot[name].to_numpy(dtype=float)
        se = float(np.std(boot, ddof=1)) if len(boot) >= 2 else np.nan
        est_fatal, est_caveats, gap = _estimate_notes(cell, name, statuses, se)
        theta_hat = np.nan if cell.original is None else float(cell.original[name])
        for method in methods:
            # percentile needs only the distribution; the others are built around theta_hat
            fatal = bool(cell_fatal or (est_fatal and method != "percentile"))
            bca_ok, bca_note = _bca_note(cell) if method == "bca" else (True, "")
            bounds = _Bounds() if fatal or not bca_ok else _bootstrap_bounds(
                method, boot, theta_hat, cell.jack[name].to_numpy(dtype=float), alpha)
            notes = cell_fatal + est_fatal + [bca_note, bounds.note] + cell_caveats + est_caveats
            rows.append({"parameter": name, "method": method, **common, "estimate": theta_hat,
                         "lower": bounds.lower, "upper": bounds.upper, "se": se,
                         "mc_se_lower": bounds.mc_se_lower, "mc_se_upper": bounds.mc_se_upper,
                         "gap_to_ols": gap, "z0": bounds.z0, "acceleration": bounds.acceleration,
                         "note": "; ".join(n for n in notes if n)})
    return rows


def _closed_form_rows(cell: _Cell, params: Sequence[str], methods: Sequence[str], level: float,
                      fit: OLSFit) -> list[dict]:
    rows = []
    for method in methods:
        se, lower, upper = closed_form_bounds(fit, method, 1.0 - level)
        for j, name in enumerate(params):
            gap = np.nan if cell.original is None else abs(float(cell.original[name]) - fit.coef[j])
            rows.append({"parameter": name, "method": method, "level": level, "scheme": None,
                         "estimate": fit.coef[j], "lower": lower[j], "upper": upper[j], "se": se[j],
                         "n_used": pd.NA, "n_dropped": pd.NA, "n_dropped_diverged": pd.NA,
                         "n_dropped_not_converged": pd.NA, "dropped": "", "mc_se_lower": 0.0,
                         "mc_se_upper": 0.0, "gap_to_ols": gap, "z0": np.nan, "acceleration": np.nan,
                         "estimate_status": None if cell.original is None else cell.original["status"],
                         "note": ""})
    return rows


def _methods_iv(method: Union[str, Sequence[str], None], estimates: pd.DataFrame, has_design: bool) -> list[str]:
    """The methods to compute, lower-cased and checked; None picks every one that applies."""
    if method is None:
        kinds = set(kinds_of(estimates)) if len(estimates) else set()
        chosen = ["percentile"] + (["basic", "normal"] if BOOTSTRAP in kinds else [])
        chosen += ["bca"] if JACKKNIFE in kinds else []
        return chosen + (list(CLOSED_FORM_METHODS) if has_design else [])
    chosen = [method.lower()] if isinstance(method, str) else [str(m).lower() for m in method]
    unknown = [m for m in chosen if m not in METHODS]
    if unknown or not chosen:
        raise ValueError(f"`method` must be one or more of {', '.join(METHODS)}; got {method!r}")
    if not has_design and any(m in CLOSED_FORM_METHODS for m in chosen):
        raise ValueError("`method` t and hc3 are closed-form OLS intervals: pass the design as X= (features) "
                         "and y= (response)")
    return list(dict.fromkeys(chosen))


def applicable_methods(method: Union[str, Sequence[str], None], estimates: pd.DataFrame,
                       has_design: bool) -> list[str]:
    """What `bootstrap_intervals` computes for `method` (None: every method that applies)."""
    return _methods_iv(method, estimates, has_design)


def _design_iv(X: Optional[np.ndarray], y: Optional[np.ndarray], params: Sequence[str]) -> Optional[OLSFit]:
    if X is None and y is None:
        return None
    if X is None or y is None:
        raise ValueError("`X` and `y` go together: pass both (the features and the response) or neither")
    X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float).reshape(-1)
    if X.ndim != 2 or X.shape[1] != len(params) or X.shape[0] != len(y):
        raise ValueError(f"`X` must be (rows, {len(params)}: one column per parameter) and `y` (rows,); "
                         f"got X {X.shape} and y {y.shape}")
    if X.shape[0] <= X.shape[1] or np.linalg.matrix_rank(X) < X.shape[1]:
        raise ValueError(f"`X` must have full column rank and more rows than columns; got {X.shape} "
                         f"of rank {np.linalg.matrix_rank(X)}")
    return ols_fit(X, y)


def _cells(estimates: pd.DataFrame, by: Sequence[str]):
    if not by:
        yield {}, estimates
        return
    for key, cell in estimates.groupby(list(by), sort=True, dropna=False):
        yield dict(zip(by, key if isinstance(key, tuple) else (key,))), cell


def _warn(table: pd.DataFrame, by: Sequence[str], max_dropped_share: float) -> None:
    boot = table[table["method"].isin(BOOTSTRAP_METHODS)]
    if boot.empty:
        return
    bad = boot[boot["lower"].isna() & (boot["n_used"] + boot["n_dropped"] > 0)]
    if len(bad):
        warnings.warn(f"{len(bad)} interval(s) without bounds: {bad['note'].iloc[0]}",
                      DegenerateCellWarning, stacklevel=3)
    total = (boot["n_used"] + boot["n_dropped"]).astype(float)
    heavy = boot[boot["n_dropped"].astype(float) > max_dropped_share * total]
    if len(heavy):
        row = heavy.iloc[0]
        n_cells = len(heavy.drop_duplicates(subset=list(by))) if by else 1
        warnings.warn(f"{n_cells} cell(s) dropped more than {max_dropped_share:.0%} of their bootstrap draws, "
                      f"e.g. {row['n_dropped']} of {row['n_used'] + row['n_dropped']} ({row['dropped']})",
                      DroppedRunsWarning, stacklevel=3)


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
) -> pd.DataFrame:
    """Per grid cell, parameter and method: the estimate on the original rows and its interval.

    `method` is one name or a list of `METHODS`; None takes every one that applies:
    percentile, basic and normal (the latter two when there are bootstrap draws), bca
    when there are jackknife fits, t and hc3 when `X` (features, one column per
    parameter) and `y` (response) are given.

    Runs whose status is not in `statuses` (by default: diverged or not converged) are
    left out and counted in `n_dropped` (and by reason). A cell with fewer than two
    usable draws gets NaN bounds, a `note` saying why, and a `DegenerateCellWarning`;
    a cell dropping more than `max_dropped_share` of its draws gets a note and a
    `DroppedRunsWarning`. Columns: the `by` columns, then `COLUMNS`.
    """
    if not 0 < level < 1:
        raise ValueError(f"`level` must lie between 0 and 1; got {level}")
    if not 0 <= max_dropped_share <= 1:
        raise ValueError(f"`max_dropped_share` must lie between 0 and 1; got {max_dropped_share}")
    missing = [c for c in ("resample", "status", *params, *by) if c not in estimates.columns]
    if missing:
        raise ValueError(f"`estimates` lack column(s) {', '.join(missing)}")
    fit = _design_iv(X, y, params)
    methods = _methods_iv(method, estimates, fit is not None)
    boot_methods = [m for m in methods if m in BOOTSTRAP_METHODS]
    form_methods = [m for m in methods if m in CLOSED_FORM_METHODS]
    rows = []
    for key, frame in _cells(estimates, by):
        cell = _split_cell(frame, statuses)
        cell_rows = _bootstrap_rows(cell, params, boot_methods, level, statuses, max_dropped_share)
        cell_rows += _closed_form_rows(cell, params, form_methods, level, fit) if form_methods else []
        order = {(p, m): i for i, (p, m) in enumerate((p, m) for p in params for m in methods)}
        rows += [{**key, **row} for row in sorted(cell_rows, key=lambda r: order[r["parameter"], r["method"]])]
    table = pd.DataFrame(rows, columns=[*by, *COLUMNS])
    for col in ("n_used", "n_dropped", "n_dropped_diverged", "n_dropped_not_converged"):
        table[col] = table[col].astype("Int64")  # NA for the closed-form methods, which use no draws
    _warn(table, by, max_dropped_share)
    return table
