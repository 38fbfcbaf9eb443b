"""The prepared sweep is built once, and what earlier versions wrote still reads the same.

- the submitting process reads the data file once; each task reads it once more;
- run ids of stored plans (made by the code before the restructure, tests/fixtures/legacy)
  are what the legacy id function gives, and those of id version 1 (tests/fixtures/ids_v1)
  what today's planning gives;
- a sweep folder written by that code relaunches without training anything: its run ids
  are migrated once, at that launch.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.core.resampling import DRAW_RULE, LEGACY_RULE
from pipeline.data import load as data
from pipeline.launch.prepare import prepare
from pipeline.launch.submit import launch
from pipeline.store.parts import read_parts
from pipeline.sweep.ids import ID_VERSION
from pipeline.sweep.plan import legacy_ids, plan
from tests.conftest import make_config

LEGACY = Path(__file__).parents[1] / "fixtures" / "legacy"
IDS_V1 = Path(__file__).parents[1] / "fixtures" / "ids_v1"  # made by fixtures/ids_v1/make_ids_v1.py


@pytest.fixture
def counted_reads(monkeypatch):
    reads = []
    real = data.read_table

    def counting(path: str, key: str):
        reads.append((path, key))
        return real(path, key)

    monkeypatch.setattr(data, "read_table", counting)
    return reads


def test_the_data_file_is_read_once_to_submit_and_once_per_task(tmp_path, counted_reads):
    csv = tmp_path / "plants.csv"
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, 40)
    pd.DataFrame({"x": x, "y": 1 + 2 * x + rng.normal(0, 0.1, 40)}).to_csv(csv, index=False)
    cfg = make_config(
        tmp_path / "sweep",
        "experiment=user_data",
        f"data.path={csv}",
        "sweep=bootstrap",
        "sweep.resamples=5",
        "launcher=debug",
        "launcher.runs_per_task=2",
        "train.epochs=50",
    )
    prepared = prepare(cfg)
    assert len(counted_reads) == 1
    report = launch(prepared)
    assert report.n_tasks == 3 and len(counted_reads) == 1 + 3
    assert {key for _, key in counted_reads} == {"data.path"}


CASES = sorted(json.loads((LEGACY / "plans.json").read_text()))


@pytest.mark.parametrize("name", CASES)
def test_the_legacy_id_function_gives_the_ids_of_plans_made_before_the_restructure(name, tmp_path):
    """Migration relies on it: old folders' ids are found again from their own config."""
    overrides = json.loads((LEGACY / "plans.json").read_text())[name]
    stored = pd.read_parquet(LEGACY / f"{name}.plan.parquet")
    prepared = prepare(make_config(tmp_path / "unused", *overrides))
    today = pd.DataFrame([r.as_row() for r in prepared.runs])
    today["run_id"] = legacy_ids(prepared.cfg, prepared.meta.data_digest, prepared.runs)
    assert len(today) == len(stored) > 0
    pd.testing.assert_frame_equal(today[stored.columns], stored)


@pytest.mark.parametrize("name", CASES)
def test_run_ids_are_those_of_plans_stored_with_this_id_version(name, tmp_path):
    """The stored plans were made under the first draw rule: planned under it, the ids are the
    same; under today's rule the ids of bootstrap draws (and only theirs) are new."""
    overrides = json.loads((LEGACY / "plans.json").read_text())[name]
    stored = pd.read_parquet(IDS_V1 / f"{name}.plan.parquet")
    prepared = prepare(make_config(tmp_path / "unused", *overrides))
    assert prepared.meta.draw_rule == DRAW_RULE != LEGACY_RULE  # a new folder: today's rule
    old_rule = plan(prepared.cfg, prepared.meta.data_digest, prepared.meta.n_rows, LEGACY_RULE)
    today = pd.DataFrame([r.as_row() for r in old_rule])
    assert ID_VERSION == 1 and len(today) == len(stored) > 0
    pd.testing.assert_frame_equal(today[stored.columns], stored)
    assert set(today["run_id"]).isdisjoint(pd.read_parquet(LEGACY / f"{name}.plan.parquet")["run_id"])
    new_rule = pd.DataFrame([r.as_row() for r in prepared.runs])
    draws = new_rule["resample"] > 0
    assert (new_rule["run_id"] == today["run_id"]).tolist() == (~draws).tolist()
    assert set(new_rule.loc[draws, "run_id"]).isdisjoint(today["run_id"])


def test_a_folder_written_before_the_restructure_relaunches_without_training(tmp_path, caplog):
    out = tmp_path / "old"
    shutil.copytree(LEGACY / "sweep", out)
    overrides = json.loads((out / "overrides.json").read_text())
    prepared = prepare(make_config(out, *overrides))
    with caplog.at_level(logging.INFO, logger="pipeline.sweep.migrate"):
        report = launch(prepared)
    assert report.n_planned == 5 and report.n_skipped == 5 and report.n_tasks == 0
    assert (out / "design.parquet").is_file()  # written by the relaunch: t / hc3 from now on
    migrated = [r.getMessage() for r in caplog.records if r.name == "pipeline.sweep.migrate"]
    assert len(migrated) == 1 and migrated[0].startswith("migrated 5 run id(s) in 3 part(s) from id version 0 to 1")
    assert set(read_parts(out)["run_id"]) == {r.run_id for r in prepared.runs}
    assert json.loads((out / "sweep.json").read_text())["id_version"] == ID_VERSION
    assert json.loads((out / "sweep.json").read_text())["draw_rule"] == LEGACY_RULE  # kept, now by name
    caplog.clear()
    again = launch(prepare(make_config(out, *overrides)))  # migrated once: nothing more to do
    assert again.n_skipped == 5 and not [r for r in caplog.records if r.name == "pipeline.sweep.migrate"]
