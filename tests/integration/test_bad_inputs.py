"""Trust at the edges: every bad input is refused before launch with one message naming the
key (or file), the value and the rule; a design that cannot give an interval costs that
interval (NaN bounds and a note), never the tables.

The battery runs in this process through the entry the console scripts use (Hydra's
composition in `pipeline.compose.compose_config`, then `prepare`); a handful go through
the real `pipeline-sweep` to check the exit code and that no traceback reaches stderr.
"""

from __future__ import annotations

import errno
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.config.compose import compose_config
from pipeline.core.errors import ConfigError
from pipeline.launch.prepare import prepare
from pipeline.stats.intervals import bootstrap_intervals
from tests.conftest import run_cli, run_sweep

BASE = ("experiment=linear_synthetic", "sweep=single", "launcher=debug", "train.epochs=5", "train.log_every=5")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """One small table per kind of bad file, written once for the whole battery."""
    d = tmp_path_factory.mktemp("tables")
    texts = {
        "good.csv": "x,y\n1,2\n2,3\n3,5\n4,4\n",
        "dup.csv": "x,x,y\n1,2,3\n2,3,4\n3,4,6\n",
        "bool.csv": "x,y\nTrue,1\nFalse,2\nTrue,3\n",
        "booly.csv": "x,y\n1,True\n2,False\n3,True\n",
        "empty.csv": "",
        "header.csv": "x,y\n",
        "inf.csv": "x,y\n1,2\ninf,3\n3,4\n",
        "text.csv": "x,y\n1,2\n2,abc\n3,4\n",
        "const.csv": "x,y\n2,1\n2,2\n2,4\n2,3\n",
        "gaps.csv": "t,x,y\n1,1,2\n,2,3\n3,3,5\n",
        "corrupt.parquet": "PAR1 this is not a parquet file",
    }
    for name, text in texts.items():
        (d / name).write_text(text)
    pd.DataFrame({"x": pd.date_range("2020-01-01", periods=4), "y": [1.0, 2, 3, 4]}).to_parquet(d / "dates.parquet")
    pd.DataFrame({"x": pd.to_timedelta([1, 2, 3], unit="D"), "y": [1.0, 2, 3]}).to_parquet(d / "span.parquet")
    (d / "a_folder.csv").mkdir()
    return {path.name: path for path in d.iterdir()}


def user(files: dict[str, Path], name: str, *more: str) -> tuple[str, ...]:
    return ("experiment=user_data", f"data.path={files[name]}", *more)


