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

from pipeline import store
from pipeline.results import aggregate as agg
from pipeline.store import scan as partscan
from tests.conftest import REPO, make_config, run_sweep

pytestmark = pytest.mark.slow  # 10^4-run sweeps under memory guards

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
        store.write_frame(frame, out_dir / f"old-{name}.parquet")
        back[name] = pd.read_parquet(out_dir / f"old-{name}.parquet")
    return back


def assert_same_tables(out_dir: Path, **overrides) -> None:
    settings = {"level": 0.95, "statuses": ("ok",), "methods": None, "max_dropped_share": 0.1, **overrides}
    agg.aggregate(out_dir, **settings)
    old = in_memory(out_dir, **settings)
    assert set(old) <= {"estimates", "curves", "intervals"}
    for name, expected in old.items():
        got = pd.read_parquet(out_dir / f"{name}.parquet")
        assert list(got.columns) == list(expected.columns), name
        assert got.dtypes.to_dict() == expected.dtypes.to_dict(), name
        if "init" in got.columns:  # lists come back as arrays: compare them as tuples
            got, expected = (
                f.assign(init=f["init"].map(lambda v: None if v is None else tuple(v))) for f in (got, expected)
            )
        pd.testing.assert_frame_equal(got, expected, check_exact=True, obj=name)


@pytest.mark.e2e
def test_streaming_tables_equal_in_memory_tables_on_a_grid_with_jackknife(tmp_path, monkeypatch):
    out = tmp_path / "grid"
    run_sweep(
        out,
        "experiment=linear_synthetic",
        "sweep=bootstrap",
        "sweep.resamples=6",
        "sweep.jackknife=true",
        "data.generate.n=12",
        "sweep.lr=[0.1,0.01]",
        "sweep.init=[[0,0],[1,1]]",
        "launcher=debug",
        "launcher.runs_per_task=7",
        *FAST,
    )
    assert_same_tables(out, statuses=("ok", "not_converged"))
    intervals = pd.read_parquet(out / "intervals.parquet")
    assert {"bca", "t", "hc3"} <= set(intervals["method"])
    assert intervals.loc[intervals["method"] != "bca", "lower"].notna().all()
    assert len(intervals.drop_duplicates(["lr", "init_index"])) == 4
    # spilling every batch to disk and tiny row groups change nothing
    monkeypatch.setattr(partscan, "SPILL_BUDGET_BYTES", 1)
    monkeypatch.setattr(agg, "ROW_GROUP_ROWS", 5)
    spills = []
    monkeypatch.setattr(
        partscan.CellSpill, "_spill", lambda self, real=partscan.CellSpill._spill: (spills.append(1), real(self))
    )
    assert_same_tables(out, methods=["percentile", "bca", "t"], level=0.8)
    assert pq_row_groups(out / "estimates.parquet") > 1 and len(spills) > 1


def pq_row_groups(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).num_row_groups


@pytest.mark.e2e
def test_streaming_tables_equal_with_diverged_runs_duplicates_and_a_changed_plan(tmp_path):
    out = tmp_path / "div"
    args = (
        "experiment=tdm_quadratic",
        "sweep=bootstrap",
        "sweep.resamples=4",
        "sweep.lr=[3e-4,10]",
        "launcher=debug",
        "launcher.runs_per_task=3",
        *FAST,
    )
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
    report = agg.aggregate(out)
    assert report.n_found == 0 and not pd.read_parquet(out / "estimates.parquet").shape[0]


# --- memory: a regression to holding every run fails here -----------------------------------

MEASURE = """
import json, sys
from pathlib import Path
import pipeline.results.aggregate as agg, pipeline.store.scan as partscan

def kib(field):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field + ":"))

partscan.SPILL_BUDGET_BYTES = 2 * 2**20  # a budget far below the sweep, as for 10^6 runs and 2 GB
agg.aggregate(Path(sys.argv[1]))  # warm-up: lazy imports and allocator pools
base = kib("VmRSS")
agg.aggregate(Path(sys.argv[2]))
print(json.dumps({"growth_mib": (kib("VmHWM") - base) / 1024}))
"""


