"""Resume loses nothing: ids that survive upgrades, progress reused by run id, unreadable
files set aside, a full disk named, files readable by collaborators, one launch per folder.

In-process (debug launcher) and small; tests/e2e/test_faults.py signals real local sweeps.
"""

from __future__ import annotations

import copy
import errno
import hashlib
import logging
import os
import pdb
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline import store
from pipeline.core.errors import FolderError
from pipeline.launch.lock import folder_lock
from pipeline.launch.prepare import prepare
from pipeline.launch.status import summary, task_table
from pipeline.launch.submit import launch
from pipeline.results.aggregate import aggregate
from pipeline.store import files
from pipeline.sweep.plan import legacy_ids, plan
from tests.conftest import make_config, run_sweep

SMALL = (
    "experiment=linear_synthetic",
    "sweep=bootstrap",
    "sweep.resamples=5",
    "launcher=debug",
    "launcher.runs_per_task=2",
    "train.epochs=30",
    "intervals.plots=false",
    "report=false",
)


def sweep(out_dir: Path, *extra: str):
    prepared = prepare(make_config(out_dir, *SMALL, *extra))
    return prepared, launch(prepared)


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("part-*.parquet"))}


def raw_run_ids(out_dir: Path) -> list[str]:
    """Every run id of every part, duplicates kept: a run trained twice shows here."""
    return [i for p in store.part_files(out_dir) for i in pq.read_table(p, columns=["run_id"])["run_id"].to_pylist()]


# --- run ids ---------------------------------------------------------------------------


def test_a_new_config_key_with_a_default_changes_no_run_id(tmp_path):
    cfg = make_config(tmp_path / "s", *SMALL)
    upgraded = copy.deepcopy(cfg)
    upgraded["train"]["new_knob"] = 0.5  # as a new schema field with its default would appear
    upgraded["data"]["new_reader_option"] = True
    upgraded["launcher"]["new_flag"] = False
    upgraded["new_section"] = {"enabled": False}
    ids = [r.run_id for r in plan(cfg, "d" * 16)]
    assert [r.run_id for r in plan(upgraded, "d" * 16)] == ids
    runs = plan(cfg, "d" * 16)
    assert legacy_ids(upgraded, "d" * 16, runs) != legacy_ids(cfg, "d" * 16, runs)  # what version 0 did
    for key, value in (("epochs", 31), ("dtype", "float64"), ("grad_tol", 1e-4), ("log_every", 10)):
        changed = copy.deepcopy(cfg)
        changed["train"][key] = value
        assert set(r.run_id for r in plan(changed, "d" * 16)).isdisjoint(ids), key
    for key, value in (("engine", "reference"), ("device", "cpu")):
        same = copy.deepcopy(cfg)
        same["train"][key] = value
        assert [r.run_id for r in plan(same, "d" * 16)] == ids, key


# --- progress kept by run id -----------------------------------------------------------


@pytest.mark.parametrize(
    "scheme", [(), ("sweep.scheme=stationary",), ("sweep.scheme=wild", "sweep.wild_weights=mammen")], ids=str
)
def test_progress_left_by_an_ended_task_is_reused_whatever_the_chunking(out_dir, scheme):
    """Case draws, and the stationary bootstrap (its mean block length `auto`, resolved again at
    the relaunch) and wild draws, whose ids name their settings."""
    prepared, _ = sweep(out_dir, *scheme)
    first = store.read_parts(out_dir).set_index("run_id").sort_index()
    # a task that hit a full disk after saving its runs: progress under its own task number, no part
    part = store.part_files(out_dir)[0]
    n_saved = pq.read_metadata(part).num_rows
    progress = store.progress_path(out_dir, "part-00042-0123456789ab")
    progress.parent.mkdir(exist_ok=True)
    shutil.move(part, progress)
    prepared, report = sweep(out_dir, *scheme, "launcher.runs_per_task=3")  # renumbered, rechunked
    assert (report.n_skipped, report.n_tasks) == (6, 0) and n_saved == 2
    assert list((out_dir / store.PROGRESS).glob("*.parquet")) == []
    again = store.read_parts(out_dir).set_index("run_id").sort_index()
    pd.testing.assert_frame_equal(again, first)  # the very rows saved, not retrained
    assert sorted(raw_run_ids(out_dir)) == sorted(r.run_id for r in prepared.runs)


# --- unreadable files -------------------------------------------------------------------