# (overrides, what the message must name); "{f}" marks a table of `files`
CASES = {
    # files and columns
    "missing file": (("experiment=user_data", "data.path=/nowhere/t.csv"), ["`data.path`", "/nowhere/t.csv"]),
    "path is a folder": ("a_folder.csv", ["`data.path`", "folder"]),
    "empty csv": ("empty.csv", ["`data.path`", "empty.csv"]),
    "header only": ("header.csv", ["`data.path`", "no rows"]),
    "corrupt parquet": ("corrupt.parquet", ["`data.path`", "corrupt.parquet"]),
    "test file missing": (("data.test_path=/nowhere/test.csv",), ["`data.test_path`", "/nowhere/test.csv"]),
    "duplicate header": ("dup.csv", ["`data.path`", "more than one column named 'x'"]),
    "boolean x": ("bool.csv", ["`data.x`", "'x'", "boolean"]),
    "boolean y": ("booly.csv", ["`data.y`", "'y'", "boolean"]),
    "datetime x": ("dates.parquet", ["`data.x`", "datetime"]),
    "timedelta x": ("span.parquet", ["`data.x`", "timedelta"]),
    "infinite x": ("inf.csv", ["`data.x`", "non-finite", "row 2"]),
    "text in y": ("text.csv", ["`data.y`", "'abc'"]),
    "no data.path": (("experiment=user_data",), ["`data.path`", "not set"]),
    "constant x standardized": ("const.csv", ["`data.standardize`", "constant"]),
    "x empty list": (("data.x=[]",), ["`data.x`", "empty"]),
    "x twice": (("data.x=[x,x]",), ["`data.x`", "more than once"]),
    "x a number": (("data.x=1",), ["`data.x`", "got 1"]),
    "x null": (("data.x=null",), ["`data.x`", "None"]),
    "y empty list": (("data.y=[]",), ["`data.y`", "empty"]),
    "x column missing": (("data.x=height",), ["`data.x`", "'height'"]),
    "x is y": (("data.x=y",), ["`data.x`", "'y'"]),
    "test_share 0": ("good.csv", ["`data.test_share`", "got 0"], "data.test_share=0"),
    "test_share and test rows": (("data.test_share=0.2",), ["`data.test_share`", "already has test rows"]),
    "path beside generate": (("data.path=/some/file.csv",), ["`data.path`", "`data.generate`"]),
    "test_share 1.5": (("data.test_share=1.5",), ["`data.test_share`", "1.5"]),
    "split_seed negative": (("data.split_seed=-1",), ["`data.split_seed`", "-1", ">= 0"]),
    "x_shift text": (("data.x_shift=abc",), ["`data.x_shift`", "abc"]),
    "x_scale 0": (("data.x_scale=0",), ["`data.x_scale`", "0"]),
    "rows bad condition": (("data.rows='x >'",), ["`data.rows`"]),
    "rows a call": (("data.rows='__import__(\"os\").getcwd() > 0'",), ["`data.rows`"]),
    "standardize not bool": (("data.standardize=maybe",), ["`data.standardize`", "maybe"]),
    # training
    "epochs 0": (("train.epochs=0",), ["`train.epochs`", ">= 1", "0"]),
    "epochs negative": (("train.epochs=-5",), ["`train.epochs`", "-5"]),
    "epochs text": (("train.epochs=abc",), ["`train.epochs`", "abc"]),
    "log_every 0": (("train.log_every=0",), ["`train.log_every`", ">= 1"]),
    "grad_tol 0": (("train.grad_tol=0",), ["`train.grad_tol`", "> 0"]),
    "grad_tol nan": (("train.grad_tol=nan",), ["`train.grad_tol`", "nan"]),
    "device unknown": (("train.device=tpu",), ["`train.device`", "tpu"]),
    "dtype unknown": (("train.dtype=float16",), ["`train.dtype`", "float16"]),
    "engine unknown": (("train.engine=turbo",), ["`train.engine`", "turbo"]),
    "misspelt key": (("train.epoch=5",), ["`train.epoch`", "not a config key", "did you mean `train.epochs`?"]),
    "misspelt key, nearest": (
        ("optim.lrr=0.1",),
        ["`optim.lrr` is not a config key: ", "did you mean `optim.lr`? (`+optim.lrr=0.1`"],
    ),
    "misspelt group": (("trian.epochs=5",), ["did you mean `train.epochs`?"]),
    # the grid
    "lr text": (("sweep.lr=[abc]",), ["`sweep.lr`", "got 'abc'", "positive"]),
    "lr empty": (("sweep.lr=[]",), ["`sweep.lr`", "empty"]),
    "lr zero": (("sweep.lr=[1e-3,0]",), ["`sweep.lr`", "got 0"]),
    "lr negative": (("sweep.lr=[-0.001]",), ["`sweep.lr`", "-0.001"]),
    "lr infinite": (("sweep.lr=[inf]",), ["`sweep.lr`", "inf"]),
    "lr not a list": (("sweep.lr=abc",), ["`sweep.lr`", "list"]),
    "lr nested": (("sweep.lr=[[0.1]]",), ["`sweep.lr`", "[0.1]"]),
    "lr syntax": (("sweep.lr=[1e-3",), ["`sweep.lr`", "cannot be read"]),
    "optim.lr text": (("optim.lr=abc",), ["`optim.lr`", "'abc'"]),
    "optim.lr text in lr_grid": (("optim.lr=abc", "sweep=lr_grid"), ["`sweep.lr`", "'abc'"]),
    "init wrong length": (("sweep.init=[[1.0]]",), ["`sweep.init`", "one value per model parameter (2)"]),
    "init strings": (("sweep.init=[[a,b]]",), ["`sweep.init`", "numbers", "'a'"]),
    "init flat": (("sweep.init=[1,2]",), ["`sweep.init`", "sweep.init=[[1, 2]]"]),
    "init nan in grid": (("sweep.init=[[nan,1]]",), ["`sweep.init`", "finite"]),
    "init nan": (("init=[nan,1]",), ["`init`", "finite"]),
    "init text": (("init=[a,b]",), ["`init", "'a'"]),
    "init short": (("init=[1]",), ["`init`", "(2)"]),
    "init empty grid": (("sweep.init=[]",), ["`sweep.init`", "empty"]),
    "resamples negative": (("sweep.resamples=-1",), ["`sweep.resamples`", "-1"]),
    "resamples fraction": (("sweep.resamples=1.5",), ["`sweep.resamples`", "1.5"]),
    "seed negative": (("sweep.seed=-1", "sweep.resamples=2"), ["`sweep.seed`", ">= 0", "-1"]),
    "scheme unknown": (("sweep.scheme=jackknife",), ["`sweep.scheme`", "jackknife", "case, residual, moving_block"]),
    "block_length 0": (("sweep.block_length=0",), ["`sweep.block_length`", "auto", ">= 1", "got 0"]),
    "block_length text": (("sweep.block_length=long",), ["`sweep.block_length`", "'long'"]),
    "block_length fraction": (
        ("sweep.scheme=moving_block", "sweep.block_length=2.5"),
        ["`sweep.block_length`", "moving_block", "whole number", "2.5"],
    ),
    "block_length past the data": (
        ("sweep.scheme=circular_block", "sweep.block_length=81"),
        ["`sweep.block_length`", "81", "80 rows"],
    ),
    "wild weights unknown": (
        ("sweep.wild_weights=gaussian",),
        ["`sweep.wild_weights`", "rademacher, mammen", "gaussian"],
    ),
    "order column missing": (("data.order=year",), ["`data.order`", "'year'", "not in"]),
    "order column empty": ("gaps.csv", ["`data.order`", "'t'", "missing value", "row 2"], "data.order=t"),
    "hac_lags negative": (("intervals.hac_lags=-1",), ["`intervals.hac_lags`", ">= 0", "-1"]),
    "hac_lags text": (("intervals.hac_lags=many",), ["`intervals.hac_lags`"]),
    # intervals
    "methods empty": (("intervals.methods=[]",), ["`intervals.methods`", "empty"]),
    "methods unknown": (("intervals.methods=[wild]",), ["`intervals.methods`", "'wild'"]),
    "methods not a list": (("intervals.methods=percentile",), ["`intervals.methods`", "not a ListConfig"]),
    "bca without jackknife": (("intervals.methods=[bca]", "sweep.jackknife=false"), ["`intervals.methods`", "bca"]),
    "level 0": (("intervals.level=0",), ["`intervals.level`", "between 0 and 1"]),
    "level 1": (("intervals.level=1",), ["`intervals.level`", "between 0 and 1"]),
    "level 95": (("intervals.level=95",), ["`intervals.level`", "0.95, not 95"]),
    "level text": (("intervals.level=abc",), ["`intervals.level`", "abc"]),
    "statuses empty": (("intervals.statuses=[]",), ["`intervals.statuses`", "empty"]),
    "statuses unknown": (("intervals.statuses=[finished]",), ["`intervals.statuses`", "'finished'"]),
    "dropped share negative": (("intervals.max_dropped_share=-0.1",), ["`intervals.max_dropped_share`"]),
    "dropped share 1.5": (("intervals.max_dropped_share=1.5",), ["`intervals.max_dropped_share`", "1.5"]),
    # the launcher
    "cluster unknown": (("launcher.cluster=kubernetes",), ["`launcher.cluster`", "kubernetes"]),
    "launcher unknown": (("launcher=nope",), ["`launcher`", "'nope'", "slurm_gpu"]),
    "runs_per_task 0": (("launcher.runs_per_task=0",), ["`launcher.runs_per_task`", ">= 1"]),
    "timeout 0": (
        (
            "launcher=slurm",
            "launcher.dry_run=true",
            "launcher.timeout_min=0",
        ),
        ["`launcher.timeout_min`", "> 0"],
    ),
    "mem 0": (
        (
            "launcher=slurm",
            "launcher.dry_run=true",
            "launcher.mem_gb=0",
        ),
        ["`launcher.mem_gb`", "> 0"],
    ),
    "mem infinite": (
        (
            "launcher=slurm",
            "launcher.dry_run=true",
            "launcher.mem_gb=inf",
        ),
        ["`launcher.mem_gb`", "finite"],
    ),
    "cpus 0": (
        (
            "launcher=slurm",
            "launcher.dry_run=true",
            "launcher.cpus_per_task=0",
        ),
        ["`launcher.cpus_per_task`"],
    ),
    "max_parallel negative": (("launcher=local", "launcher.max_parallel=-1"), ["`launcher.max_parallel`", "-1"]),
    "array_parallelism 0": (
        (
            "launcher=slurm",
            "launcher.dry_run=true",
            "launcher.array_parallelism=0",
        ),
        ["`launcher.array_parallelism`"],
    ),
    "signal delay negative": (
        (
            "launcher=slurm",
            "launcher.dry_run=true",
            "launcher.signal_delay_s=-1",
        ),
        ["`launcher.signal_delay_s`"],
    ),
    "timeouts negative": (
        (
            "launcher=slurm",
            "launcher.dry_run=true",
            "launcher.max_num_timeout=-1",
        ),
        ["`launcher.max_num_timeout`"],
    ),
    "max_array_size 0": (
        (
            "launcher=slurm",
            "launcher.dry_run=true",
            "launcher.max_array_size=0",
        ),
        ["`launcher.max_array_size`", ">= 1 or null"],
    ),
    "gpus negative": (
        (
            "launcher=slurm",
            "launcher.dry_run=true",
            "launcher.gpus_per_node=-1",
        ),
        ["`launcher.gpus_per_node`"],
    ),
    # the experiment's parts
    "experiment unknown": (("experiment=nope",), ["`experiment`", "'nope'", "tdm_quadratic"]),
    "model unknown": (("model._target_=pipeline.models.NoSuchModel",), ["`model._target_`", "NoSuchModel"]),
    "loss unknown": (("loss._target_=torch.nn.NoSuchLoss",), ["`loss._target_`", "NoSuchLoss"]),
    "optim argument text": (("+optim.momentum=abc",), ["`optim`", "momentum"]),
}


