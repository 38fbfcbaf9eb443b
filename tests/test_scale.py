"""A million runs on one small machine: streaming aggregation equals the in-memory tables,
its memory stays bounded, logs stay quiet, and the chunking fits the work."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline import aggregate as agg
from pipeline import partscan, record
from tests.conftest import REPO, make_config, run_sweep

LEGACY = REPO / "tests" / "fixtures" / "legacy" / "sweep"
FAST = ("train.epochs=40", "train.log_every=10", "intervals.plots=false")


def in_memory(out_dir: Path, **settings) -> dict[str, pd.DataFrame]:
    """The tables as the in-memory path builds them, through Parquet as users read them."""
    meta, plan = agg.load_sweep(out_dir)
    estimates, curves = agg.in_memory_tables(out_dir, plan["run_id"])
    tables = {"estimates": estimates, "curves": curves}
    if len(estimates):
        tables["intervals"] = agg.interval_table(out_dir, meta, estimates, **settings)
    back = {}
    for name, frame in tables.items():
        record.write_frame(frame, out_dir / f"old-{name}.parquet")
        back[name] = pd.read_parquet(out_dir / f"old-{name}.parquet")
    return back


def assert_same_tables(out_dir: Path, **overrides) -> None:
    settings = {"level": 0.95, "statuses": ("ok",), "methods": None, "max_dropped_share": 0.1, **overrides}
    agg.aggregate(out_dir, plots=False, **settings)
    old = in_memory(out_dir, **settings)
    assert set(old) <= {"estimates", "curves", "intervals"}
    for name, expected in old.items():
        got = pd.read_parquet(out_dir / f"{name}.parquet")
        assert list(got.columns) == list(expected.columns), name
        assert got.dtypes.to_dict() == expected.dtypes.to_dict(), name
        if "init" in got.columns:  # lists come back as arrays: compare them as tuples
            got, expected = (f.assign(init=f["init"].map(lambda v: None if v is None else tuple(v)))
                             for f in (got, expected))
        pd.testing.assert_frame_equal(got, expected, check_exact=True, obj=name)


@pytest.mark.e2e
def test_streaming_tables_equal_in_memory_tables_on_a_grid_with_jackknife(tmp_path, monkeypatch):
    out = tmp_path / "grid"
    run_sweep(out, "experiment=linear_synthetic", "sweep=bootstrap", "sweep.resamples=6", "sweep.jackknife=true", "data.generate.n=12",
              "sweep.lr=[0.1,0.01]", "sweep.init=[[0,0],[1,1]]", "launcher=debug",
              "launcher.runs_per_task=7", *FAST)
    assert_same_tables(out, statuses=("ok", "not_converged"))
    intervals = pd.read_parquet(out / "intervals.parquet")
    assert {"bca", "t", "hc3"} <= set(intervals["method"]) 
    assert intervals.loc[intervals["method"] != "bca", "lower"].notna().all()
    assert len(intervals.drop_duplicates(["lr", "init_index"])) == 4
    # spilling every batch to disk and tiny row groups change nothing
    monkeypatch.setattr(partscan, "SPILL_BUDGET_BYTES", 1)
    monkeypatch.setattr(agg, "ROW_GROUP_ROWS", 5)
    spills = []
    monkeypatch.setattr(partscan.CellSpill, "_spill", lambda self, real=partscan.CellSpill._spill:
                        (spills.append(1), real(self)))
    assert_same_tables(out, methods=["percentile", "bca", "t"], level=0.8)
    assert pq_row_groups(out / "estimates.parquet") > 1 and len(spills) > 1


def pq_row_groups(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).num_row_groups


@pytest.mark.e2e
def test_streaming_tables_equal_with_diverged_runs_duplicates_and_a_changed_plan(tmp_path):
    out = tmp_path / "div"
    args = ("experiment=tdm_quadratic", "sweep=bootstrap", "sweep.resamples=4", "sweep.lr=[3e-4,10]",
            "launcher=debug", "launcher.runs_per_task=3", *FAST)
    run_sweep(out, *args)
    parts = sorted((out / "parts").glob("part-*.parquet"))
    shutil.copy(parts[0], out / "parts" / "part-99999-duplicate.parquet")  # the newest part wins
    assert_same_tables(out, statuses=("ok", "not_converged"))
    run_sweep(out, *args[:2], "sweep.resamples=2", *args[3:])  # a smaller plan: runs outside it are left out
    assert_same_tables(out)


def test_streaming_tables_equal_on_a_legacy_folder_and_an_empty_one(tmp_path):
    out = tmp_path / "legacy"
    shutil.copytree(LEGACY, out)
    assert_same_tables(out)
    for part in (out / "parts").glob("part-*.parquet"):
        part.unlink()
    report = agg.aggregate(out, plots=False)
    assert report.n_found == 0 and not pd.read_parquet(out / "estimates.parquet").shape[0]
