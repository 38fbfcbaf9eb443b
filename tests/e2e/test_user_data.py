"""Issue 7: users' own tables and models, the README walkthrough, and bad user input."""

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.core.errors import ConfigError
from pipeline.data.load import load_dataset, split_rows
from pipeline.launch.prepare import validate
from pipeline.models import Features
from tests.conftest import REPO, make_config, run_cli, run_sweep

PLANE = textwrap.dedent('''
    import torch
    from torch import nn


    class Plane(nn.Module):
        """y = a + b1 x1 + b2 x2, parameters named as a user would."""

        def __init__(self, start: float = 0.0):
            super().__init__()
            for name in ("a", "b1", "b2"):
                self.register_parameter(name, nn.Parameter(torch.tensor(start)))

        def forward(self, x):
            return (self.a + self.b1 * x[:, 0] + self.b2 * x[:, 1]).unsqueeze(-1)
''')


@pytest.fixture
def user_files(tmp_path, monkeypatch):
    """A two-column table, and a module with the user's own nn.Module on the import path
    (of this process and of the task subprocesses)."""
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({"dose": rng.uniform(0, 4, 60), "age": rng.uniform(20, 70, 60)})
    frame["response"] = 1.5 + 0.8 * frame["dose"] - 0.03 * frame["age"] + rng.normal(0, 0.5, 60)
    frame.to_csv(tmp_path / "trial.csv", index=False)
    (tmp_path / "user_models.py").write_text(PLANE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    return tmp_path, frame


def user_args(tmp_path, *extra):
    return (
        "experiment=user_data",
        f"data.path={tmp_path / 'trial.csv'}",
        "data.x=[dose,age]",
        "data.y=response",
        *extra,
    )


CUSTOM = ("~model", "+model={_target_: user_models.Plane}")


@pytest.mark.e2e
@pytest.mark.slow
def test_two_column_csv_custom_module_bootstrap(user_files):
    import statsmodels.api as sm

    tmp_path, frame = user_files
    out = tmp_path / "sweep"
    _, est = run_sweep(
        out,
        *user_args(
            tmp_path, *CUSTOM, "sweep=bootstrap", "sweep.resamples=12", "launcher=local", "launcher.runs_per_task=7"
        ),
    )
    # the reference: statsmodels OLS on x standardised as data.standardize documents (mean, sd ddof 0)
    x = frame[["dose", "age"]]
    fit = sm.OLS(frame["response"], sm.add_constant((x - x.mean()) / x.std(ddof=0))).fit()
    original = est[est["resample"] == 0].iloc[0]
    np.testing.assert_allclose(original[["a", "b1", "b2"]].to_numpy(dtype=float), fit.params.to_numpy(), atol=1e-3)
    assert len(est) == 13 and (est["status"] == "ok").all() and est["b1"].nunique() == 13
    ci = pd.read_parquet(out / "intervals.parquet").query("method == 'percentile'").set_index("parameter")
    assert list(ci.index) == ["a", "b1", "b2"] and (ci["n_used"] == 12).all()
    assert (ci["lower"] < ci["estimate"]).all() and (ci["estimate"] < ci["upper"]).all()
    ratio = ci["se"].to_numpy() / fit.bse.to_numpy()
    assert ((ratio > 0.4) & (ratio < 2.5)).all(), ratio  # 12 draws: only the order of magnitude


def test_features_model_matches_least_squares_on_two_columns(user_files, out_dir):
    tmp_path, frame = user_files
    _, est = run_sweep(out_dir, *user_args(tmp_path, "model.degree=2", "sweep=single", "launcher=debug"))
    row = est.iloc[0]
    # w1 dose, w2 dose^2, w3 age, w4 age^2, b, on standardised x (mean, sd ddof 0)
    z = (frame[["dose", "age"]] - frame[["dose", "age"]].mean()) / frame[["dose", "age"]].std(ddof=0)
    design = np.c_[z["dose"], z["dose"] ** 2, z["age"], z["age"] ** 2, np.ones(len(frame))]
    coef, *_ = np.linalg.lstsq(design, frame["response"], rcond=None)
    names = ["w1", "w2", "w3", "w4", "b"]
    np.testing.assert_allclose(row[[f"ols_{n}" for n in names]].to_numpy(dtype=float), coef, rtol=1e-6)
    np.testing.assert_allclose(row[names].to_numpy(dtype=float), coef, atol=1e-3)
    assert row["status"] == "ok"


def test_features_model_columns_and_names():
    x = torch.tensor([[-1.0, 2.0], [0.25, 3.0], [1.5, -1.0]])
    model = Features(inputs=2, degree=2, knots=[0.5])
    expected = torch.stack(
        [
            x[:, 0],
            x[:, 0] ** 2,
            x[:, 1],
            x[:, 1] ** 2,
            (x[:, 0] - 0.5).clamp_min(0),
            (x[:, 1] - 0.5).clamp_min(0),
            torch.ones(3),
        ],
        dim=1,
    )
    torch.testing.assert_close(model.features(x), expected)
    assert model.names == ("w1", "w2", "w3", "w4", "w5", "w6", "b")
    assert Features(intercept=False).names == ("w",)
    assert Features(degree=0, knots=[0.0, 0.5]).names == ("w1", "w2", "b")
    assert model(x).shape == (3, 1)


def test_rows_shift_scale_and_split(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"year": [1880, 1900, 1950, 2000, 2023], "v": [1.0, 2.0, 3.0, 4.0, 5.0]}).to_csv(path, index=False)
    base = {"path": str(path), "test_path": None, "x": "year", "y": "v", "generate": None}
    data = load_dataset({**base, "rows": "year <= 2022", "x_shift": 1880, "x_scale": 100})
    np.testing.assert_allclose(data.x[:, 0], [0.0, 0.2, 0.7, 1.2])
    assert (data.x_shift, data.x_scale) == ((1880.0,), (100.0,))
    std = load_dataset({**base, "standardize": True})
    assert std.x.mean() == pytest.approx(0) and std.x.std() == pytest.approx(1)
    split = load_dataset({**base, "test_share": 0.4, "split_seed": 3})
    keep, held = split_rows(5, 0.4, 3)
    assert len(held) == 2 and sorted([*keep, *held]) == list(range(5))
    np.testing.assert_array_equal(split.y_test[:, 0], np.array([1.0, 2.0, 3.0, 4.0, 5.0])[held])
    np.testing.assert_array_equal(split.y[:, 0], np.array([1.0, 2.0, 3.0, 4.0, 5.0])[keep])


