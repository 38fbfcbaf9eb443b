import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from pipeline import store
from pipeline.results.aggregate import aggregate
from tests.conftest import run_sweep


def test_atomic_path_leaves_nothing_when_writing_fails(tmp_path):
    target = tmp_path / "parts" / "part-x.parquet"
    with pytest.raises(RuntimeError):
        with store.atomic_path(target) as tmp:
            tmp.write_text("half a file")
            raise RuntimeError("killed mid-write")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_aggregate_reads_only_complete_parts(out_dir):
    run_sweep(
        out_dir,
        "experiment=linear_synthetic",
        "sweep=bootstrap",
        "sweep.resamples=2",
        "train.epochs=20",
        "launcher=debug",
        "launcher.runs_per_task=1",
    )
    # a task killed mid-write leaves a dot-named temporary file behind
    (out_dir / "parts" / ".part-00009-abc.parquet.x1y2.tmp").write_bytes(b"PAR1 truncated")
    (out_dir / "parts" / sorted(p.name for p in (out_dir / "parts").glob("part-*"))[0]).unlink()
    report = aggregate(out_dir)
    assert (report.n_planned, report.n_found) == (3, 2) and len(report.missing_run_ids) == 1
    est = pd.read_parquet(out_dir / "estimates.parquet")
    assert len(est) == 2 and report.missing_run_ids[0] not in set(est["run_id"])
    assert "1 missing" in report.summary()


def test_parts_share_one_schema(out_dir):
    """A part of diverged runs only (NaN everywhere, no curve tail) and a part of healthy
    ones have the same Arrow schema, the one `store.part_schema` declares, so pyarrow
    reads the folder as one dataset."""
    import pyarrow.dataset as ds

    run_sweep(
        out_dir,
        "experiment=tdm_quadratic",
        "sweep=single",
        "sweep.lr=[3e-4,1e6]",
        "train.epochs=50",
        "launcher=debug",
        "launcher.runs_per_task=1",
    )
    meta = store.read_meta(out_dir)
    expected = store.schema_of(meta)
    assert meta.lr_bounds and {"lr_max_stable", "epochs_to_tol"} <= set(expected.names)  # SGD on least squares
    parts = sorted((out_dir / "parts").glob("part-*.parquet"))
    statuses = [set(pd.read_parquet(p)["status"]) for p in parts]
    assert sorted(map(sorted, statuses)) == [["diverged"], ["not_converged"]]
    for part in parts:
        assert pq.read_schema(part).remove_metadata().equals(expected), part
    assert ds.dataset(parts, format="parquet").to_table().num_rows == 2
    curves = pd.read_parquet(out_dir / "curves.parquet")
    assert list(curves.columns) == ["run_id", "epoch", "loss"]
    assert str(curves["epoch"].dtype) == "int64"


@pytest.mark.parametrize("family", ["000 tdm quadratic", "002 mlp, adam"])
def test_a_batch_is_written_as_its_result_rows(family):
    """A fast engine's columnar batch makes the very table its runs' `result_row`s make
    (diverged runs, NaN parameters, curves cut short, jackknife and residual runs included)."""
    from pipeline.core.meta import SweepMeta
    from pipeline.core.runs import RunBatch
    from pipeline.train.engines import train_gram
    from pipeline.train.engines.batched import train_batched
    from pipeline.train.problem import resample_data, training_data
    from tests.integration.test_batched import FAMILIES, chunk_of, family_problem, train_cfg

    fam = FAMILIES[family]
    problem = family_problem(fam, "float32")
    runs = [r for r in chunk_of(fam) if r.resample >= 0]  # one row count: one batch
    train = train_gram if "gram" in fam.engines else train_batched
    batch = train(problem, runs, train_cfg(engine="auto"))
    assert isinstance(batch, RunBatch) and len(batch) == len(runs)
    assert {r.status for r in batch} >= {"diverged"}
    x, y = training_data(problem, runs)
    for i, run in enumerate(runs):  # one gather for the chunk: each run's own rows
        rx, ry = resample_data(problem, run)
        assert torch.equal(x[i], rx) and torch.equal(y[i], ry)
    meta = SweepMeta("e", problem.parts.param_names, problem.parts.closed_form, "d", "s", problem.x.shape[0])
    columns = store.batch_table(batch, meta, 3)
    rows = store.rows_table([store.result_row(r, "e", meta.param_names, 3) for r in batch], meta)
    assert columns.schema.equals(rows.schema)
    assert columns.to_pandas().equals(rows.to_pandas())
    assert store.results_table(list(batch), meta, 3).to_pandas().equals(rows.to_pandas())
