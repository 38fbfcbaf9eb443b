"""report.html: built from real sweep folders and opened in headless Chromium.

Needs Debian's `chromium` and `chromium-driver` (`bash tests/install_browser.sh`) and
selenium (the `test` extra); without them these tests fail, they never skip.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from pipeline.report.page import write_report
from tests.conftest import run_sweep

pytestmark = pytest.mark.e2e

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SECTIONS = ("answer", "grid", "curves", "bootstrap", "predictions", "intervals", "diagnostics", "runs", "command")
FIGURES = ("grid", "curves", "bootstrap", "diagnostics")  # sections that always have a figure here
SWEEP = (
    "experiment=linear_synthetic",
    "sweep=bootstrap",
    "sweep.resamples=10",
    "sweep.lr=[0.01,0.1,5]",
    "sweep.init=[[0.194,0.139],[0,0]]",
    "launcher=debug",
    "launcher.runs_per_task=100",
    "intervals.plots=false",
    "intervals.at=[-1,0,0.5,1]",
)


class Browser:
    """One headless Chromium for the module, started at the first page so a missing one fails that test."""

    def __init__(self, chromium: Path = CHROMIUM, chromedriver: Path = CHROMEDRIVER):
        self.chromium, self.chromedriver, self.driver = chromium, chromedriver, None

    def _start(self):
        absent = [str(p) for p in (self.chromium, self.chromedriver) if not p.exists()]
        if absent:
            pytest.fail(
                f"{', '.join(absent)} not found: run `bash tests/install_browser.sh` "
                "(Debian's chromium and chromium-driver)",
                pytrace=False,
            )
        try:
            from selenium import webdriver
            from selenium.webdriver.chrome.service import Service
        except ImportError:
            pytest.fail("selenium is not installed: pip install -e '.[test]'", pytrace=False)
        options = webdriver.ChromeOptions()
        options.binary_location = str(self.chromium)
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1300,2400",
            "--hide-scrollbars",
        ):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(str(self.chromedriver)), options=options)

    def open(self, path: Path) -> dict:
        """Load a page; return its console errors, a screenshot, its sections and images."""
        if self.driver is None:
            self._start()
        self.driver.get(path.resolve().as_uri())
        errors = [e for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]
        facts = self.driver.execute_script(PAGE_FACTS)
        facts["sections"] = dict(facts["sections"])  # in page order
        return {"errors": errors, "screenshot": self.driver.get_screenshot_as_png(), **facts}

    def close(self):
        if self.driver is not None:
            self.driver.quit()


PAGE_FACTS = """
const sections = [...document.querySelectorAll('section')].map(s => [s.id, {
  heading: (s.querySelector('h2') || {}).textContent || '',
  images: [...s.querySelectorAll('img')].map(i => [i.complete, i.naturalWidth, i.naturalHeight])}]);
const table = document.querySelector('table');
return {sections: sections, title: document.title, h1: (document.querySelector('h1') || {}).textContent || '',
        scripts: document.querySelectorAll('script').length, text: document.body.innerText,
        first_table: table ? {section: table.closest('section').id, top: table.getBoundingClientRect().top,
                              rows: [...table.querySelectorAll('tr')].map(r => [...r.cells].map(c => c.innerText))}
                           : null};