def aggregation_growth_mib(warm_up: Path, folder: Path) -> float:
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, str(warm_up), str(folder)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])["growth_mib"]


def test_aggregating_ten_thousand_runs_stays_within_a_bounded_peak_rss(tmp_path):
    from benchmarks.synthetic import write_synthetic_sweep

    small = write_synthetic_sweep(tmp_path / "small", 200, n_cells=4, runs_per_part=100)
    big = write_synthetic_sweep(tmp_path / "big", 10_000, n_cells=20, runs_per_part=1000)
    growth = aggregation_growth_mib(small, big)
    # in memory, these 10^4 runs (loss curves of 101 points) cost ~320 MiB over the baseline;
    # streamed with a 2 MiB spill budget, 51-66 MiB (a 500-run cell, a part's row group, the key
    # index, the writers' row groups, the allocator's slack)
    assert growth < 100, f"aggregation grew {growth:.0f} MiB over its baseline"
    old = in_memory(big, level=0.95, statuses=("ok",), methods=None, max_dropped_share=0.1)
    for name, expected in old.items():
        pd.testing.assert_frame_equal(pd.read_parquet(big / f"{name}.parquet"), expected, obj=name)


TRAIN = """
import json, sys
from pathlib import Path
import torch
from pipeline.core.settings import TrainSettings
from pipeline.data.load import load_dataset
from pipeline.sweep.plan import plan
from pipeline.train.engines import train_chunk
from tests.conftest import make_config, problem_from

def kib(field):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field + ":"))

torch.set_num_threads(1)
overrides = ["experiment=tdm_quadratic", "sweep.resamples=9999", "optim.lr=0.03", "train.epochs=1000"]
cfg = make_config(Path("/tmp/unused"), *overrides)
dataset = load_dataset(cfg["data"])
problem, settings = problem_from(cfg, dataset), TrainSettings.from_dict(cfg["train"])
runs = plan(cfg, dataset.digest(), dataset.n_rows)
train_chunk(problem, runs[:300], settings)  # warm-up: lazy imports and allocator pools
base = kib("VmRSS")
batches = []
train_chunk(problem, runs, settings, on_batch_done=batches.append)
print(json.dumps({"growth_mib": (kib("VmHWM") - base) / 1024, "batches": len(batches)}))
"""


