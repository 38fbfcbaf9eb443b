"""The package is a one-way house: each module imports only modules below it.

The imports are read with `ast` (function-level imports included), so a circle or a
backward import fails here before it confuses a reader. A new module must be given
its place in LAYERS.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"

# Lower numbers are lower layers; a module may import only strictly lower ones.
LAYERS: dict[str, float] = {
    # the bottom: errors and the records that cross module lines
    "errors": 0, "records": 0, "resampling": 0.5, "closed_form": 0.5, "studentized": 0.9, "draw_values": 0.93, "interval_formulas": 0.95, "interval_cells": 0.96,
    # pure parts: the schema, models, formulas, the sweep folder's files, the queue
    "config": 1, "compose": 1.5, "models": 1, "rowfilter": 1, "nist": 1, "rawunits": 1, "cluster": 1, "record": 1,
    "lock": 1, "processes": 1, "chunking": 1,
    "intervals": 1, "partscan": 1.5, "report_data": 1, "report_figures": 1, "report_html": 1.5,
    "units": 1.5, "lr_bound": 1.6, "prediction_points": 1, "prediction_intervals": 1.2,
    "data": 2, "plan": 2, "plots": 2, "migrate": 3,
    "problem": 3,
    # the engines, in their own order
    "engines.stacked_optim": 4.0, "engines.memory": 4.0, "engines.fate": 4.1, "engines.stacked": 4.2,
    "engines.moments": 4.1, "engines.overflow": 4.2,
    "engines.reference": 4.3, "engines.batched": 4.3, "engines.gram": 4.3, "engines.choice": 4.4,
    "engines": 4.5,
    # prepare asks the engines which can train the problem; train runs them inside a task
    "prepare": 5, "train": 5,
    "status": 6,
    "executors": 6.5,
    "launch": 7,
    "aggregate": 8,
    "predict": 8.5,
    "report": 2,
    "summary": 2,
    "coverage": 9,
    "cli": 10,
    "__init__": 11,
}
# Reading a sweep folder needs neither torch nor the training side.
READERS = ("record", "closed_form", "partscan", "intervals", "plots", "aggregate", "status", "report", "report_data",
           "report_html", "report_figures", "resampling", "studentized", "interval_formulas", "units", "lr_bound",
           "summary", "prediction_points", "prediction_intervals")
TRAINING_SIDE = ("models", "problem", "engines", "train", "prepare", "launch")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1]) if parts[-1] == "__init__" and len(parts) > 1 else ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Our modules that `path` imports, as names relative to the package (`engines.gram`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith("pipeline."):
                found.add(name.removeprefix("pipeline."))
    return {n for n in found if n in LAYERS} | {n.rsplit(".", 1)[0] for n in found
                                                 if n not in LAYERS and n.rsplit(".", 1)[0] in LAYERS}


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def backward_imports(found: dict[str, Path]) -> list[str]:
    problems = []
    for name, path in sorted(found.items()):
        if name not in LAYERS:
            problems.append(f"{name}: not placed in LAYERS")
            continue
        for dep in sorted(imported_modules(path)):
            if dep != name and LAYERS[dep] >= LAYERS[name]:
                problems.append(f"{name} (layer {LAYERS[name]}) imports {dep} (layer {LAYERS[dep]})")
    return problems


def test_every_import_goes_down_a_layer():
    assert backward_imports(modules()) == []


def test_readers_never_import_the_training_side():
    bad = [(r, dep) for r, path in modules().items() if r in READERS
           for dep in imported_modules(path) if dep.split(".")[0] in TRAINING_SIDE]
    assert bad == []


def test_the_check_catches_a_backward_import(tmp_path, monkeypatch):
    """Proof the test can fail: intervals importing launch is a backward import."""
    fake = tmp_path / "intervals.py"
    fake.write_text("from pipeline.launch import launch\n")
    found = {**modules(), "intervals": fake}
    assert backward_imports(found) == ["intervals (layer 1) imports launch (layer 7)"]


@pytest.mark.parametrize("module", ["pipeline", "pipeline.aggregate", "pipeline.status", "pipeline.record",
                                    "pipeline.intervals", "pipeline.plots", "pipeline.report"])
def test_reading_a_sweep_folder_imports_no_torch(module):
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'hydra') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
