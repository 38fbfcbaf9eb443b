"""`report.html`: one self-contained page per sweep folder that shows the sweep as a whole.

`write_report(out_dir)` reads only the folder's files (`config.yaml`, `sweep.json`,
`plan.parquet`, `estimates.parquet`, `curves.parquet`, `intervals.parquet` and, when
present, `predictions.parquet` and `.hydra/overrides.yaml`); it never trains or loads the data. The page has
inline CSS, figures as base64 PNGs (matplotlib's Agg canvas) and no JavaScript, so it
opens from disk anywhere. A missing or empty input is said on the page, and a section
that cannot be drawn says why while the others still are: writing a report never fails
because of what the sweep produced. Everything taken from the folder is HTML-escaped.
"""

from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from pipeline import store
from pipeline.report.contents import Sweep, load_sweep_folder
from pipeline.report.html import CSS, esc, figure, fmt, html_table, missing

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"
METHOD_ORDER = ("percentile", "basic", "bca", "normal", "t", "hc3", "hac")
MAX_TABLE_ROWS = 600  # interval rows shown; the Parquet file has them all
MAX_PARAM_FIGURES = 12  # bootstrap figures; the first few are open, the rest folded
MC_WARN_SHARE = 0.1  # an endpoint's Monte-Carlo error above this share of the width is flagged


# --- the sections -------------------------------------------------------------------------------


def _command(sweep: Sweep) -> str:
    if sweep.overrides is not None:
        line = " ".join(["pipeline-sweep", *(shlex.quote(o) for o in sweep.overrides)])
        out = f'<pre class="cmd">{esc(line)}</pre><p class="note">from .hydra/overrides.yaml</p>'
    else:
        out = missing(
            "No .hydra/overrides.yaml: this sweep was not launched from the command line "
            "(e.g. in-process), so its command is unknown; the resolved config below is what ran."
        )
    if sweep.meta:
        meta = pd.DataFrame({"key": list(sweep.meta), "value": [fmt(v) for v in sweep.meta.values()]})
        out += "<h3>sweep.json</h3>" + html_table(meta)
    if sweep.config_text is not None:
        out += f"<details><summary>resolved config (config.yaml)</summary><pre>{esc(sweep.config_text)}</pre></details>"
    else:
        out += missing("config.yaml is missing: the resolved config cannot be shown.")
    return out


def _runs(sweep: Sweep) -> str:
    plan, est = sweep.table("plan"), sweep.table("estimates")
    if plan.empty and est.empty:
        return missing("No plan and no estimates: nothing to count.")
    kinds = list(dict.fromkeys([*plan.get("kind", pd.Series(dtype=str)), *est.get("kind", pd.Series(dtype=str))]))
    statuses = list(dict.fromkeys(["ok", "not_converged", "diverged", *est.get("status", [])]))
    rows = []
    for kind in [*kinds, "all"]:
        p = plan if kind == "all" or plan.empty else plan[plan["kind"] == kind]
        e = est if kind == "all" or est.empty else est[est["kind"] == kind]
        found = e["status"].value_counts() if len(e) else pd.Series(dtype=int)
        rows.append(
            {
                "kind": kind,
                "planned": len(p),
                "found": len(e),
                **{s: int(found.get(s, 0)) for s in statuses},
                "no result yet": max(len(p) - len(e), 0),
            }
        )
    out = html_table(pd.DataFrame(rows), row_classes=[""] * len(kinds) + ["total"])
    if len(plan) and "run_id" in plan and "run_id" in est:
        absent = sorted(set(plan["run_id"]) - set(est["run_id"]))
        if absent:
            out += missing(
                f"{len(absent)} planned run(s) have no result yet, e.g. {', '.join(absent[:3])}: "
                "see pipeline-status, or relaunch the sweep to train only those."
            )
    return out


def _original(sweep: Sweep) -> pd.DataFrame:
    est = sweep.table("estimates")
    return est[est["kind"] == "original"] if len(est) else est


