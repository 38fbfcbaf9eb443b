"""The prepared sweep is built once, and what earlier versions wrote still reads the same.

- the submitting process reads the data file once; each task reads it once more;
- run ids of stored plans (made by the code before the restructure, tests/fixtures/legacy)
  are what today's planning gives;
- a sweep folder written by that code relaunches without training anything.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import data
from pipeline.launch import launch
from pipeline.prepare import prepare
from tests.conftest import make_config

LEGACY = Path(__file__).parent / "fixtures" / "legacy"


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
    cfg = make_config(tmp_path / "sweep", "experiment=user_data", f"data.path={csv}", "sweep=bootstrap",
                      "sweep.resamples=5", "launcher=debug", "launcher.runs_per_task=2", "train.epochs=50")
    prepared = prepare(cfg)
    assert len(counted_reads) == 1
    report = launch(prepared)
    assert report.n_tasks == 3 and len(counted_reads) == 1 + 3
    assert {key for _, key in counted_reads} == {"data.path"}


@pytest.mark.parametrize("name", sorted(json.loads((LEGACY / "plans.json").read_text())))
def test_run_ids_are_those_of_plans_made_before_the_restructure(name, tmp_path):
    overrides = json.loads((LEGACY / "plans.json").read_text())[name]
    stored = pd.read_parquet(LEGACY / f"{name}.plan.parquet")
    runs = prepare(make_config(tmp_path / "unused", *overrides)).runs
    today = pd.DataFrame([r.as_row() for r in runs])
    assert len(today) == len(stored) > 0
    pd.testing.assert_frame_equal(today[stored.columns], stored)


def test_a_folder_written_before_the_restructure_relaunches_without_training(tmp_path):
    out = tmp_path / "old"
    shutil.copytree(LEGACY / "sweep", out)
    overrides = json.loads((out / "overrides.json").read_text())
    report = launch(prepare(make_config(out, *overrides)))
    assert report.n_planned == 5 and report.n_skipped == 5 and report.n_tasks == 0
    assert (out / "design.parquet").is_file()  # written by the relaunch: t / hc3 from now on
