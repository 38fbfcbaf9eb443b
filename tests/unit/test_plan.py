import numpy as np

from pipeline.core.resampling import resample_rows
from pipeline.data.load import load_dataset
from pipeline.stats.block_length import draw_settings
from pipeline.sweep.plan import chunk, plan
from tests.conftest import make_config


def plan_of(cfg):
    """The plan of a config whose block length, if any, is a number (auto needs `prepare`)."""
    sweep = cfg["sweep"]
    settings = draw_settings(sweep["scheme"], sweep["block_length"], sweep["wild_weights"], None)
    return plan(cfg, load_dataset(cfg["data"]).digest(), draw_settings=settings)


def test_run_ids_are_stable_and_distinct(tmp_path):
    cfg = make_config(
        tmp_path, "experiment=linear_synthetic", "sweep=bootstrap", "sweep.resamples=5", "sweep.lr=[0.1,0.2]"
    )
    runs = plan_of(cfg)
    assert len(runs) == 2 * 6
    assert len({r.run_id for r in runs}) == len(runs)
    again = plan_of(
        make_config(
            tmp_path / "elsewhere",
            "experiment=linear_synthetic",
            "sweep=bootstrap",
            "sweep.resamples=5",
            "sweep.lr=[0.1,0.2]",
            "launcher=debug",
            "launcher.runs_per_task=3",
        )
    )
    assert [r.run_id for r in runs] == [r.run_id for r in again]


def test_run_ids_change_with_settings_that_change_numbers(tmp_path):
    def ids(*overrides):
        runs = plan_of(make_config(tmp_path, "experiment=linear_synthetic", "sweep.resamples=3", *overrides))
        return {r.run_id for r in runs}, {r.run_id for r in runs if r.resample == 0}

    base, base_original = ids()
    for override in ("train.epochs=999", "optim.lr=0.2", "init=[0.0,0.0]", "train.dtype=float64"):
        assert base.isdisjoint(ids(override)[0]), override
    # the seed draws the bootstrap rows: it changes their runs, not the original-data run
    seeded, seeded_original = ids("sweep.seed=1")
    assert seeded_original == base_original
    assert len(seeded & base) == 1
    # how a run is computed (engine, device, launcher) is not part of its identity
    assert ids("train.engine=reference", "launcher=debug", "launcher.runs_per_task=1")[0] == base
    # the draw settings name the draws of the schemes that read them, and no other run
    assert ids("sweep.block_length=7", "sweep.wild_weights=mammen")[0] == base
    blocks, blocks_original = ids("sweep.scheme=circular_block", "sweep.block_length=4")
    assert blocks_original == base_original and len(blocks & base) == 1
    longer = ids("sweep.scheme=circular_block", "sweep.block_length=5")[0]
    assert len(longer & blocks) == 1  # resample 0 only
    assert ids("sweep.scheme=circular_block", "sweep.block_length=4", "sweep.wild_weights=mammen")[0] == blocks
    rademacher, mammen = ids("sweep.scheme=wild")[0], ids("sweep.scheme=wild", "sweep.wild_weights=mammen")[0]
    assert len(rademacher & mammen) == 1 and len(rademacher & base) == 1


def test_auto_block_length_is_resolved_once_and_named_in_the_ids(tmp_path):
    """`auto` is Politis-White on the original fit's residuals (`SweepMeta.block_length`); the
    plan is the one the resolved number gives."""
    from pipeline.launch.prepare import prepare

    auto = prepare(make_config(tmp_path, "experiment=gistemp_line", "sweep.resamples=3", "sweep.scheme=moving_block"))
    assert auto.meta.draw_settings() == {"block_length": 18}  # GISTEMP's residuals around the line
    fixed = make_config(
        tmp_path, "experiment=gistemp_line", "sweep.resamples=3", "sweep.scheme=moving_block", "sweep.block_length=18"
    )
    assert [r.run_id for r in auto.runs] == [r.run_id for r in prepare(fixed).runs]


def test_resample_rows_depend_on_seed_and_index_only():
    assert np.array_equal(resample_rows(50, 0, 0), np.arange(50))
    a, b = resample_rows(50, 7, 3), resample_rows(50, 7, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, resample_rows(50, 7, 4))
    assert not np.array_equal(a, resample_rows(50, 8, 3))
    assert a.min() >= 0 and a.max() < 50


def test_chunking_keeps_plan_order(tmp_path):
    runs = plan_of(make_config(tmp_path, "experiment=linear_synthetic", "sweep.resamples=9"))
    tasks = chunk(runs, 4)
    assert [len(t.runs) for t in tasks] == [4, 4, 2]
    assert [r for t in tasks for r in t.runs] == runs
    assert len({t.part_name for t in tasks}) == 3


def test_run_ids_follow_the_data_values_not_their_path(tmp_path):
    from tests.conftest import REPO

    train = (REPO / "data" / "tdm" / "train.csv").read_text()
    (tmp_path / "a.csv").write_text(train)
    (tmp_path / "b.csv").write_text(train.rstrip("\n").rsplit("\n", 1)[0] + "\n")  # last row dropped

    def ids(path):
        cfg = make_config(tmp_path / "s", f"data.path={path}", "data.test_path=null")
        return [r.run_id for r in plan_of(cfg)]

    assert ids(REPO / "data" / "tdm" / "train.csv") == ids(tmp_path / "a.csv")
    assert set(ids(tmp_path / "a.csv")).isdisjoint(ids(tmp_path / "b.csv"))  # one row fewer


def test_repeated_initial_vectors_are_one_grid_point(tmp_path):
    runs = plan_of(make_config(tmp_path, "sweep=init_grid", "init=[0.0,0.0,0.0]"))
    assert len(runs) == 1 and runs[0].init == (0.0, 0.0, 0.0)