"""


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def _decoded_images(page: str) -> list[bytes]:
    parser = _Images()
    parser.feed(page)
    assert parser.sources, "the page has no <img>"
    prefix = "data:image/png;base64,"
    assert all(src.startswith(prefix) for src in parser.sources), "every figure is an embedded PNG"
    return [base64.b64decode(src[len(prefix) :], validate=True) for src in parser.sources]


def _distinct_colours(png: bytes) -> int:
    from PIL import Image  # matplotlib's own dependency

    image = Image.open(io.BytesIO(png)).convert("RGB")
    return len(image.getcolors(maxcolors=image.width * image.height))


def _assert_page(facts: dict, figures=FIGURES) -> None:
    assert facts["errors"] == [], f"console errors: {facts['errors']}"
    assert _distinct_colours(facts["screenshot"]) > 200, "the screenshot looks blank"
    assert list(facts["sections"]) == list(SECTIONS)
    for key, section in facts["sections"].items():
        assert section["heading"].strip(), f"section {key} has no heading"
        assert all(done and w > 50 and h > 50 for done, w, h in section["images"]), f"{key}: an image did not render"
    for key in figures:
        assert facts["sections"][key]["images"], f"section {key} has no figure"
    assert "could not be drawn" not in facts["text"]


@pytest.fixture(scope="module")
def browser():
    b = Browser()
    yield b
    b.close()


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """A small sweep (3 lr incl. one that diverges, 2 inits, 10 draws) and one where every run diverged."""
    from pipeline.results.predictions import write_predictions

    root = tmp_path_factory.mktemp("report")
    run_sweep(root / "main", *SWEEP)
    write_predictions(root / "main", at=[-1, 0, 0.5, 1])  # as pipeline-sweep does after aggregate
    run_sweep(
        root / "diverged",
        "experiment=linear_synthetic",
        "sweep=bootstrap",
        "sweep.resamples=3",
        "sweep.lr=[5]",
        "launcher=debug",
        "intervals.plots=false",
    )
    run_sweep(root / "default", "sweep=story", "launcher=debug")  # pipeline-sweep's default, in this process
    return {name: (root / name, write_report(root / name)) for name in ("main", "diverged", "default")}


def test_the_default_report_opens_on_the_answer_table(sweeps, browser):
    """The terminal's per-cell table is the first table of the page, with the sweep's numbers;
    a cell whose every draw diverged gets no histogram, and the page says why."""
    from pipeline.report.summary import sweep_summary

    out_dir, path = sweeps["default"]
    facts = browser.open(path)
    _assert_page(facts)
    first = facts["first_table"]
    assert first["section"] == "answer" and first["top"] < 600  # right under the title
    header, *rows = first["rows"]
    assert header[:6] == ["lr", "ok", "n.c.", "div.", "parameter", "estimate"]
    assert header[6:] == ["95% percentile (case)", "95% t"]
    ci = pd.read_parquet(out_dir / "intervals.parquet").set_index(["lr", "parameter", "method"])
    lines = [r for r in rows if len(r) == len(header)]
    for lr in (0.003, 0.03):  # both rates that reach the optimum, every parameter, both methods
        for name in ("beta0", "beta1", "beta2"):
            pct, t = ci.loc[(lr, name, "percentile")], ci.loc[(lr, name, "t")]
            wanted = [
                f"{pct['estimate']:.4f}",
                f"[{pct['lower']:.4f}, {pct['upper']:.4f}]",
                f"[{t['lower']:.4f}, {t['upper']:.4f}]",
            ]
            assert any(r[4] == name and r[5:] == wanted for r in lines), (lr, name, wanted, rows)
    said = {r[0]: r[-1] for r in rows if len(r) < len(header)}
    assert said["0.075"].startswith("no interval: every run diverged: lower lr (below lr_max_stable")
    assert said["0.0003"].startswith("no interval: no run converged: raise train.epochs")
    for text in said.values():  # the terminal says the same
        assert text.removeprefix("no interval: ") in sweep_summary(out_dir)
    assert "No histogram for lr 0.0003, init #0 (no run converged" in facts["text"]
    assert "lr 0.075, init #0 (every run diverged" in facts["text"]
    assert len(facts["sections"]["bootstrap"]["images"]) == 3  # one per parameter, diverged cells left out


def test_diverged_cells_get_no_histogram_panel(sweeps):
    from pipeline.report.figures import bootstrap_figure

    out_dir, _ = sweeps["default"]
    est, ci = pd.read_parquet(out_dir / "estimates.parquet"), pd.read_parquet(out_dir / "intervals.parquet")
    titles = [ax.get_title() for ax in bootstrap_figure(est, ci, "beta1", ("ok",)).axes]
    assert titles == ["lr 0.003, init #0: 40 usable draws", "lr 0.03, init #0: 40 usable draws"]


def test_report_of_a_sweep_renders_every_section(sweeps, browser):
    out_dir, path = sweeps["main"]
    assert path == out_dir / "report.html"
    page = path.read_text()
    pngs = _decoded_images(page)
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 2000 for png in pngs)
    assert "http://" not in page and "https://" not in page and "<script" not in page  # self-contained, no JS
    facts = browser.open(path)
    _assert_page(facts)
    assert len(facts["sections"]["bootstrap"]["images"]) == 2  # one figure per parameter: b, w
    assert len(facts["sections"]["predictions"]["images"]) == 1  # one input: the band plot
    assert "interval of percentile as a band" in facts["text"]
    assert "linear_synthetic" in facts["title"] and out_dir.name in facts["h1"]
    est = pd.read_parquet(out_dir / "estimates.parquet")
    assert f"{len(est)} of {len(est)} planned runs have results" in facts["text"]
    assert set(est["status"]) >= {"ok", "diverged"}  # the sweep really has a diverging learning rate
    assert "command is unknown" in facts["text"]  # run in-process: no .hydra/overrides.yaml
    assert facts["first_table"]["section"] == "answer"
    assert "estimate_source" in facts["text"]  # what `estimate` is, per row of the long table


def test_report_of_an_all_diverged_sweep(sweeps, browser):
    out_dir, path = sweeps["diverged"]
    _decoded_images(path.read_text())
    facts = browser.open(path)
    _assert_page(facts)
    assert "No gap to the closed form" in facts["text"]
    assert "No predictions: `intervals.at` was not set" in facts["text"]
    assert not facts["sections"]["predictions"]["images"]
    assert "diverged: 3" in facts["text"]


def test_console_errors_are_caught(tmp_path, browser):
    """The check above is real: a page that logs an error, or throws, is caught."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><body><p>x</p><script>console.error('deliberate');"
        "throw new Error('uncaught');</script></body></html>"
    )
    errors = browser.open(page)["errors"]
    for _ in range(50):  # under load the console's entries can arrive a little after the page
        if sum(any(w in e["message"] for e in errors) for w in ("deliberate", "uncaught")) == 2:
            break
        time.sleep(0.1)
        errors += [e for e in browser.driver.get_log("browser") if e["level"] == "SEVERE"]
    assert any("deliberate" in e["message"] for e in errors)
    assert any("uncaught" in e["message"] for e in errors)


