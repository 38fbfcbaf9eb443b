"""A sweep starts fast: no torch._dynamo and no scipy.stats on the way (issue 12, fast start).

Building an optimiser on real parameters imports torch._dynamo (about 1 s), so the
optimiser is probed on an empty parameter list (`problem.probe_optimizer`); these tests
pin that the probe gives what a built optimiser gives, refuses what it refuses, and that
a whole sweep in one process imports neither module.
"""

import subprocess
import sys

import pytest
import torch
from hydra.utils import instantiate

from pipeline.train.problem import probe_optimizer
from tests.conftest import REPO

pytestmark = pytest.mark.slow  # each test starts fresh interpreters to time and trace imports

SPECS = [
    {"_target_": "torch.optim.SGD", "lr": 0.1},
    {"_target_": "torch.optim.SGD", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
    {"_target_": "torch.optim.Adam", "lr": 0.01, "betas": [0.8, 0.99], "amsgrad": True},
    {"_target_": "torch.optim.AdamW", "lr": 0.01},
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s["_target_"].rsplit(".", 1)[1] + str(len(s)))
def test_probe_gives_the_class_and_defaults_of_a_built_optimizer(spec):
    make_optim = instantiate(spec, _partial_=True)
    built = make_optim([torch.zeros(1, requires_grad=True)], lr=0.5)
    cls, defaults = probe_optimizer(make_optim, lr=0.5)
    assert cls is type(built)
    assert defaults == built.defaults


@pytest.mark.parametrize(
    "spec, error, words",
    [
        ({"_target_": "torch.optim.SGD", "lr": 0.1, "momentum": -1}, ValueError, "momentum"),
        ({"_target_": "torch.optim.SGD", "lr": 0.1, "nesterov": True}, ValueError, "Nesterov"),
        ({"_target_": "torch.optim.Adam", "lr": 0.1, "betas": [1.5, 0.9]}, ValueError, "beta"),
        ({"_target_": "torch.optim.SGD", "lr": 0.1, "momentun": 0.9}, TypeError, "momentun"),
    ],
)
def test_probe_refuses_what_the_optimizer_refuses(spec, error, words):
    with pytest.raises(error, match=words):
        probe_optimizer(instantiate(spec, _partial_=True))


def test_an_optimizer_that_takes_no_parameters_is_probed_on_one():
    make_optim = instantiate({"_target_": "tests.integration.test_fast_start.LenientSGD", "lr": 0.1}, _partial_=True)
    cls, defaults = probe_optimizer(make_optim)
    assert cls is LenientSGD and defaults["lr"] == 1.0


class LenientSGD(torch.optim.SGD):
    """An optimiser whose constructor accepts an empty parameter list."""

    def __init__(self, params, **kwargs):
        params = list(params) or [torch.zeros(1, requires_grad=True)]
        super().__init__(params, **kwargs)


def test_a_sweep_imports_neither_dynamo_nor_scipy_stats(tmp_path):
    code = (
        "import sys; from pipeline.cli import sweep_main; sys.argv[1:] = sys.argv[1:]\n"
        "try:\n    sweep_main()\nexcept SystemExit:\n    pass\n"
        "print('LOADED', sorted(m for m in ('torch._dynamo', 'scipy.stats') if m in sys.modules))"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "experiment=tdm_quadratic",
            "sweep=bootstrap",
            "sweep.resamples=5",
            "train.epochs=200",
            "launcher=debug",
            "report=false",
            "intervals.at=[0,1]",  # prediction intervals too (t by scipy.special.stdtrit)
            f"out_dir={tmp_path / 'sweep'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "sweep" / "estimates.parquet").exists()
    assert (tmp_path / "sweep" / "predictions.parquet").exists()
    assert "LOADED []" in proc.stdout, proc.stdout[-2000:]


READERS = {
    "aggregate": ("aggregate_main", ["out_dir={out}"]),
    "status": ("status_main", ["out_dir={out}"]),
    "report": ("report_main", ["out_dir={out}"]),
    "--help": ("sweep_main", ["--help"]),
    "--cfg": ("sweep_main", ["--cfg", "job", "experiment=gistemp_line"]),
}


@pytest.mark.parametrize("command", READERS)
def test_reading_a_folder_help_and_cfg_import_no_torch_at_run_time(tmp_path, command):
    """README: answering --help, --cfg, pipeline-status or pipeline-aggregate imports no torch."""
    from tests.conftest import run_sweep

    out = tmp_path / "sweep"
    if command in ("aggregate", "status", "report"):
        run_sweep(out, "experiment=gistemp_line", "sweep=bootstrap", "sweep.resamples=3", "launcher=debug")
    entry, args = READERS[command]
    code = (
        f"import sys; from pipeline.cli import {entry}\n"
        f"try:\n    {entry}()\nexcept SystemExit as done:\n    assert not done.code, done.code\n"
        "print('TORCH', 'torch' in sys.modules, 'PANDAS', 'pandas' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *(a.format(out=out) for a in args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "TORCH False" in proc.stdout, proc.stdout[-2000:]
    if command == "--help":  # nor pandas: half a second of a one-second answer (issue 24's --help goal)
        assert "PANDAS False" in proc.stdout, proc.stdout[-2000:]
