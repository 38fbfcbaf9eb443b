"""A sweep folder keeps the draw rule it was started with (sweep.json `draw_rule`).

- a folder made before the rule had a name (tests/fixtures/legacy: numpy's `default_rng`
  per draw) relaunches without training and aggregates to the very tables the code of that
  time made from it (tests/fixtures/legacy/tables, by commit df505df), the draw-dependent
  columns included (each draw's learning-rate bound, studentized intervals);
- a new folder gets today's rule, keeps it on relaunch, and its bootstrap draws have ids
  of their own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from pipeline.core.errors import ConfigError
from pipeline.core.resampling import DRAW_RULE, LEGACY_RULE
from pipeline.launch.prepare import prepare
from pipeline.launch.submit import launch
from pipeline.results.aggregate import aggregate
from pipeline.sweep.plan import plan
from tests.conftest import make_config

LEGACY = Path(__file__).parents[1] / "fixtures" / "legacy"
METHODS = ["percentile", "basic", "normal", "t", "hc3", "studentized"]  # studentized: each draw rebuilt


def test_an_old_rule_folder_relaunches_without_training_and_aggregates_to_its_old_tables(tmp_path):
    out = tmp_path / "old"
    shutil.copytree(LEGACY / "sweep", out)
    overrides = json.loads((out / "overrides.json").read_text())
    prepared = prepare(make_config(out, *overrides))
    assert prepared.meta.draw_rule == LEGACY_RULE
    report = launch(prepared)
    assert report.n_planned == 5 and report.n_skipped == 5 and report.n_tasks == 0
    assert json.loads((out / "sweep.json").read_text())["draw_rule"] == LEGACY_RULE
    aggregate(out, methods=METHODS)
    for name in ("estimates", "intervals"):
        expected = pd.read_parquet(LEGACY / "tables" / f"{name}.parquet")
        got = pd.read_parquet(out / f"{name}.parquet")
        if "init" in got.columns:  # lists come back as arrays: compare them as tuples
            got, expected = (f.assign(init=f["init"].map(tuple)) for f in (got, expected))
        pd.testing.assert_frame_equal(got[expected.columns], expected, check_exact=True, obj=name)
    intervals = pd.read_parquet(out / "intervals.parquet")
    assert intervals.loc[intervals["method"] == "studentized", "lower"].notna().all()
    assert pd.read_parquet(out / "estimates.parquet")["lr_max_stable"].nunique() == 5  # one bound per draw


def test_a_new_folder_records_todays_rule_and_keeps_it(tmp_path):
    out = tmp_path / "new"
    args = ("experiment=linear_synthetic", "sweep.resamples=3", "launcher=debug", "train.epochs=20")
    prepared = prepare(make_config(out, *args))
    assert prepared.meta.draw_rule == DRAW_RULE != LEGACY_RULE
    assert launch(prepared).n_tasks >= 1
    assert json.loads((out / "sweep.json").read_text())["draw_rule"] == DRAW_RULE
    grown = prepare(make_config(out, *args[:1], "sweep.resamples=5", *args[2:]))
    assert grown.meta.draw_rule == DRAW_RULE
    report = launch(grown)
    assert report.n_planned == 6 and report.n_skipped == 4  # resamples 0..3 reused: 4 and 5 trained
    old_ids = {r.run_id for r in plan(grown.cfg, grown.meta.data_digest, grown.meta.n_rows, LEGACY_RULE)}
    for run in grown.runs:  # the rule enters the ids of bootstrap draws only
        assert (run.run_id in old_ids) == (run.resample <= 0)


def test_an_old_rule_folder_refuses_the_block_and_wild_schemes(tmp_path):
    """They draw by the keyed rule only; the folder keeps its own, so the relaunch says to use a new out_dir."""
    out = tmp_path / "old"
    shutil.copytree(LEGACY / "sweep", out)
    overrides = json.loads((out / "overrides.json").read_text())
    for scheme in ("sweep.scheme=moving_block", "sweep.scheme=wild"):
        with pytest.raises(ConfigError, match="draws by the splitmix64 rule only: choose a new out_dir"):
            prepare(make_config(out, *overrides, scheme, "sweep.block_length=3"))