def test_missing_chromium_fails_not_skips():
    with pytest.raises(pytest.fail.Exception, match="install_browser.sh"):
        Browser(chromium=Path("/nonexistent/chromium")).open(Path("/dev/null"))


def test_user_text_is_escaped_and_command_quoted(sweeps, browser, tmp_path):
    folder = tmp_path / "odd"
    shutil.copytree(sweeps["diverged"][0], folder)
    meta = json.loads((folder / "sweep.json").read_text())
    (folder / "sweep.json").write_text(json.dumps({**meta, "experiment": "<script>console.error('x')</script>"}))
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "overrides.yaml").write_text("- experiment=linear_synthetic\n- 'data.rows=x < 2'\n")
    facts = browser.open(write_report(folder))
    assert facts["errors"] == [] and facts["scripts"] == 0
    assert "<script>console.error('x')</script>" in facts["h1"]  # shown as text
    assert "pipeline-sweep experiment=linear_synthetic 'data.rows=x < 2'" in facts["text"]


def test_missing_and_empty_inputs_are_said_not_raised(sweeps, tmp_path):
    folder = tmp_path / "partial"
    shutil.copytree(sweeps["diverged"][0], folder)
    for name in ("intervals.parquet", "curves.parquet", "sweep.json", "config.yaml"):
        (folder / name).unlink()
    page = write_report(folder).read_text()
    for said in (
        "intervals.parquet (not found)",
        "curves.parquet (not found)",
        "sweep.json (not found)",
        "config.yaml (not found)",
        "No intervals",
        "No loss curves",
        "config.yaml is missing",
    ):
        assert said in page
    assert "could not be drawn" not in page
    assert page.count("<img") == 4  # grid, bootstrap b and w (parameters from the estimates), diagnostics
    est = pd.read_parquet(folder / "estimates.parquet")
    est.head(0).to_parquet(folder / "estimates.parquet")
    page = write_report(folder).read_text()
    assert "estimates.parquet (empty)" in page and "could not be drawn" not in page
    assert all(f'<section id="{key}">' in page for key in SECTIONS)
    pd.DataFrame({"lr": pd.Series(dtype=float)}).to_parquet(folder / "predictions.parquet")
    page = write_report(folder).read_text()
    assert "predictions.parquet (empty)" in page and "No predictions: predictions.parquet is empty" in page
    (folder / "predictions.parquet").write_text("not parquet")
    page = write_report(folder).read_text()
    assert "predictions.parquet (unreadable" in page and "could not be drawn" not in page
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "plan.parquet (not found)" in write_report(empty).read_text()


def test_report_modules_need_neither_torch_nor_hydra(sweeps):
    """Writing report.html imports neither torch nor Hydra (pyproject.toml's import contract says
    so for the whole report layer; this checks it at run time)."""
    code = (
        "import sys; from pipeline.report.page import write_report; write_report(sys.argv[1]); "
        "assert not {'torch', 'hydra'} & set(sys.modules), 'imported'"
    )
    subprocess.run([sys.executable, "-c", code, str(sweeps["diverged"][0])], check=True)


def test_report_config_composes(tmp_path):
    from hydra import compose, initialize_config_dir

    from pipeline.config.schema import to_container
    from pipeline.config.shipped import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("report", overrides=[f"out_dir={tmp_path}"])
    assert to_container(cfg) == {"out_dir": str(tmp_path)}