def _grid(sweep: Sweep) -> str:
    from pipeline.report.figures import grid_figure, init_label

    original = _original(sweep)
    if original.empty:
        return missing("No fit on the original rows (resample 0) was found: no lr x init map.")
    fig = figure(
        grid_figure(original),
        "lr x init map of the final loss",
        "Final loss of the fit on the original rows per learning rate and initial values, on a log "
        "colour scale, with its status (dark grey: no finite loss).",
    )
    cols = [
        c
        for c in ("lr", "init_index", "status", "final_loss", "test_loss", "grad_norm", "epochs", "gap_to_ols")
        if c in original.columns
    ]
    table = original[cols].sort_values(["lr", "init_index"]).copy()
    table.insert(2, "init", [init_label(i, v) for i, v in zip(original["init_index"], original["init"])])
    return fig + html_table(table)


def _curves(sweep: Sweep) -> str:
    from pipeline.report.figures import curves_figure

    curves, est = sweep.table("curves"), sweep.table("estimates")
    if curves.empty or est.empty:
        return missing("No loss curves (curves.parquet or estimates.parquet is missing or empty).")
    runs = est.loc[est["kind"] != "jackknife", ["run_id", "lr", "init_index", "status"]]
    joined = curves.merge(runs, on="run_id")
    if joined.empty:
        return missing("No curve belongs to an original or bootstrap run of this sweep.")
    return figure(
        curves_figure(joined),
        "training loss curves per learning rate",
        "Training loss per logged epoch, log scale: per initial value the median over the fits on the "
        "original rows and the bootstrap draws still finite at that epoch, and the 10-90% band "
        "(jackknife fits left out); x near the top: the logged epoch where diverged runs stopped "
        "(their loss no longer finite), with how many." + _sampled(sweep),
    )


def _sampled(sweep: Sweep) -> str:
    if sweep.curve_sample is None:
        return ""
    per_cell, read, total = sweep.curve_sample
    return (
        f" Drawn from the first {per_cell:,} runs of each learning rate and initial value "
        f"({read:,} of {total:,} runs; counts are of those): curves.parquet holds every run's curve."
    )


def _bootstrap(sweep: Sweep) -> str:
    from pipeline.report.figures import bootstrap_figure

    est = sweep.table("estimates")
    if est.empty or not (est["kind"] == "bootstrap").any():
        return missing(
            "This sweep has no bootstrap draws (sweep.resamples = 0): no bootstrap distribution; "
            "only closed-form intervals (t, hc3) can exist, see the intervals table."
        )
    level = sweep.table("intervals").get("level", pd.Series([sweep.setting("level", 0.95)])).iloc[0]
    out = (
        f'<p class="note">Usable draws: status in {esc(", ".join(sweep.statuses))}. Bars under each '
        f"histogram: the {fmt(100 * level)}% interval of each method.</p>"
    )
    params = sweep.params
    for k, name in enumerate(params[:MAX_PARAM_FIGURES]):
        fig = figure(
            bootstrap_figure(est, sweep.table("intervals"), name, sweep.statuses), f"bootstrap distribution of {name}"
        )
        out += f"<details{' open' if k < 3 else ''}><summary>{esc(name)}</summary>{fig}</details>"
    if len(params) > MAX_PARAM_FIGURES:
        out += missing(
            f"First {MAX_PARAM_FIGURES} of {len(params)} parameters shown; the intervals table has them all."
        )
    return out


def _interval_rows(ci: pd.DataFrame, params: list) -> pd.DataFrame:
    """Grid cell, then the parameters in the model's order, then the methods in the README's order."""
    methods, names = {m: i for i, m in enumerate(METHOD_ORDER)}, {n: i for i, n in enumerate(params)}
    ci = ci.assign(_p=ci["parameter"].map(names).fillna(len(names)), _m=ci["method"].map(methods).fillna(len(methods)))
    return ci.sort_values(["lr", "init_index", "_p", "_m"], kind="stable").drop(columns=["_p", "_m"])


def _notes(table: pd.DataFrame) -> list:
    """The distinct non-empty notes of a table, in order: each is printed once, rows link to it."""
    return list(dict.fromkeys(n for n in table.get("note", pd.Series(dtype=str)).fillna("") if n))


def _note_links(shown: pd.DataFrame, notes: list, prefix: str) -> list:
    return [
        f'<a href="#{prefix}-{notes.index(n) + 1}">[{notes.index(n) + 1}]</a>' if n else ""
        for n in shown.get("note", pd.Series([""] * len(shown))).fillna("")
    ]