def test_a_truncated_part_is_set_aside_and_its_runs_retrained_once(out_dir, caplog):
    prepared, _ = sweep(out_dir)
    bad = store.part_files(out_dir)[1]
    bad.write_bytes(bad.read_bytes()[:100])
    before = digests(out_dir / "parts")
    del before[bad.name]
    with caplog.at_level(logging.WARNING, logger="pipeline.store.parts"):
        result = aggregate(out_dir)
    assert (result.n_planned, result.n_found) == (6, 4)
    assert (out_dir / "parts" / "corrupt" / bad.name).is_file() and not bad.exists()
    assert any(bad.name in r.getMessage() and "retrains" in r.getMessage() for r in caplog.records)
    assert summary(out_dir, task_table(out_dir)).startswith("runs: 4 of 6 done")
    _, report = sweep(out_dir)
    assert (report.n_skipped, report.n_tasks) == (4, 1) and not report.failed_tasks
    assert sorted(raw_run_ids(out_dir)) == sorted(r.run_id for r in prepared.runs)
    after = digests(out_dir / "parts")
    assert {k: after[k] for k in before} == before  # the readable parts, byte for byte


def test_a_truncated_progress_file_is_set_aside_and_its_runs_retrained(out_dir):
    prepared, _ = sweep(out_dir)
    part = store.part_files(out_dir)[0]
    progress = store.progress_path(out_dir, "part-00000-0123456789ab")
    progress.parent.mkdir(exist_ok=True)
    progress.write_bytes(part.read_bytes()[:-20])
    part.unlink()
    _, report = sweep(out_dir)
    assert (report.n_skipped, report.n_tasks) == (4, 1)
    assert (out_dir / "progress" / "corrupt" / progress.name).is_file()
    assert sorted(raw_run_ids(out_dir)) == sorted(r.run_id for r in prepared.runs)


# --- a full disk ------------------------------------------------------------------------


def test_a_full_disk_is_named_and_the_relaunch_after_freeing_completes(out_dir, monkeypatch):
    real, calls = pq.write_table, []

    def filling(table, where, *args, **kwargs):  # parts after the first: no space left
        if Path(where).parent.name == store.PARTS and calls:
            raise OSError(errno.ENOSPC, "No space left on device")
        if Path(where).parent.name == store.PARTS:
            calls.append(where)
        return real(table, where, *args, **kwargs)

    monkeypatch.setattr(files.pq, "write_table", filling)
    monkeypatch.setattr(pdb, "post_mortem", lambda *a: None)  # the debug launcher's pdb on errors
    prepared, report = sweep(out_dir)  # plan, design, task 0's part; then full
    assert len(report.failed_tasks) == 2
    assert all("disk full" in f and str(out_dir) in f and "relaunch" in f for f in report.failed_tasks)
    kept = digests(out_dir / "parts")
    assert len(kept) == 1
    monkeypatch.setattr(files.pq, "write_table", real)  # space freed
    _, again = sweep(out_dir)
    assert (again.n_skipped, again.n_tasks) == (2, 2) and not again.failed_tasks
    assert {k: v for k, v in digests(out_dir / "parts").items() if k in kept} == kept
    assert sorted(raw_run_ids(out_dir)) == sorted(r.run_id for r in prepared.runs)


def test_a_full_disk_before_any_task_is_one_message(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.pq, "write_table", full)
    with pytest.raises(FolderError, match=r"disk full .* in .*s.* free some space and relaunch"):
        sweep(tmp_path / "s")


# --- permissions ------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_files_get_the_permissions_the_umask_gives(out_dir, mask):
    previous = os.umask(mask)
    try:
        sweep(out_dir)
        aggregate(out_dir)
    finally:
        os.umask(previous)
    files = [out_dir / n for n in ("sweep.json", "plan.parquet", "config.yaml", "estimates.parquet")]
    files += store.part_files(out_dir)
    assert {f.name: oct(f.stat().st_mode & 0o777) for f in files} == {f.name: oct(0o666 & ~mask) for f in files}


# --- one launch at a time ---------------------------------------------------------------


def test_a_second_launch_into_a_held_folder_names_the_holder(out_dir):
    out_dir.mkdir(parents=True)
    with folder_lock(out_dir):
        with pytest.raises(
            FolderError,
            match=rf"{out_dir} is in use by another launch \(pid {os.getpid()} "
            r"on host .*--wait-lock",
        ):
            sweep(out_dir)
    assert not (out_dir / "parts").exists()  # nothing written, nothing trained
    _, report = sweep(out_dir)  # released: the next launch goes ahead
    assert report.n_tasks == 3


def test_the_report_has_the_umask_permissions_too(tmp_path):
    from pipeline.report.page import write_report

    run_sweep(tmp_path / "s", "experiment=linear_synthetic", "sweep=single", "launcher=debug", "train.epochs=20")
    old = os.umask(0o022)
    try:
        path = write_report(tmp_path / "s")
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644