def test_grid_map_marks_the_lr_bound_where_it_falls():
    from pipeline.report.figures import grid_figure, lr_bound_position

    lrs = [1e-3, 1e-2, 1e-1]
    assert lr_bound_position(1e-2, lrs) == pytest.approx(1.0)
    assert lr_bound_position(10**-1.5, lrs) == pytest.approx(1.5)  # halfway on the log axis
    assert lr_bound_position(5.0, lrs) == 2.5 and lr_bound_position(1e-5, lrs) == -0.5
    assert lr_bound_position(float("nan"), lrs) is None
    original = pd.DataFrame(
        {
            "lr": lrs * 2,
            "init_index": [0, 0, 0, 1, 1, 1],
            "init": [[0.0]] * 3 + [[1.0]] * 3,
            "final_loss": [1.0, 0.5, float("inf")] * 2,
            "status": ["not_converged", "ok", "diverged"] * 2,
            "lr_max_stable": [10**-1.5] * 6,
        }
    )
    lines = [line for line in grid_figure(original).axes[0].get_lines() if line.get_linestyle() == "--"]
    assert [tuple(line.get_xdata()) for line in lines] == [(pytest.approx(1.5),) * 2] * 2
    assert [tuple(line.get_ydata()) for line in lines] == [(-0.5, 0.5), (0.5, 1.5)]
    without = original.drop(columns="lr_max_stable")
    assert not [line for line in grid_figure(without).axes[0].get_lines() if line.get_linestyle() == "--"]


def _prediction_rows(cells, points=(-1.0, 0.0, 2.0)) -> pd.DataFrame:
    """predictions.parquet's layout: per cell and point, percentile (no lower bound at the last
    point of the first cell), basic and t around an estimate of 2 x."""
    rows = []
    for k, (lr, init_index) in enumerate(cells):
        for i, x in enumerate(points):
            for method, half in (("percentile", 0.3), ("basic", 0.4), ("t", 0.5)):
                hole = k == 0 and i == len(points) - 1 and method == "percentile"
                rows.append(
                    {
                        "lr": lr,
                        "init_index": init_index,
                        "point": i,
                        "x": x,
                        "output": "y",
                        "method": method,
                        "level": 0.9,
                        "estimate": 2 * x,
                        "lower": float("nan") if hole else 2 * x - half,
                        "upper": 2 * x + half,
                        "note": "",
                    }
                )
    return pd.DataFrame(rows)


def test_prediction_figure_draws_the_band_and_every_method():
    from matplotlib.collections import PolyCollection

    from pipeline.report.figures import MAX_PANELS, band_method, prediction_figure

    table = _prediction_rows([(0.1, 0), (0.1, 1)])
    first = table[table["init_index"] == 0]
    assert band_method(first, ("percentile", "basic", "t")) == "basic"  # percentile has a hole: not the band
    assert band_method(table[table["init_index"] == 1], ("percentile", "basic", "t")) == "percentile"
    fig = prediction_figure(table, "x", ("percentile", "basic", "t"))
    assert len(fig.axes) == 4  # per cell: the function, and the bounds minus the estimate
    top, bottom = fig.axes[0], fig.axes[1]
    assert "lr 0.1, init #0: 90% intervals" == top.get_title()
    band = [c for c in top.collections if isinstance(c, PolyCollection)]
    assert len(band) == 1 and band[0].get_paths()[0].vertices[:, 1].max() == pytest.approx(4.4)  # basic at x=2
    estimate = [line for line in top.get_lines() if line.get_color() == "black"][0]
    assert list(estimate.get_ydata()) == [-2.0, 0.0, 4.0]
    dashed = {line.get_label(): line for line in bottom.get_lines() if line.get_linestyle() == "--"}
    assert list(dashed["t"].get_ydata()) == pytest.approx([-0.5] * 3)  # t's lower bound, minus the estimate
    assert list(dashed["percentile"].get_xdata()) == [-1.0, 0.0]  # its point without bounds left out
    none = table.assign(lower=float("nan"))  # e.g. a diverged cell without closed-form rows
    assert band_method(none, ("percentile",)) is None
    empty = prediction_figure(none, "x", ("percentile", "basic", "t")).axes[0]
    assert "no bounds: percentile, basic, t" in empty.get_title()
    assert any("no method has bounds" in t.get_text() for t in empty.texts)
    many = _prediction_rows([(0.1, j) for j in range(MAX_PANELS + 1)])
    capped = prediction_figure(many, "x")
    assert len(capped.axes) == 2 * MAX_PANELS and f"first {MAX_PANELS} of {MAX_PANELS + 1}" in capped.get_suptitle()


def test_predictions_of_several_inputs_are_a_table_not_a_plot(tmp_path):
    from pipeline.report.contents import Sweep
    from pipeline.report.page import _predictions

    table = _prediction_rows([(0.1, 0)]).rename(columns={"x": "x1"})
    table.insert(4, "x2", 5.0)
    sweep = Sweep(tmp_path, meta={"x_names": ["x1", "x2"]}, tables={"predictions": table})
    html = _predictions(sweep)
    assert "<img" not in html and "2 inputs (x1, x2): no band plot" in html
    assert html.count("<tr") == len(table) + 1 and "<th class=num>x2</th>" in html
    one = Sweep(tmp_path, meta={}, tables={"predictions": _prediction_rows([(0.1, 0)])})  # x from the layout
    assert _predictions(one).count("<img") == 1