def _note_list(notes: list, prefix: str) -> str:
    if not notes:
        return ""
    return (
        "<h3>Notes</h3><ol class=notes>"
        + "".join(f'<li id="{prefix}-{i + 1}">{esc(n)}</li>' for i, n in enumerate(notes))
        + "</ol>"
    )


def _intervals(sweep: Sweep) -> str:
    ci = sweep.table("intervals")
    if ci.empty:
        return missing("No intervals (intervals.parquet is missing or empty).")
    ci = _interval_rows(ci, sweep.params)
    notes = _notes(ci)
    cols = [
        c
        for c in (
            "lr",
            "init_index",
            "parameter",
            "units",
            "method",
            "scheme",
            "block_length",
            "estimate",
            "lower",
            "upper",
            "se",
            "mc_se_lower",
            "mc_se_upper",
            "n_used",
            "n_dropped",
        )
        if c in ci.columns and (c != "block_length" or ci[c].notna().any())  # block schemes only
    ]
    shown = ci.head(MAX_TABLE_ROWS)
    table = shown[cols].copy()
    table["note"] = _note_links(shown, notes, "note")
    width = shown["upper"] - shown["lower"]
    mc = shown[["mc_se_lower", "mc_se_upper"]].max(axis=1) if "mc_se_upper" in shown else width * 0
    classes = ["empty" if not np.isfinite(w) else "warn" if m > MC_WARN_SHARE * w else "" for w, m in zip(width, mc)]
    out = (
        f'<p class="note">Grey rows: no bounds (see the note). Yellow rows: an endpoint\'s Monte-Carlo error '
        f"exceeds {MC_WARN_SHARE:.0%} of the interval's width; more resamples would help.</p>"
    )
    out += html_table(table, row_classes=classes, raw=("note",))
    if len(ci) > MAX_TABLE_ROWS:
        out += missing(f"First {MAX_TABLE_ROWS} of {len(ci)} rows shown; intervals.parquet has them all.")
    return out + _note_list(notes, "note")


PREDICTION_NEEDS = ("lr", "init_index", "point", "output", "method", "estimate", "lower", "upper")


def _x_columns(sweep: Sweep, table: pd.DataFrame) -> list:
    """The x columns of predictions.parquet: sweep.json's x names, else those between `point` and `output`."""
    names = [n for n in sweep.meta.get("x_names") or [] if n in table.columns]
    columns = list(table.columns)
    if names or not {"point", "output"} <= set(columns):
        return names
    return columns[columns.index("point") + 1 : columns.index("output")]


def _prediction_table(table: pd.DataFrame, xs: list) -> str:
    cols = [
        c
        for c in (
            "lr",
            "init_index",
            "point",
            *xs,
            "output",
            "method",
            "scheme",
            "estimate",
            "lower",
            "upper",
            "se",
            "n_used",
            "n_dropped",
            "note",
        )
        if c in table.columns
    ]
    shown = table.head(MAX_TABLE_ROWS)
    classes = [
        "" if np.isfinite(lo) and np.isfinite(hi) else "empty"
        for lo, hi in zip(shown["lower"].astype(float), shown["upper"].astype(float))
    ]
    notes = _notes(table)
    shown = shown[cols].assign(note=_note_links(shown, notes, "prediction-note")) if "note" in cols else shown[cols]
    out = html_table(shown, row_classes=classes, raw=("note",))
    if len(table) > MAX_TABLE_ROWS:
        out += missing(f"First {MAX_TABLE_ROWS} of {len(table)} rows shown; predictions.parquet has them all.")
    return out + _note_list(notes, "prediction-note")