def test_parquet_file_reads_like_the_csv(user_files):
    tmp_path, frame = user_files
    frame.to_parquet(tmp_path / "trial.parquet")
    base = {"test_path": None, "x": ["dose", "age"], "y": "response", "generate": None}
    from_csv = load_dataset({**base, "path": str(tmp_path / "trial.csv")})
    from_parquet = load_dataset({**base, "path": str(tmp_path / "trial.parquet")})
    np.testing.assert_allclose(from_parquet.x, frame[["dose", "age"]].to_numpy())
    np.testing.assert_allclose(from_parquet.x, from_csv.x, rtol=1e-15)
    assert from_parquet.x_names == ("dose", "age") and from_parquet.y.shape == (60, 1)


def test_test_share_gives_a_test_loss_and_standardises_on_training_rows_only(tmp_path, out_dir):
    path = tmp_path / "t.csv"
    rng = np.random.default_rng(0)
    x = rng.normal(5, 2, 40)
    pd.DataFrame({"x": x, "y": 1 + x + rng.normal(0, 0.1, 40)}).to_csv(path, index=False)
    cfg = make_config(out_dir, "experiment=user_data", f"data.path={path}", "data.test_share=0.25")
    data = load_dataset(cfg["data"])
    keep, _ = split_rows(40, 0.25, 0)
    assert data.x_shift[0] == pytest.approx(x[keep].mean()) and data.x_scale[0] == pytest.approx(x[keep].std())
    _, est = run_sweep(
        out_dir, "experiment=user_data", f"data.path={path}", "data.test_share=0.25", "sweep=single", "launcher=debug"
    )
    assert 0 < est["test_loss"].iloc[0] < 0.1


