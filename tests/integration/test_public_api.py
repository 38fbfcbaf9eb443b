"""The public API: `from pipeline import <name>` gives the documented object whatever was
imported before, `help(pipeline)` and `dir(pipeline)` list every name, and the README's
"From Python" session runs as written."""

from __future__ import annotations

import doctest
import json
import re
import subprocess
import sys

import pipeline
from tests.conftest import REPO

# Each public name, the module that defines it, and what it is.
DOCUMENTED = {
    "run_sweep": ("pipeline.api", "function"),
    "aggregate_sweep": ("pipeline.api", "function"),
    "open_sweep": ("pipeline.api", "function"),
    "SweepFolder": ("pipeline.api", "class"),
    "bootstrap_intervals": ("pipeline.stats.intervals", "function"),
    "prediction_intervals": ("pipeline.stats.prediction", "function"),
    "ConfigError": ("pipeline.core.errors", "exception"),
    "FolderError": ("pipeline.core.errors", "exception"),
    "DiskFullError": ("pipeline.core.errors", "exception"),
    "Interrupted": ("pipeline.core.errors", "exception"),
    "DegenerateCellWarning": ("pipeline.core.errors", "warning"),
    "DroppedRunsWarning": ("pipeline.core.errors", "warning"),
}

# In a fresh interpreter: import every submodule first (so that any submodule attribute
# that could shadow a public name is set), then take each public name from the package.
CHECK_NAMES = """
import importlib, inspect, json, pkgutil, sys
import pipeline
modules = [m.name for m in pkgutil.walk_packages(pipeline.__path__, "pipeline.")
           if not m.name.startswith("pipeline.resources")]
for name in modules:
    importlib.import_module(name)
found = {}
for name in pipeline.__all__:
    obj = getattr(importlib.import_module("pipeline"), name)
    exec(f"from pipeline import {name} as imported")
    kind = ("module" if inspect.ismodule(obj) else "warning" if inspect.isclass(obj) and issubclass(obj, Warning)
            else "exception" if inspect.isclass(obj) and issubclass(obj, Exception)
            else "class" if inspect.isclass(obj) else "function" if inspect.isfunction(obj) else type(obj).__name__)
    found[name] = [obj.__module__, kind, imported is obj]
print(json.dumps({"modules": modules, "found": found}))
"""


def test_each_public_name_is_the_documented_object_after_every_submodule_is_imported():
    proc = subprocess.run([sys.executable, "-c", CHECK_NAMES], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(result["modules"]) > 40  # every submodule was imported first
    assert sorted(pipeline.__all__) == sorted(DOCUMENTED)
    for name, (home, kind) in DOCUMENTED.items():
        assert result["found"][name] == [home, kind, True], name
    submodules = {m.rsplit(".", 1)[-1] for m in result["modules"]}
    assert not submodules & set(pipeline.__all__)  # no public name is also a submodule's


def test_import_pipeline_is_light_and_dir_and_help_list_every_public_name():
    code = (
        "import pydoc, sys, pipeline; names = dir(pipeline)"
        "; text = pydoc.render_doc(pipeline, renderer=pydoc.plaintext)"
        "; print(sorted(m for m in ('torch', 'hydra') if m in sys.modules)); print(names); print(text)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    heavy, names, text = proc.stdout.split("\n", 2)
    assert heavy == "[]"  # neither `import pipeline` nor help(pipeline) imports torch or Hydra
    for name in DOCUMENTED:
        assert f"'{name}'" in names, name
        assert re.search(rf"^    (class )?{name}\b", text, flags=re.MULTILINE), f"help(pipeline) does not list {name}"
        assert name in pipeline.__doc__, f"the package docstring does not document {name}"


def readme_session() -> tuple[str, int]:
    """The ```pycon block of the README's "From Python" section, and its line number."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## From Python\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```pycon\n(.*?)```", section, flags=re.DOTALL)
    assert block, "README: no ```pycon session under ## From Python"
    return block.group(1), readme[: readme.index(block.group(1))].count("\n")


def test_the_readmes_from_python_session_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the session writes results/ under the current folder, as a notebook would
    text, line = readme_session()
    test = doctest.DocTestParser().get_doctest(text, {}, "README.md: From Python", str(REPO / "README.md"), line)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)  # a failing example prints what it got beside what the README says
    assert runner.summarize(verbose=False).failed == 0
    assert len(test.examples) >= 10 and (tmp_path / "results" / "from-python" / "report.html").is_file()
