"""Issue 3 acceptance: whole sweeps through the debug and local launchers."""

import numpy as np
import pandas as pd
import pytest

from tests.conftest import run_cli, run_sweep

pytestmark = pytest.mark.e2e

BOOT = ("experiment=linear_synthetic", "sweep=bootstrap", "sweep.resamples=7")


def test_linear_synthetic_reproduces_seed_004(out_dir):
    _, est = run_sweep(out_dir, "experiment=linear_synthetic", "sweep=single", "launcher=debug")
    row = est.iloc[0]
    assert row["b"] == pytest.approx(1.0235, abs=1e-4)
    assert row["w"] == pytest.approx(1.9690, abs=1e-4)
    assert row["status"] == "ok"
    assert {"run_id", "lr", "resample", "status", "final_loss"} <= set(est.columns)


def test_tdm_quadratic_seed_settings_fall_but_stop_short(out_dir):
    _, est = run_sweep(out_dir, "experiment=tdm_quadratic", "sweep=single", "launcher=debug")
    row = est.iloc[0]
    curve = pd.read_parquet(out_dir / "curves.parquet")
    assert list(curve["epoch"][:3]) == [0, 100, 200] and curve["epoch"].iloc[-1] == 10000
    assert (np.diff(curve["loss"]) < 0).all(), "the logged MSE must fall at every logged epoch"
    gaps = [abs(row[p] - row[f"ols_{p}"]) for p in ("beta0", "beta1", "beta2")]
    assert row["gap_to_ols"] == pytest.approx(max(gaps))
    assert row["gap_to_ols"] > 1e-2  # the seed's lr and epochs do not reach the optimum here
    assert row["grad_norm"] > 1e-3 and row["status"] == "not_converged"
    assert row["test_loss"] > 0


def test_tdm_quadratic_larger_stable_lr_reaches_closed_form(out_dir):
    _, est = run_sweep(out_dir, "experiment=tdm_quadratic", "sweep=single", "launcher=debug", "optim.lr=0.03")
    row = est.iloc[0]
    for p in ("beta0", "beta1", "beta2"):
        assert row[p] == pytest.approx(row[f"ols_{p}"], abs=1e-3)
    assert row["status"] == "ok"


def _by_resample(est):
    return est.set_index("resample")[["run_id", "b", "w", "final_loss", "status"]].sort_index()


def test_chunk_size_and_launcher_do_not_change_estimates(tmp_path):
    _, one = run_sweep(tmp_path / "a", *BOOT, "launcher=debug", "launcher.runs_per_task=1")
    report, fifty = run_sweep(tmp_path / "b", *BOOT, "launcher=local", "launcher.runs_per_task=50")
    assert report.n_tasks == 1
    _, local3 = run_sweep(tmp_path / "c", *BOOT, "launcher=local", "launcher.runs_per_task=3")
    assert len(one) == 8 and one["resample"].tolist() == list(range(8))
    pd.testing.assert_frame_equal(_by_resample(one), _by_resample(fifty))
    pd.testing.assert_frame_equal(_by_resample(one), _by_resample(local3))
    assert one["b"].nunique() == 8  # the resamples really differ
    ci = pd.read_parquet(tmp_path / "a" / "intervals.parquet")
    assert set(ci["parameter"]) == {"b", "w"}
    assert (ci["n_used"] == 7).all() and (ci["lower"] < ci["estimate"]).all() and (ci["estimate"] < ci["upper"]).all()


def test_relaunch_skips_finished_runs_and_fills_a_deleted_part(out_dir):
    args = (*BOOT, "launcher=debug", "launcher.runs_per_task=3")
    first, est = run_sweep(out_dir, *args)
    assert (first.n_skipped, first.n_tasks) == (0, 3)
    again, _ = run_sweep(out_dir, *args)
    assert (again.n_skipped, again.n_tasks) == (8, 0)
    parts = sorted((out_dir / "parts").glob("part-*.parquet"))
    lost = pd.read_parquet(parts[1])
    parts[1].unlink()
    refill, est2 = run_sweep(out_dir, *args)
    assert refill.n_skipped == 8 - len(lost) and refill.n_tasks == 1
    (new_part,) = set((out_dir / "parts").glob("part-*.parquet")) - set(parts)
    assert sorted(pd.read_parquet(new_part)["run_id"]) == sorted(lost["run_id"])
    pd.testing.assert_frame_equal(_by_resample(est), _by_resample(est2))


def test_divergent_lr_is_recorded_and_spares_its_task_mates(tmp_path):
    common = ("experiment=tdm_quadratic", "sweep=single", "train.epochs=2000", "launcher=debug")
    _, both = run_sweep(tmp_path / "both", *common, "sweep.lr=[3e-4,10]", "launcher.runs_per_task=50")
    _, alone = run_sweep(tmp_path / "alone", *common, "sweep.lr=[3e-4]")
    diverged = both[both["lr"] == 10]
    assert diverged["status"].tolist() == ["diverged"]
    assert diverged["epochs"].iloc[0] < 2000
    kept = both[both["lr"] == 3e-4].iloc[0]
    for col in ("beta0", "beta1", "beta2", "final_loss", "status"):
        assert kept[col] == alone.iloc[0][col]


def test_cli_runs_a_sweep_and_saves_its_config(out_dir):
    proc = run_cli(
        "sweep",
        "experiment=linear_synthetic",
        "sweep=bootstrap",
        "sweep.resamples=3",
        "train.epochs=500",
        "launcher=local",
        "launcher.runs_per_task=2",
        f"out_dir={out_dir}",
    )
    assert proc.returncode == 0, proc.stderr
    assert "4 of 4 runs have results" in proc.stdout
    assert (out_dir / ".hydra" / "config.yaml").is_file()
    assert "epochs: 500" in (out_dir / "config.yaml").read_text()
    est = pd.read_parquet(out_dir / "estimates.parquet")
    assert len(est) == 4 and set(est["resample"]) == {0, 1, 2, 3}
    (out_dir / "intervals.parquet").unlink()
    agg = run_cli("aggregate", f"out_dir={out_dir}")
    assert agg.returncode == 0, agg.stderr
    ci = pd.read_parquet(out_dir / "intervals.parquet")  # one row per parameter and method that applies
    assert len(ci) == 2 * 6 and set(ci["method"]) == {"percentile", "basic", "normal", "t", "hc3", "hac"}


def test_cli_hydra_flags_work():
    proc = run_cli("sweep", "--cfg", "job", "experiment=linear_synthetic", "sweep=lr_grid", "--resolve")
    assert proc.returncode == 0, proc.stderr
    assert "name: lr_grid" in proc.stdout and "- 0.01" in proc.stdout
    helped = run_cli("sweep", "--help")
    listed = next(line for line in helped.stdout.splitlines() if line.startswith("experiment: "))
    assert {"linear_synthetic", "tdm_quadratic"} <= set(listed.split(": ", 1)[1].split(", "))