def _overrides(case, files) -> tuple[str, ...]:
    spec, *more = CASES[case][0], *CASES[case][2:]
    if isinstance(spec, str):  # a table of `files`, read by experiment=user_data
        return user(files, spec, *more)
    return tuple(spec)


def refused(out: Path, *overrides: str) -> str:
    """The message `pipeline-sweep <overrides>` would print: composition, then every check."""
    with pytest.raises(ConfigError) as err:
        prepare(compose_config([*BASE, *overrides, f"out_dir={out}", "launcher.progress=false"]))
    return str(err.value)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_with_a_message_naming_it(case, files, tmp_path):
    out = tmp_path / "sweep"
    message = refused(out, *_overrides(case, files))
    for part in CASES[case][1]:
        assert part in message, f"{case}: {part!r} not in\n{message}"
    assert "Traceback" not in message
    assert not (out / "parts").exists() and not (out / "plan.parquet").exists()  # nothing planned or trained


def test_cuda_without_cuda_names_the_key_and_what_there_is(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = refused(tmp_path / "s", "train.device=cuda")
    assert "`train.device`" in message and "'cuda'" in message and "available here: cpu" in message


@pytest.mark.parametrize("where", ["file", "under a file", "/sys"])
def test_out_dir_must_be_a_writable_folder(where, files, tmp_path):
    out = {
        "file": files["good.csv"],
        "under a file": files["good.csv"] / "sweep",
        "/sys": Path("/sys/pipeline-sweep-check"),
    }[where]  # /sys: no one may create folders there
    message = refused(out)
    assert "`out_dir`" in message and str(out) in message


def test_read_only_out_dir_is_refused_and_the_probe_leaves_nothing(monkeypatch, tmp_path):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryDirectory", read_only)
    message = refused(tmp_path / "a" / "b")
    assert "`out_dir`" in message and "Read-only file system" in message
    monkeypatch.undo()
    message = refused(tmp_path / "c" / "d", "train.epochs=0")  # a writable place: only the epochs refused
    assert "`train.epochs`" in message and "`out_dir`" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the sweep folder nor a probe left


def test_a_bad_optim_lr_is_one_problem_about_what_the_user_typed(tmp_path):
    """sweep=story runs optim.lr x lr_grid_factors as sweep.lr: one problem, about optim.lr."""
    message = refused(tmp_path / "s", "sweep=story", "optim.lr=-1")
    assert "1 problem(s)" in message and "`optim.lr` must be a positive finite learning rate; got -1.0" in message
    assert "sweep.lr = [-0.1, -0.3, -1.0" in message  # where it went, said once
    factors = refused(tmp_path / "s", "sweep=lr_grid", "lr_grid_factors=[1,-2]")
    assert "1 problem(s)" in factors and "`lr_grid_factors` must hold positive finite factors; got -2.0" in factors
    own = refused(tmp_path / "s", "sweep=story", "sweep.lr=[0.1,-1]")  # typed sweep.lr: about sweep.lr
    assert "`sweep.lr` must hold positive finite learning rates; got -1.0" in own


def test_one_message_lists_every_problem(files, tmp_path):
    message = refused(tmp_path / "s", "train.epochs=abc", "sweep.resamples=1.5", "train.epoch=3")
    assert "3 problem(s)" in message
    message = refused(
        files["good.csv"],
        "train.epochs=0",
        "sweep.lr=[abc]",
        "intervals.statuses=[]",
        "sweep.seed=-1",
        "data.split_seed=-2",
    )  # out_dir: an existing file
    for key in ("train.epochs", "sweep.lr", "intervals.statuses", "sweep.seed", "data.split_seed", "out_dir"):
        assert f"`{key}`" in message
    assert "6 problem(s)" in message


# through the real console script: exit code 2, the message on stderr, no traceback, nothing started
CLI_CASES = {
    "type": (["train.epochs=abc"], "`train.epochs`"),
    "syntax": (["sweep.lr=[1e-3"], "`sweep.lr`"),
    "resolver": (["optim.lr=abc", "sweep=lr_grid"], "`sweep.lr`"),
    "unknown option": (["launcher=nope"], "`launcher`: no option 'nope'"),
    "out_dir a file": (["out_dir={good}"], "`out_dir`"),
    "misspelt key": (["train.epoch=5"], "`train.epoch` is not a config key"),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_refuses_with_exit_code_2_and_no_traceback(case, files, tmp_path):
    args, expected = CLI_CASES[case]
    args = [a.format(good=files["good.csv"], dup=files["dup.csv"]) for a in args]
    out = tmp_path / "sweep"
    if not any(a.startswith("out_dir=") for a in args):
        args.append(f"out_dir={out}")
    proc = run_cli("sweep", *BASE, *args)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr and "error:" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (out / "parts").exists() and not (out / "logs").exists()


# --- designs the closed-form fit cannot use: the sweep trains and aggregates, the intervals say why ---


def _huge_x(path: Path) -> None:
    pd.DataFrame({"x": 1e200 * (1 + np.arange(6) * 1e-3), "y": np.arange(6.0)}).to_csv(path, index=False)


RANK_CASES = {
    "constant x, raw units": ("x,y\n2,1\n2,2\n2,4\n2,3\n2,5\n", ["data.standardize=false"], "rank 1 < 2"),
    "x near 1e200": (_huge_x, ["data.standardize=false"], "rank 1 < 2"),
    "two rows, a bootstrap": ("x,y\n1,1\n2,3\n", [], "more rows than parameters"),
}


@pytest.mark.e2e
@pytest.mark.parametrize("case", list(RANK_CASES))
def test_rank_deficient_design_trains_aggregates_and_notes_why(case, tmp_path, caplog):
    content, more, reason = RANK_CASES[case]
    path = tmp_path / "data.csv"
    content(path) if callable(content) else path.write_text(content)
    out = tmp_path / "sweep"
    with caplog.at_level("WARNING", logger="pipeline.launch.prepare"):
        _, est = run_sweep(
            out,
            "experiment=user_data",
            f"data.path={path}",
            *more,
            "sweep=bootstrap",
            "sweep.resamples=4",
            "launcher=debug",
            "train.epochs=20",
            "train.log_every=10",
            "intervals.plots=false",
        )
    assert any("t, hc3, hac cannot be formed" in r.getMessage() and reason in r.getMessage() for r in caplog.records)
    assert len(est) == 5 and (out / "estimates.parquet").is_file()
    ci = pd.read_parquet(out / "intervals.parquet")
    closed = ci[ci["method"].isin(["t", "hc3", "hac"])]
    # 2 parameters x t, hc3, hac, in each of the units the table gives (raw and fitted when x is transformed)
    assert len(closed) == 6 * ci["units"].nunique() and closed["lower"].isna().all() and closed["upper"].isna().all()
    assert closed["note"].str.contains(reason, regex=False).all()
    assert set(ci["method"]) >= {"percentile", "basic", "normal", "t", "hc3", "hac"}  # the other methods are there


def test_intervals_never_raise_on_data_but_still_on_misuse():
    rng = np.random.default_rng(0)
    est = pd.DataFrame(
        {
            "lr": 0.1,
            "init_index": 0,
            "resample": range(11),
            "status": "ok",
            "b": rng.normal(size=11),
            "w": rng.normal(size=11),
        }
    )
    leverage_one = np.column_stack([np.ones(4), [0.0, 0.0, 0.0, 1.0]])  # row 4 alone fixes w
    with pytest.warns(UserWarning, match="leverage 1"):
        table = bootstrap_intervals(est, params=["b", "w"], X=leverage_one, y=np.array([1.0, 2, 3, 4]))
    hc3, t = table[table["method"] == "hc3"], table[table["method"] == "t"]
    assert hc3["lower"].isna().all() and hc3["note"].str.contains("leverage 1").all()
    assert t["lower"].notna().all() and (t["lower"] < t["upper"]).all()  # t is still fine
    overflow = np.column_stack([np.ones(3), [1.0, 2.0, np.inf]])
    with pytest.warns(UserWarning, match="non-finite"):
        bootstrap_intervals(est, params=["b", "w"], X=overflow, y=np.arange(3.0))
    with pytest.raises(ValueError, match="lack column"):
        bootstrap_intervals(est, params=["b", "v"], X=leverage_one, y=np.arange(4.0))
    with pytest.raises(ValueError, match="one column per parameter"):
        bootstrap_intervals(est, params=["b", "w"], X=np.ones((4, 3)), y=np.arange(4.0))


def test_a_constant_y_is_fine(tmp_path):
    """Not every odd table is a mistake: a constant response fits (slope 0), and is not refused."""
    path = tmp_path / "flat.csv"
    path.write_text("x,y\n1,3\n2,3\n3,3\n4,3\n")
    prepared = prepare(
        compose_config([*BASE, "experiment=user_data", f"data.path={path}", f"out_dir={tmp_path / 's'}"])
    )
    assert prepared.dataset.n_rows == 4 and (prepared.dataset.y == 3).all()
