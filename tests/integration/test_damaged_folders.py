"""Issue 22, item 5: every reader survives every damaged file of a sweep folder.

A real sweep folder (parts, plan, records, tables, a SLURM launch record, a failure record,
a progress file) is damaged one file at a time, in every way a file gets damaged (missing,
a folder in its place, truncated, garbled, another kind of content), and every reader is run
on it: `pipeline-aggregate`, `pipeline-status`, `pipeline-report` and `open_sweep` with its
tables. Each either does its job, skipping or setting aside what it cannot read, or stops with
one `FolderError`/`ConfigError` (exit code 2 at the console) whose message names the file;
nothing else may escape. The console scripts are run on a few of the cases too.
"""

from __future__ import annotations

import json
import logging
import shutil
import traceback
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline import store
from pipeline.api import aggregate_sweep, open_sweep
from pipeline.core.errors import ConfigError
from pipeline.launch.status import status_text
from pipeline.report.page import write_report
from tests.conftest import run_cli, run_sweep

ARGS = (
    "experiment=linear_synthetic",
    "sweep=bootstrap",
    "sweep.resamples=4",
    "launcher=debug",
    "launcher.runs_per_task=3",
    "train.epochs=30",
    "intervals.plots=false",
    "intervals.at=[0.5]",
)


def build_folder(out: Path) -> Path:
    """A sweep folder holding one file of every kind the readers read."""
    run_sweep(out, *ARGS)
    parts = sorted((out / "parts").glob("part-*.parquet"))
    tasks = [
        {
            "array_index": i,
            "slurm_id": f"4242424_{i}",
            "task": i,
            "part": p.stem,
            "runs": pq.read_table(p)["run_id"].to_pylist(),
        }
        for i, p in enumerate(parts)
    ]
    (out / store.LAUNCHES).write_text(json.dumps({"time": "t", "job_id": "4242424", "tasks": tasks}) + "\n")
    (out / "failures").mkdir(exist_ok=True)
    (out / "failures" / f"{parts[0].stem}.json").write_text(json.dumps({"error": "boom", "traceback": "..."}))
    (out / "progress").mkdir(exist_ok=True)
    shutil.copy(parts[-1], out / "progress" / parts[-1].name)
    write_report(out)
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return build_folder(tmp_path_factory.mktemp("damage") / "sweep")


def damaged_files(folder: Path) -> list[str]:
    skip = {"logs", ".lock"}  # submitit's logs and the lock file: no reader reads them
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and not skip.intersection(p.relative_to(folder).parts) and p.suffix != ".png"
    )


DAMAGES = ("missing", "folder", "truncated", "garbled", "other_kind")


def damage(path: Path, how: str, folder: Path) -> None:
    data = path.read_bytes()
    if how == "missing":
        path.unlink()
    elif how == "folder":
        path.unlink()
        (path / "inside").mkdir(parents=True)
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbled":
        path.write_bytes(np.random.default_rng(len(data)).integers(0, 256, len(data), dtype=np.uint8).tobytes())
    elif path.suffix == ".parquet":  # another table's content, or text
        other = folder / ("curves.parquet" if path.name != "curves.parquet" else "plan.parquet")
        path.write_bytes(other.read_bytes() if other.is_file() else b'{"not": "parquet"}')
    else:  # well-formed, of the wrong shape: a list where a record is, a table where text is
        path.write_bytes(
            b'[1, 2, 3]\n"x"\n' if path.suffix in (".json", ".jsonl") else (folder / "plan.parquet").read_bytes()
        )


def read_everything(out: Path) -> None:
    sweep = open_sweep(out)
    for name in ("plan", "estimates", "intervals", "curves", "predictions"):
        getattr(sweep, name)
    sweep.status_counts


READERS = {
    "aggregate": lambda out: aggregate_sweep(out, plots=False, report=False, at=[0.5]),
    "status": lambda out: status_text(open_sweep(out).out_dir),  # as pipeline-status does
    "report": lambda out: (open_sweep(out), write_report(out)),
    "open_sweep": read_everything,
}


def named(message: str, relative: str) -> bool:
    return Path(relative).name in message or relative in message


@pytest.mark.slow  # about 30 s per kind of damage: every file, every reader
@pytest.mark.parametrize("how", DAMAGES)
def test_every_reader_survives_every_damaged_file(folder, tmp_path, how, caplog):
    failures = []
    for relative in damaged_files(folder):
        for reader, read in READERS.items():
            copy = tmp_path / f"{reader}-{relative.replace('/', '_')}"
            shutil.copytree(folder, copy)
            damage(copy / relative, how, copy)
            caplog.clear()
            try:
                with caplog.at_level(logging.WARNING):
                    read(copy)
            except ConfigError as err:  # FolderError too: one message, exit code 2 at the console
                if not named(str(err), relative) and not (reader == "status" and "squeue" in str(err)):
                    failures.append(f"{reader} / {relative} {how}: message does not name the file: {err}")
            except Exception as err:  # noqa: BLE001 - the point of the test
                where = traceback.extract_tb(err.__traceback__)[-1]
                failures.append(
                    f"{reader} / {relative} {how}: {type(err).__name__}: {err} ({where.filename}:{where.lineno})"
                )
            shutil.rmtree(copy)
    assert not failures, "\n".join(failures)


@pytest.mark.slow
@pytest.mark.parametrize(
    "app, relative, how, code",
    [
        ("aggregate", "sweep.json", "garbled", 2),
        ("status", store.LAUNCHES, "truncated", 0),
        ("report", "plan.parquet", "other_kind", 2),
        ("report", "estimates.parquet", "garbled", 0),
        ("aggregate", "parts", "first part garbled", 0),
    ],
)
def test_the_console_scripts_name_the_file_and_never_print_a_traceback(folder, tmp_path, app, relative, how, code):
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    if relative == "parts":
        relative = str(sorted((copy / "parts").glob("part-*.parquet"))[0].relative_to(copy))
        how = "garbled"
    damage(copy / relative, how, copy)
    proc = run_cli(app, f"out_dir={copy}")
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert Path(relative).name in proc.stderr + proc.stdout


def test_a_missing_folder_or_a_file_for_a_folder_is_one_message(tmp_path):
    (tmp_path / "a-file").write_text("x")
    for target in (tmp_path / "nowhere", tmp_path / "a-file", tmp_path):
        for read in READERS.values():
            with pytest.raises(ConfigError, match=str(target)):
                read(target)