def test_the_gram_engine_trains_ten_thousand_runs_in_one_batch_without_their_rows():
    """10^4 bootstrap draws of 1,000 rows in one batch: moments only, no (runs, rows, p) tensor
    (the engine that gathered each run's rows grew ~1,000 MiB here; on moments, ~30 MiB)."""
    proc = subprocess.run([sys.executable, "-c", TRAIN], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    assert measured["batches"] == 1 and measured["growth_mib"] < 100, measured


# --- chunking: auto fits the work, a number pins it -------------------------------------------

from pipeline.launch.backends import backend_for  # noqa: E402
from pipeline.launch.chunking import Work, memory_cap  # noqa: E402


def runs_per_task(work: Work, launcher: dict, slots: int, array_limit: int) -> tuple[int, str]:
    """The backend's sizing, with `slots` tasks at once locally and MaxArraySize `array_limit`."""
    slots_key = {"max_parallel": slots} if launcher["cluster"] == "local" else {}
    limit_key = {"max_array_size": array_limit} if launcher["cluster"] == "slurm" else {}
    return backend_for({**launcher, **slots_key, **limit_key}).runs_per_task(work)


SLURM = {
    "cluster": "slurm",
    "runs_per_task": "auto",
    "array_parallelism": 256,
    "timeout_min": 60,
    "mem_gb": 2,
    "gpus_per_node": 0,
    "gres": None,
}


def test_auto_chunking_fits_the_launcher_and_a_number_pins_it():
    quick = Work(1001, "gram", 10_000, 100, engine_bytes_per_run=80_000)
    assert runs_per_task(quick, {"cluster": "local", "runs_per_task": "auto"}, 2, 0)[0] == 1001  # one torch start
    assert runs_per_task(quick, {"cluster": "debug", "runs_per_task": "auto"}, 1, 0)[0] == 1001
    pinned = runs_per_task(quick, {"cluster": "local", "runs_per_task": 7}, 2, 0)
    assert pinned == (7, "pinned by launcher.runs_per_task=7 (auto sizes tasks to the work)")
    slow = Work(1001, "batched", 2000, 100)  # ~6 s of work: one task per core
    size, why = runs_per_task(slow, {"cluster": "local", "runs_per_task": "auto"}, 2, 0)
    assert size == 501 and "2 task(s) for 2 slot(s)" in why and why.startswith("auto:")
    huge = Work(100_001, "gram", 10_000, 100, engine_bytes_per_run=80_000)
    cap = memory_cap(huge)
    size, why = runs_per_task(huge, {"cluster": "local", "runs_per_task": "auto"}, 2, 0)
    assert size <= cap < 100_001 and -(-100_001 // size) % 2 == 0 and "memory" in why  # busy slots
    assert runs_per_task(huge, {"cluster": "debug", "runs_per_task": "auto"}, 1, 0)[0] <= cap


def test_auto_chunking_on_slurm_respects_time_limit_array_size_and_a_minimum_of_work():
    reference = Work(10_000, "reference", 10_000, 100)  # ~2.5 s a run
    size, why = runs_per_task(reference, {**SLURM, "timeout_min": 1}, 0, 1000)
    assert size * reference.seconds_per_run <= 30 and "timeout_min" in why
    assert runs_per_task(reference, SLURM, 0, 5)[0] <= 256  # the textbook loop's tasks stay short
    many = Work(100_000, "batched", 2000, 100)  # 10 tasks of a minute each would exceed MaxArraySize 5
    size, why = runs_per_task(many, SLURM, 0, 5)
    assert size == 20_000 and "MaxArraySize 5" in why
    short = Work(2000, "batched", 2000, 100)  # 6 ms a run: 256 tasks of 8 runs would mostly queue
    size, why = runs_per_task(short, SLURM, 0, 1000)
    assert size * short.seconds_per_run >= 60 or size == 2000
    gpu = runs_per_task(Work(10**6, "gram", 10_000, 100, 80_000), {**SLURM, "gpus_per_node": 1, "mem_gb": 16}, 0, 1000)[
        0
    ]
    assert gpu > runs_per_task(Work(10**6, "gram", 10_000, 100, 80_000), SLURM, 0, 1000)[0]  # working set on GPU


def test_runs_per_task_must_be_auto_or_a_positive_integer(tmp_path):
    from pipeline.core.errors import ConfigError
    from pipeline.launch.prepare import prepare

    for bad in ("many", "0", "2.5"):
        with pytest.raises(ConfigError, match=r"`launcher.runs_per_task` must be auto or an integer >= 1"):
            prepare(make_config(tmp_path / "s", "launcher=debug", f"launcher.runs_per_task={bad}"))


def test_dry_run_and_log_say_how_the_tasks_were_sized(tmp_path, capsys, caplog):
    import logging

    from pipeline.launch.prepare import prepare
    from pipeline.launch.submit import launch

    launch(
        prepare(
            make_config(
                tmp_path / "dry", "sweep=bootstrap", "sweep.resamples=99", "launcher=local", "launcher.dry_run=true"
            )
        )
    )
    out = capsys.readouterr().out
    assert "1 task(s) of up to 100 runs; 100 runs per task, auto:" in out and "engine gram" in out
    with caplog.at_level(logging.INFO, logger="pipeline"):
        run_sweep(
            tmp_path / "quiet",
            "experiment=linear_synthetic",
            "sweep=bootstrap",
            "sweep.resamples=29",
            "launcher=debug",
            "launcher.runs_per_task=10",
            *FAST,
        )
    task_lines = [
        r.getMessage() for r in caplog.records if r.name in ("pipeline.launch.submit", "pipeline.launch.task")
    ]
    assert sum(m.startswith("task ") for m in task_lines) == 3  # one line per task
    assert "10 runs, engine gram on cpu, 1 batch(es) of up to 10" in task_lines[-1]
    assert not any(m.startswith("run ") for m in task_lines)
    assert not [r for r in caplog.records if r.name.startswith("pipeline.train.engines") and r.levelno >= logging.INFO]
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="pipeline"):
        run_sweep(tmp_path / "loud", "experiment=linear_synthetic", "sweep=single", "launcher=debug", *FAST)
    assert any(r.getMessage().startswith("run 1/1 ") for r in caplog.records if r.levelno == logging.DEBUG)


def test_run_ids_serialised_once_per_sweep_equal_the_whole_dict_hash():
    import hashlib

    from pipeline.core.resampling import DRAW_RULE, LEGACY_RULE
    from pipeline.sweep.ids import ID_VERSION, run_id

    fingerprint = {"train": {"epochs": 10, "dtype": "float32"}, "data": "abc", "model": {"_target_": "m", "z": [1]}}
    for lr, init, resample, seed, scheme in [
        (0.1, None, 0, 3, "case"),
        (1e-4, [5.0, 4.0], 7, 0, "residual"),
        (3e-4, [1.5], -2, 1, "residual"),
        (2.0, [0.0], 12, 5, "case"),
    ]:
        for rule in (LEGACY_RULE, DRAW_RULE):
            draw = resample > 0  # id version 1: seed, scheme (and a draw rule but the first) for draws only
            fields = {
                "v": ID_VERSION,
                "settings": fingerprint,
                "lr": lr,
                "init": init,
                "resample": resample,
                "seed": seed if draw else None,
                "scheme": scheme if draw else None,
                **({"draw": rule} if draw and rule != LEGACY_RULE else {}),
            }
            old = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]
            assert run_id(fingerprint, lr, init, resample, seed, scheme, rule) == old
    # a block or wild draw: its settings too, under "draw_settings" (draws only)
    for resample, scheme, settings in (
        (3, "circular_block", {"block_length": 18}),
        (0, "circular_block", {"block_length": 18}),
        (2, "wild", {"wild_weights": "mammen"}),
    ):
        draw = resample > 0
        fields = {
            "v": ID_VERSION,
            "settings": fingerprint,
            "lr": 0.1,
            "init": None,
            "resample": resample,
            "seed": 4 if draw else None,
            "scheme": scheme if draw else None,
            **({"draw": DRAW_RULE, "draw_settings": settings} if draw else {}),
        }
        expected = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]
        assert run_id(fingerprint, 0.1, None, resample, 4, scheme, DRAW_RULE, settings) == expected


