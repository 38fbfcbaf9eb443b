"""Raw-unit coefficients: the conversion matrix against statsmodels on the raw design,
against the identity of predictions, and `FeatureSpec` against the real models.

statsmodels fits the raw-unit design directly (the same feature map on raw x, knots
moved), an independent route to the numbers `raw_unit_matrix` derives from a fit on
transformed x. The model cross-check builds `pipeline.models.Features`/`Polynomial`
with torch, so a change to their feature order fails here, not in a user's table.
"""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
import torch

from pipeline.models import Features, Polynomial
from pipeline.stats.raw_units import (
    FeatureSpec,
    feature_matrix,
    raw_covariance,
    raw_std_errors,
    raw_unit_matrix,
    raw_unit_problem,
    to_raw,
)

RTOL = 1e-9


def _two_column_data(seed: int = 7, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Raw x with a mean far from 0 and a sd far from 1 in each column, so the
    conversion has real work; y from a smooth function plus noise."""
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.normal(3.0, 2.0, n), rng.uniform(-7.0, -1.0, n)])
    y = 1.5 + 0.8 * x[:, 0] - 0.3 * x[:, 0] ** 2 + 0.05 * x[:, 0] ** 3 + 2.0 * np.sin(x[:, 1]) + rng.normal(0, 0.3, n)
    return x, y


def _fit_transformed(spec: FeatureSpec, z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(theta, classical covariance) by numpy lstsq on the transformed design."""
    design = feature_matrix(spec, z)
    theta, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ theta
    s2 = resid @ resid / (len(y) - design.shape[1])
    return theta, s2 * np.linalg.inv(design.T @ design)


@pytest.mark.parametrize(
    "spec",
    [
        FeatureSpec(inputs=2, degree=2, knots=(0.5,), intercept=True),
        FeatureSpec.polynomial(3),
    ],
    ids=["features-2x-deg2-knot", "polynomial3"],
)
def test_raw_units_match_statsmodels_on_the_raw_design(spec):
    x, y = _two_column_data()
    shift, scale = x.mean(axis=0), x.std(axis=0)  # as data.standardize does (ddof 0)
    theta, cov = _fit_transformed(spec, (x - shift) / scale, y)
    raw = raw_unit_matrix(spec, shift, scale)
    assert raw is not None
    reference = sm.OLS(y, raw.design(x)).fit()
    np.testing.assert_allclose(to_raw(theta, raw.matrix), reference.params, rtol=RTOL)
    np.testing.assert_allclose(raw_std_errors(raw.matrix, cov), reference.bse, rtol=RTOL)
    np.testing.assert_allclose(raw_covariance(raw.matrix, cov), reference.cov_params(), rtol=1e-8, atol=1e-14)


def test_knots_move_to_shift_plus_scale_times_knot():
    raw = raw_unit_matrix(FeatureSpec(inputs=2, degree=1, knots=(0.0, 0.5)), [10.0, -2.0], [4.0, 0.5])
    assert raw.knots == ((10.0, 12.0), (-2.0, -1.75))
    assert "12" in raw.note and "-1.75" in raw.note and "shift + scale * k" in raw.note


SPECS = [
    FeatureSpec(),
    FeatureSpec(intercept=False),
    FeatureSpec(inputs=2, degree=3, knots=(-0.5, 0.25)),
    FeatureSpec(inputs=1, degree=0, knots=(0.0, 0.5)),
    FeatureSpec(inputs=2, degree=0, knots=(1.0,), intercept=False),
    FeatureSpec.polynomial(0),
    FeatureSpec.polynomial(4),
]


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("negative", [False, True], ids=["scale>0", "scale<0"])
def test_raw_design_predicts_what_the_transformed_fit_predicts(spec, negative):
    rng = np.random.default_rng(3)
    x = rng.normal([2.0, -1.0], [3.0, 0.7], size=(50, 2))[:, : 1 if spec.intercept_first else spec.inputs]
    shift = 0.0 if not spec.intercept else x.mean(axis=0)
    scale = x.std(axis=0) * (-1 if negative else 1)
    raw = raw_unit_matrix(spec, shift, scale)
    if raw is None:  # only a flipped hinge can need what the model lacks
        assert negative and spec.knots and (not spec.intercept or spec.degree == 0), raw_unit_problem(
            spec, shift, scale
        )
        return
    theta = rng.normal(size=(5, spec.n_params))
    z = (x - shift) / scale
    np.testing.assert_allclose(
        raw.design(x) @ to_raw(theta, raw.matrix).T, feature_matrix(spec, z) @ theta.T, rtol=1e-10, atol=1e-10
    )


def test_shift_without_an_intercept_is_refused_with_a_reason():
    spec = FeatureSpec(inputs=1, degree=2, intercept=False)
    assert raw_unit_matrix(spec, 5.0, 2.0) is None
    assert "constant" in raw_unit_problem(spec, 5.0, 2.0)
    assert raw_unit_matrix(spec, 0.0, 2.0) is not None  # scale only: no constant needed
    hinges_only = FeatureSpec(inputs=1, degree=0, knots=(0.5,), intercept=False)
    assert raw_unit_matrix(hinges_only, 5.0, 2.0) is not None  # relu((x-m)/s - k) = relu(x - k')/s


def test_negative_scale_hinge_needs_a_linear_term():
    spec = FeatureSpec(inputs=1, degree=0, knots=(0.5,))
    assert raw_unit_matrix(spec, 1.0, -2.0) is None
    assert "linear term" in raw_unit_problem(spec, 1.0, -2.0)
    assert raw_unit_matrix(spec, 1.0, 2.0) is not None


def test_identity_transform_gives_the_identity():
    spec = FeatureSpec(inputs=2, degree=2, knots=(0.5,))
    np.testing.assert_array_equal(raw_unit_matrix(spec, 0.0, 1.0).matrix, np.eye(spec.n_params))


def test_to_raw_keeps_the_shape_of_runs():
    raw = raw_unit_matrix(FeatureSpec.polynomial(2), 3.0, 2.0)
    runs = np.arange(12.0).reshape(4, 3)
    assert to_raw(runs, raw.matrix).shape == (4, 3)
    np.testing.assert_allclose(to_raw(runs[1], raw.matrix), to_raw(runs, raw.matrix)[1])


def test_polynomial_uses_the_first_column_of_a_longer_shift():
    a = raw_unit_matrix(FeatureSpec.polynomial(2), [3.0, 100.0], [2.0, 50.0])
    b = raw_unit_matrix(FeatureSpec.polynomial(2), 3.0, 2.0)
    np.testing.assert_array_equal(a.matrix, b.matrix)
    with pytest.raises(ValueError, match="x column"):
        raw_unit_matrix(FeatureSpec(inputs=2), [1.0, 2.0, 3.0], 1.0)


# --- FeatureSpec against the real models ---------------------------------------------------------

MODELS = {
    "Features()": lambda: Features(),
    "Features(intercept=False)": lambda: Features(intercept=False),
    "Features(inputs=2)": lambda: Features(inputs=2),
    "Features(inputs=2,degree=2,knots=(0.5,))": lambda: Features(inputs=2, degree=2, knots=(0.5,)),
    "Features(inputs=3,degree=3,3 knots,no b)": lambda: Features(
        inputs=3, degree=3, knots=(-1.0, 0.0, 0.75), intercept=False
    ),
    "Features(degree=0,knots=[0,0.5])": lambda: Features(degree=0, knots=[0, 0.5]),
    "Polynomial(0)": lambda: Polynomial(0),
    "Polynomial(3)": lambda: Polynomial(3),
}


@pytest.mark.parametrize("make_model", MODELS.values(), ids=MODELS.keys())
def test_feature_order_matches_the_models(make_model):
    model = make_model()
    spec = FeatureSpec.from_model(model)
    n_cols = getattr(model, "inputs", 2)  # Polynomial reads column 0 of any x
    x = np.random.default_rng(0).normal(size=(25, n_cols))
    expected = model.features(torch.from_numpy(x)).numpy()
    assert spec.n_params == len(model.names) == expected.shape[1]
    # a permuted column would be off by O(1); torch and numpy round x**3 differently
    np.testing.assert_allclose(feature_matrix(spec, x), expected, rtol=1e-14, atol=0)


def test_from_model_refuses_other_modules():
    with pytest.raises(ValueError, match="not a Features or Polynomial"):
        FeatureSpec.from_model(torch.nn.Linear(1, 1))