# --- the README section "Your own data and model", run as written ------------------------


def readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def code_blocks(section: str) -> list[tuple[str, str]]:
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)


@pytest.mark.e2e
@pytest.mark.slow
def test_readme_walkthrough_runs_as_written(tmp_path):
    """Each python block runs (or, if it starts with `# name.py`, is saved as that file) and
    each bash block runs in bash, with `pipeline-sweep` meaning this checkout's entry point."""
    blocks = code_blocks(readme_section("Your own data and model"))
    assert [lang for lang, _ in blocks].count("bash") >= 2
    shim = (
        'pipeline-sweep() { PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" '
        'python -c "from pipeline.cli import sweep_main; sweep_main()" "$@" launcher.progress=false; }\n'
    )
    env = {**os.environ, "REPO": str(REPO), "PYTHONPATH": str(REPO)}
    outputs = []
    for lang, code in blocks:
        first = code.splitlines()[0]
        if lang == "python" and re.fullmatch(r"# [\w.]+\.py", first):
            (tmp_path / first[2:]).write_text(code)
            continue
        cmd = ["bash", "-ec", shim + code] if lang == "bash" else [sys.executable, "-c", code]
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{lang} block failed:\n{code}\n{proc.stderr[-3000:]}"
        outputs.append(proc.stdout)
    ci = pd.read_parquet(tmp_path / "results" / "plants" / "intervals.parquet")
    assert list(ci["units"].unique()) == ["raw", "fitted"]  # x standardised: raw units first, then per sd
    ci = ci[(ci["method"] == "percentile") & (ci["units"] == "raw")].set_index("parameter")
    assert list(ci.index) == ["w1", "w2", "b"] and (ci["n_used"] == 30).all()
    assert ci.loc["w1", "lower"] > 0 and ci.loc["w2", "upper"] < 0  # light helps, water hurts, as simulated
    (fit,) = pd.read_parquet(tmp_path / "results" / "plants-interaction" / "estimates.parquet").itertuples()
    assert fit.status == "ok" and fit.w_both > 0  # simulated with a positive interaction
    printed = "".join(outputs)
    assert "n_used" in printed and "w_both" in printed  # the tables the python blocks print


# --- bad user input: one clear message, before any task ----------------------------------


def problems(out_dir, *overrides) -> str:
    with pytest.raises(ConfigError) as err:
        validate(make_config(out_dir, *overrides))
    return str(err.value)


def test_missing_file_names_key_and_path(out_dir):
    msg = problems(out_dir, "experiment=user_data", "data.path=/nowhere/trial.csv")
    assert "`data.path`" in msg and "/nowhere/trial.csv" in msg and "not found" in msg


def test_missing_one_of_two_x_columns(user_files, out_dir):
    tmp_path, _ = user_files
    msg = problems(out_dir, *user_args(tmp_path), "data.x=[dose,weight]")
    assert "`data.x`" in msg and "'weight'" in msg and "columns: dose, age, response" in msg


def test_text_and_nan_in_the_second_x_column(tmp_path, out_dir):
    path = tmp_path / "bad.csv"
    path.write_text("dose,age,response\n1,30,2\n2,forty,3\n3,,4\n4,50,5\n5,nan,6\n")
    msg = problems(out_dir, "experiment=user_data", f"data.path={path}", "data.x=[dose,age]", "data.y=response")
    assert "'age'" in msg and "non-numeric value 'forty'" in msg and "row 2" in msg
    path.write_text("dose,age,response\n1,30,2\n2,40,3\n3,,4\n4,50,5\n5,nan,6\n")
    msg = problems(out_dir, "experiment=user_data", f"data.path={path}", "data.x=[dose,age]", "data.y=response")
    assert "'age'" in msg and "missing or non-finite" in msg and "row 3" in msg and "2 such rows" in msg


