"""A run's numbers depend on the run alone (issue 22, item 2; issue 24): the same run id gives
bit-identical parameters, losses, curves and status whatever the grid it is planned in, the
chunking, the batch it shares and its position there, on CPU, for every engine:
the batched engine (toy MLP, Adam), the Gram engine (tdm_quadratic) and the reference loop.
tests/e2e/test_batch_invariance_sweeps.py varies runs_per_task and the launcher."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.settings import TrainSettings
from pipeline.data.load import load_dataset
from pipeline.sweep.plan import plan
from pipeline.train.engines import train_chunk
from tests.conftest import make_config, problem_from

pytestmark = pytest.mark.slow  # three engines in three grids: the full suite's, not the fast tier's

CASES = {
    "batched": ("experiment=toy_mlp", "train.epochs=60", "train.log_every=20"),
    "gram": ("experiment=tdm_quadratic", "train.epochs=300", "train.log_every=50"),
    "reference": ("experiment=linear_synthetic", "train.engine=reference", "train.epochs=40", "train.log_every=10"),
}
# three grids of different size and company; lr A at another place in each
GRIDS = (
    ("sweep.lr=[A]", "sweep.resamples=3"),
    ("sweep.lr=[B,A]", "sweep.resamples=9"),
    ("sweep.lr=[C,A,B]", "sweep.resamples=17", "sweep.jackknife=true"),
)
LRS = {"batched": (0.01, 0.03, 0.1), "gram": (0.03, 0.003, 0.075), "reference": (0.1, 0.5, 3.0)}


def trained(engine: str, grid: tuple[str, ...], chunks: int) -> dict[str, tuple]:
    """Every run of the grid, trained in `chunks` chunks of the plan (the last first), by run id."""
    a, b, c = LRS[engine]
    overrides = [o.replace("A", str(a)).replace("B", str(b)).replace("C", str(c)) for o in grid]
    cfg = make_config(Path("/tmp/unused"), *CASES[engine], "sweep=bootstrap", *overrides)
    dataset = load_dataset(cfg["data"])
    problem, settings = problem_from(cfg, dataset), TrainSettings.from_dict(cfg["train"])
    runs = plan(cfg, dataset.digest(), dataset.n_rows)
    size = -(-len(runs) // chunks)
    pieces = [runs[i : i + size] for i in range(0, len(runs), size)][::-1]
    out = {}
    for piece in pieces:
        for r in train_chunk(problem, piece, settings):
            out[r.run.run_id] = (r.status, r.epochs, r.params, r.final_loss, r.test_loss, r.grad_norm)
            out[r.run.run_id] += (r.curve_epoch, r.curve_loss, r.engine)
    return out


@pytest.mark.parametrize("engine", CASES)
def test_a_run_has_the_same_bits_in_any_grid_chunking_and_company(engine):
    small = trained(engine, GRIDS[0], 1)
    middle = trained(engine, GRIDS[1], 2)
    large = trained(engine, GRIDS[2], 3)
    assert len(small) < len(middle) < len(large)
    assert {v[-1] for v in small.values()} == {engine}
    shared = set(small) & set(middle) & set(large)
    assert len(shared) == len(small) == 4  # resample 0 and draws 1-3 at lr A
    for run_id in shared:  # repr: every float to the bit (NaN as NaN)
        assert repr(small[run_id]) == repr(middle[run_id]) == repr(large[run_id]), run_id
    both = set(middle) & set(large)
    assert len(both) == len(middle) and all(repr(middle[r]) == repr(large[r]) for r in both)
