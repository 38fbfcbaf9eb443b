"""The one rule for why a grid cell has no interval, and the answer table built on it.

`stats.cells.why_no_interval` gives the reason and its advice from a cell's counts; the
interval notes (intervals.parquet), the terminal's answer table and report.html all say it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.report.answer import PARAMETERS, PREDICTIONS, build_answer
from pipeline.report.summary import answer_lines
from pipeline.stats.cells import NO_DRAWS, CellRuns, why_no_interval
from pipeline.stats.intervals import bootstrap_intervals


def runs(original: str, draws: list[str], bound: float = math.nan) -> CellRuns:
    """A cell's counts: the run on the original rows and its draws' statuses."""
    frame = pd.DataFrame({"resample": range(len(draws) + 1), "status": [original, *draws], "lr_max_stable": bound})
    return CellRuns.of(frame, ("ok",))


def test_a_cell_with_usable_fits_has_an_interval():
    assert why_no_interval(runs("ok", ["ok", "ok", "diverged"])) is None


def test_mostly_diverged_advises_a_lower_lr_naming_the_bound():
    """The README's plants sweep at lr 1: 0 ok, 2 not_converged, 39 diverged."""
    reason = why_no_interval(runs("diverged", ["not_converged"] * 2 + ["diverged"] * 38, bound=0.94))
    assert reason == "39 of 41 runs diverged: lower lr (below lr_max_stable 0.94 on the original rows)"
    assert "epochs" not in reason and "raise" not in reason  # raising lr would make it worse
    assert why_no_interval(runs("diverged", ["diverged"] * 3)) == "every run diverged: lower lr"


def test_mostly_not_converged_advises_more_epochs_or_a_larger_lr_below_the_bound():
    reason = why_no_interval(runs("not_converged", ["not_converged"] * 40, bound=0.0627))
    assert reason == "no run converged: raise train.epochs, or try a larger lr below lr_max_stable 0.0627"
    some = why_no_interval(runs("not_converged", ["not_converged"] * 30 + ["diverged"] * 10))
    assert some.startswith("31 of 41 runs did not converge: raise train.epochs")


def test_an_original_fit_that_failed_among_usable_draws_is_named():
    reason = why_no_interval(runs("not_converged", ["ok"] * 30 + ["not_converged"] * 9))
    assert reason.startswith("the fit on the original rows did not converge (10 of 40 runs did)")


def test_no_draws_points_to_sweep_resamples():
    assert why_no_interval(runs("ok", [])) == NO_DRAWS and "sweep.resamples" in NO_DRAWS
    assert why_no_interval(runs("diverged", [])) == "every run diverged: lower lr"  # the status comes first


def test_too_few_usable_draws_says_how_many_of_how_many():
    frame = pd.DataFrame({"resample": [0, 1, 2, 3], "status": ["ok", "ok", "not_converged", "diverged"]})
    used_all = CellRuns.of(frame, ("ok", "not_converged", "diverged"))
    assert why_no_interval(used_all) is None
    one = CellRuns.of(frame.iloc[:2], ("ok",))
    assert why_no_interval(one) == "too few usable draws: 1 of 1 (2 needed; statuses used: ok)"


def _cell(lr: float, statuses: list[str], values: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"lr": lr, "init_index": 0, "resample": range(len(statuses)), "status": statuses, "w": values})


def test_the_interval_note_leads_with_the_rule():
    est = pd.concat(
        [
            _cell(0.1, ["ok"] * 6, [1.0, 1.1, 0.9, 1.05, 0.95, 1.0]),
            _cell(9.0, ["diverged"] * 4 + ["not_converged"], [np.inf] * 5),
        ]
    )
    with pytest.warns(UserWarning):
        ci = bootstrap_intervals(est, params=["w"], method=["percentile", "normal"])
    bad = ci[ci["lr"] == 9.0]
    assert bad["lower"].isna().all()
    assert all(note.startswith("4 of 5 runs diverged: lower lr") for note in bad["note"])
    assert set(ci["estimate_source"]) == {"gradient descent"}


def _answer_of(estimates, intervals, predictions=None, meta=None, config=None):
    return build_answer(
        estimates, intervals, predictions if predictions is not None else pd.DataFrame(), meta or {}, config or {}
    )