def test_row_numbers_count_the_file_after_a_row_filter(tmp_path, out_dir):
    path = tmp_path / "bad.csv"
    path.write_text("year,v\n1,1\n2,2\n3,3\n4,oops\n")
    msg = problems(
        out_dir, "experiment=user_data", f"data.path={path}", "data.x=year", "data.y=v", "data.rows='year >= 2'"
    )
    assert "'oops'" in msg and "row 4" in msg


@pytest.mark.parametrize(
    "override, key",
    [
        ("model._target_=user_models.NoSuchNet", "`model._target_`"),
        ("loss._target_=torch.nn.NoSuchLoss", "`loss._target_`"),
        ("optim._target_=torch.optim.NoSuchOptim", "`optim._target_`"),
    ],
)
def test_unknown_target_names_its_key(user_files, out_dir, override, key):
    tmp_path, _ = user_files
    msg = problems(out_dir, *user_args(tmp_path), override)
    assert key in msg and override.split("=")[1] in msg


def test_model_output_shape_must_match_y(user_files, out_dir):
    tmp_path, _ = user_files
    msg = problems(
        out_dir, *user_args(tmp_path), "~model", "+model={_target_: torch.nn.Linear, in_features: 2, out_features: 3}"
    )
    assert "`model`: output shape (2, 3) does not match y ('response',)" in msg


def test_features_inputs_must_match_x_columns(user_files, out_dir):
    tmp_path, _ = user_files
    msg = problems(out_dir, *user_args(tmp_path), "model.inputs=1")
    assert "`model`" in msg and "Features(inputs=1) got 2 x column(s)" in msg


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["+optim.momentm=0.9"], ["`optim` (torch.optim.SGD) cannot be built", "momentm"]),
        (["+loss.reduction=none"], ["`loss` (torch.nn.MSELoss) must give one number", "(2, 1)"]),
        (["data.test_share=1.5"], ["`data.test_share` must be between 0 and 1", "1.5"]),
        (["data.x_scale=[1,0]", "data.standardize=false"], ["`data.x_scale` must not be 0"]),
        (["data.x_shift=[1,2,3]"], ["`data.x_shift`", "one per x column (2)"]),
        (["data.x_shift=5"], ["`data.standardize` is true and `data.x_shift`"]),
        (["data.rows='dose >'"], ["`data.rows`: cannot evaluate 'dose >'"]),
        (["data.rows='dose + 1'"], ["`data.rows` must be a condition"]),
        (["data.rows='dose > 100'"], ["has no rows left by `data.rows` 'dose > 100'"]),
        (["data.y=dose"], ["`data.x` and `data.y` share column(s) 'dose'"]),
    ],
)
def test_bad_data_and_training_options(user_files, out_dir, overrides, expected):
    tmp_path, _ = user_files
    msg = problems(out_dir, *user_args(tmp_path), *overrides)
    for text in expected:
        assert text in msg


def test_test_share_and_test_file_conflict_and_constant_column(tmp_path, out_dir):
    path = tmp_path / "c.csv"
    path.write_text("x,y\n1,1\n1,2\n1,3\n")
    msg = problems(
        out_dir, "experiment=user_data", f"data.path={path}", f"data.test_path={path}", "data.test_share=0.5"
    )
    assert "`data.test_share` (0.5) is set but the data already has test rows" in msg
    assert "`data.standardize`: x column 'x' is constant (1)" in problems(
        out_dir, "experiment=user_data", f"data.path={path}"
    )


def test_cli_bad_user_input_exits_2_before_any_task(user_files):
    tmp_path, _ = user_files
    out = tmp_path / "sweep"
    proc = run_cli(
        "sweep",
        *user_args(
            tmp_path,
            "~model",
            "+model={_target_: torch.nn.Linear, in_features: 2, out_features: 3}",
            "data.x=[dose,agee]",
        ),
        f"out_dir={out}",
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "'agee'" in proc.stderr
    assert not (out / "parts").exists() and not (out / "logs").exists()