def _predictions(sweep: Sweep) -> str:
    from pipeline.report.figures import band_method, prediction_figure

    table = sweep.table("predictions")
    if table.empty:
        if not (sweep.out_dir / "predictions.parquet").exists():
            return missing(
                "No predictions: `intervals.at` was not set, so predictions.parquet was not written "
                "(pipeline-aggregate out_dir=... 'intervals.at=[...]' adds it)."
            )
        return missing("No predictions: predictions.parquet is empty or unreadable (see the missing inputs above).")
    xs = _x_columns(sweep, table)
    absent = [c for c in PREDICTION_NEEDS if c not in table.columns] + ([] if xs else ["the x column(s)"])
    if absent:
        return missing(f"predictions.parquet lacks {', '.join(absent)}: its intervals cannot be shown.")
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    table = (
        table.assign(_m=table["method"].map(order).fillna(len(order)))
        .sort_values(["lr", "init_index", "point", "output", "_m"], kind="stable")
        .drop(columns="_m")
    )
    if len(xs) > 1:
        return (
            f'<p class="note">This model has {len(xs)} inputs ({esc(", ".join(map(str, xs)))}): no band plot; '
            "each point's intervals are listed below. Grey rows: no bounds (see the note).</p>"
            + _prediction_table(table, xs)
        )
    level = table["level"].dropna().iloc[0] if "level" in table and table["level"].notna().any() else None
    band = band_method(table, METHOD_ORDER)
    caption = (
        f"The fitted function at the intervals.at points (black: the estimate, the fit on the original rows) "
        f"with the {'' if level is None else fmt(100 * level) + '% '}interval of {band} as a band; below it, "
        "each method's bounds minus that estimate (filled: " + f"{band}, dashed: the others), where intervals "
        "much narrower than the function can be compared. Straight lines join the points; the intervals hold "
        "at the points only. One pair of panels per grid cell (and output)."
    )
    fig = figure(prediction_figure(table, xs[0], METHOD_ORDER), f"prediction intervals over {xs[0]}", caption)
    return fig + f"<details><summary>the table ({len(table)} rows)</summary>{_prediction_table(table, xs)}</details>"


def _cell_table(sweep: Sweep, est: pd.DataFrame, has_gap: bool) -> pd.DataFrame:
    rows, limit = [], float(sweep.setting("max_dropped_share", 0.1))
    for (lr, init_index), cell in est.groupby(["lr", "init_index"]):
        first, boot = cell[cell["kind"] == "original"], cell[cell["kind"] == "bootstrap"]
        used = int(boot["status"].isin(sweep.statuses).sum())
        row = {
            "lr": lr,
            "init_index": init_index,
            "original status": first["status"].iloc[0] if len(first) else "(none)",
        }
        if has_gap:
            gaps = cell.loc[cell["kind"] != "original", "gap_to_ols"]
            row.update(
                {
                    "gap_to_ols (original)": first["gap_to_ols"].iloc[0] if len(first) else np.nan,
                    "median gap (resamples)": gaps.median(),
                    "max gap (resamples)": gaps.max(),
                }
            )
        dropped = boot.loc[~boot["status"].isin(sweep.statuses), "status"].value_counts()
        row.update(
            {
                "draws": len(boot),
                "used": used,
                "dropped": len(boot) - used,
                "dropped by reason": ", ".join(f"{s}: {n}" for s, n in dropped.items()),
                "share dropped": f"{(len(boot) - used) / len(boot):.0%}" if len(boot) else "–",
                "over limit": bool(len(boot) and (len(boot) - used) / len(boot) > limit),
            }
        )
        rows.append(row)
    return pd.DataFrame(rows)


def _diagnostics(sweep: Sweep) -> str:
    from pipeline.report.figures import diagnostics_figure

    est = sweep.table("estimates")
    if est.empty:
        return missing("No estimates: no diagnostics.")
    has_gap = "gap_to_ols" in est.columns and bool(np.isfinite(est["gap_to_ols"]).any())
    has_boot = bool((est["kind"] == "bootstrap").any())
    out = (
        ""
        if has_gap
        else missing(
            "No gap to the closed form: "
            + (
                "this model has no closed-form fit."
                if not sweep.meta.get("closed_form")
                else "no run has a finite gap_to_ols (e.g. every run diverged)."
            )
        )
    )
    if has_gap or has_boot:
        caption = [
            (
                "gap_to_ols: the largest absolute difference between a run's parameters and the closed-form "
                "least-squares fit on the same rows."
            )
            if has_gap
            else "",
            "Bootstrap draws used and dropped per cell." if has_boot else "",
        ]
        out += figure(
            diagnostics_figure(est, sweep.statuses, has_gap, has_boot),
            "diagnostics per grid cell",
            " ".join(c for c in caption if c),
        )
    table = _cell_table(sweep, est, has_gap)
    classes = ["warn" if over else "" for over in table["over limit"]]
    limit = float(sweep.setting("max_dropped_share", 0.1))
    out += f'<p class="note">Yellow rows drop more than max_dropped_share = {fmt(limit)} of their draws.</p>'
    return out + html_table(table.drop(columns="over limit"), row_classes=classes)