def test_report_reads_the_curves_of_a_sample_of_runs_past_a_size(tmp_path, monkeypatch):
    """10^6 runs' curves are 10^8 rows: past a size the report reads the first runs of each cell."""
    from pipeline.report import contents as report_data
    from pipeline.report.page import write_report

    run_sweep(
        tmp_path,
        "experiment=linear_synthetic",
        "sweep=bootstrap",
        "sweep.resamples=11",
        "sweep.lr=[0.01,0.1]",
        "launcher=debug",
        *FAST,
    )
    whole = report_data.load_sweep_folder(tmp_path)
    assert whole.curve_sample is None and whole.table("curves")["run_id"].nunique() == 24
    monkeypatch.setattr(report_data, "CURVE_ROWS_READ_WHOLE", 10)
    monkeypatch.setattr(report_data, "CURVE_RUNS_PER_CELL", 4)
    sampled = report_data.load_sweep_folder(tmp_path)
    curves, est = sampled.table("curves"), sampled.table("estimates")
    assert sampled.curve_sample == (4, 8, 24)
    first = est.groupby(["lr", "init_index"]).head(4)["run_id"]
    assert set(curves["run_id"]) == set(first)
    expected = whole.table("curves")[whole.table("curves")["run_id"].isin(first)]
    pd.testing.assert_frame_equal(curves.reset_index(drop=True), expected.reset_index(drop=True))
    page = write_report(tmp_path).read_text()
    assert "Drawn from the first 4 runs of each learning rate and initial value (8 of 24 runs" in page