def _row(lr, param, method, lower, upper, estimate=1.0, **extra):
    source = "least squares" if method in ("t", "hc3") else "gradient descent"
    return {
        "lr": lr,
        "init_index": 0,
        "parameter": param,
        "method": method,
        "level": 0.95,
        "scheme": "case",
        "estimate": estimate,
        "estimate_source": source,
        "lower": lower,
        "upper": upper,
        **extra,
    }


def test_an_ok_cell_without_draws_shows_its_estimate_and_t():
    """gistemp_line sweep=lr_grid: no draws at all; the closed form still gives t."""
    est = pd.DataFrame({"lr": [0.1, 1.0], "init_index": 0, "resample": 0, "status": ["ok", "diverged"]})
    ci = pd.DataFrame(
        [
            _row(0.1, "w", "percentile", math.nan, math.nan, estimate=0.0078),
            _row(0.1, "w", "t", 0.0071, 0.0085, estimate=0.0077),
            _row(1.0, "w", "percentile", math.nan, math.nan, estimate=1e16),
            _row(1.0, "w", "t", 0.0071, 0.0085, estimate=0.0077),
        ]
    )
    answer = _answer_of(est, ci)
    ok, diverged = answer.cells
    assert ok.reason is None and ok.lines[0].estimate == 0.0078  # the fit's own estimate, not least squares
    assert ok.lines[0].bounds == {"t": (0.0071, 0.0085)} and ok.marks == [NO_DRAWS]
    assert diverged.lines == [] and diverged.reason == "every run diverged: lower lr"
    text = "\n".join(answer_lines(answer))
    assert "[0.0071, 0.0085]" in text and "(no interval: every run diverged: lower lr)" in text
    assert "too few usable draws" not in text


def test_a_cell_over_max_dropped_share_is_marked():
    est = pd.DataFrame(
        {"lr": 0.01, "init_index": 0, "resample": range(41), "status": ["ok"] * 21 + ["not_converged"] * 20}
    )
    ci = pd.DataFrame([_row(0.01, "w", "percentile", 0.6, 0.8)])
    cell = _answer_of(est, ci, config={"intervals": {"max_dropped_share": 0.1}}).cells[0]
    assert cell.lines and cell.marks == [
        "20 of 40 draws dropped (statuses used: ok), more than intervals.max_dropped_share 0.1: "
        "the draws kept may not be a random subset"
    ]
    assert "! 20 of 40 draws dropped" in "\n".join(answer_lines(_answer_of(est, ci)))


def test_a_model_not_linear_in_its_parameters_answers_with_predictions():
    est = pd.DataFrame({"lr": 0.1, "init_index": 0, "resample": range(4), "status": "ok"})
    ci = pd.DataFrame([_row(0.1, "0.weight[0,0]", "percentile", -18.2, 8.16, estimate=-51.86)])
    pred = pd.DataFrame(
        [
            {
                "lr": 0.1,
                "init_index": 0,
                "point": p,
                "x1": float(p),
                "output": o,
                "method": "percentile",
                "level": 0.95,
                "scheme": "case",
                "estimate": 0.5,
                "estimate_source": "gradient descent",
                "lower": 0.4,
                "upper": 0.6,
            }
            for p in range(2)
            for o in ("y1", "y2")
        ]
    )
    meta = {"experiment": "toy_mlp", "linear_in_params": False, "x_names": ["x1"]}
    answer = _answer_of(est, ci, pred, meta)
    assert answer.subject == PREDICTIONS and [line.label for line in answer.cells[0].lines] == [
        "y1(0)",
        "y2(0)",
        "y1(1)",
        "y2(1)",
    ]
    text = "\n".join(answer_lines(answer))
    assert "not identifiable" in text and "weight" not in text.split("prediction  ")[-1]
    linear = _answer_of(est, ci, pred, {**meta, "linear_in_params": True})
    assert linear.subject == PARAMETERS and linear.cells[0].lines[0].label == "0.weight[0,0]"


def test_the_scheme_and_block_length_name_the_bootstrap_columns():
    est = pd.DataFrame({"lr": 0.1, "init_index": 0, "resample": range(4), "status": "ok"})
    ci = pd.DataFrame(
        [
            _row(0.1, "w", "percentile", 0.5, 1.5, scheme="moving", block_length=5.0),
            _row(0.1, "w", "t", 0.4, 1.6, scheme=None),
        ]
    )
    answer = _answer_of(est, ci)
    assert answer.header("percentile") == "95% percentile (moving, blocks of 5)" and answer.header("t") == "95% t"