SECTIONS: tuple[tuple[str, str, Callable[[Sweep], str]], ...] = (
    ("command", "Command and configuration", _command),
    ("runs", "Runs", _runs),
    ("grid", "Learning rate x initial values", _grid),
    ("curves", "Loss curves", _curves),
    ("bootstrap", "Bootstrap distributions", _bootstrap),
    ("intervals", "Confidence intervals", _intervals),
    ("predictions", "Prediction intervals at intervals.at", _predictions),
    ("diagnostics", "Diagnostics: gap to the closed form, dropped draws", _diagnostics),
)


# --- the page -----------------------------------------------------------------------------------


def _section(sweep: Sweep, key: str, title: str, build: Callable[[Sweep], str]) -> str:
    try:
        content = build(sweep)
    except Exception as err:  # noqa: BLE001 - one section that cannot be drawn must not cost the others
        log.exception("report section %s could not be drawn", key)
        content = missing(f"This section could not be drawn: {type(err).__name__}: {err}")
    return f'<section id="{key}">\n<h2>{esc(title)}</h2>\n{content}\n</section>\n'


def summary_line(sweep: Sweep) -> str:
    plan, est, ci = sweep.table("plan"), sweep.table("estimates"), sweep.table("intervals")
    counts = est["status"].value_counts() if "status" in est else pd.Series(dtype=int)
    parts = [
        f"{len(est)} of {len(plan)} planned runs have results"
        + (" (" + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")" if len(counts) else "")
    ]
    if len(est):
        n_boot = int((est["kind"] == "bootstrap").sum())
        parts.append(
            f"{est['lr'].nunique()} learning rate(s) x {est['init_index'].nunique()} initial value(s), "
            f"{n_boot} bootstrap draw(s) in all"
        )
    if sweep.meta:
        parts.append(
            f"data: {sweep.meta.get('data_source', '?')} ({sweep.meta.get('n_rows', '?')} rows); "
            f"closed form: {'yes' if sweep.meta.get('closed_form') else 'no'}"
        )
    if len(ci) and "lower" in ci:
        parts.append(f"{int(ci['lower'].notna().sum())} of {len(ci)} intervals have bounds")
    return "; ".join(parts)


def render(sweep: Sweep) -> str:
    """The whole page as a string."""
    experiment = sweep.meta.get("experiment") or sweep.config.get("experiment") or "unknown experiment"
    title = f"{experiment}: {sweep.out_dir.name}"
    nav = " ".join(f'<a href="#{key}">{esc(key)}</a>' for key, _, _ in SECTIONS)
    absent = "".join(missing(f"Missing input: {m}") for m in sweep.missing)
    sections = "".join(_section(sweep, *spec) for spec in SECTIONS)
    try:
        summary = summary_line(sweep)
    except Exception as err:  # noqa: BLE001 - as a section: say it, write the rest
        summary = f"no summary: {type(err).__name__}: {err}"
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n"
        f"<h1>Sweep report: {esc(title)}</h1>\n<p class=note>{esc(str(sweep.out_dir))}</p>\n"
        f'<p class="summary">{esc(summary)}</p>\n{absent}<nav>{nav}</nav>\n{sections}'
        f"</body></html>\n"
    )


def write_report(out_dir: Path) -> Path:
    """Write `out_dir/report.html` (atomically) from the sweep folder's files; returns its path.

    Raises only when `out_dir` is not a folder; missing or empty inputs are said on the page.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"`out_dir`: {out_dir} is not a folder")
    page = render(load_sweep_folder(out_dir))
    path = out_dir / REPORT_NAME
    with store.atomic_path(path) as tmp:  # the umask's permissions, as every file of the folder
        tmp.write_text(page, encoding="utf-8")
    return path
