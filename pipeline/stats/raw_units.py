"""Coefficients in the data's raw units, from a fit on shifted and scaled x.

The pipeline fits on z = (x - shift) / scale per x column (`data.standardize`: the mean
and the population sd; or fixed `data.x_shift` / `data.x_scale`), so every coefficient
of a model linear in its parameters is per sd of x. A published data set's certified
coefficients, and a reader, want them per unit of x. Because the model is linear in
its parameters and each feature of z is a polynomial or a hinge of x, the same
feature map applied to raw x spans the same functions, and one square matrix M maps
one coefficient vector onto the other exactly:

    features(z) @ theta == raw_features(x) @ (M @ theta)      for every x,

where raw_features is the same map with each hinge knot k of column j moved to
shift_j + scale_j * k. The entries of M follow from the binomial expansion

    ((x - m) / s)^p = sum_i C(p, i) (-m)^(p - i) x^i / s^p

and relu((x - m) / s - k) = relu(x - (m + s k)) / s for s > 0 (for s < 0 the hinge
flips: relu(-u) = relu(u) - u, which needs the linear term and the constant). When
the raw map cannot express the fitted function (a shift with no intercept: the
expansion has a constant term and no constant feature to carry it) there is no such
M, and `raw_unit_matrix` returns None; `raw_unit_problem` says why. Standard errors
follow by cov_raw = M cov M^T, since theta_raw is linear in theta.

numpy only: no torch and nothing from the pipeline, so the rule can be checked
against certified values and statsmodels without a training stack. The feature order
must match `pipeline.models.Polynomial` and `Features`; tests/unit/test_rawunits.py compares
`feature_matrix` with the real models so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb
from typing import Any, Optional, Sequence, Union

import numpy as np

ArrayLike = Union[float, Sequence[float], np.ndarray]

# A feature's identity, independent of where the model puts it:
# ("const",), ("pow", column, power >= 1), ("hinge", column, knot index)
Label = tuple


@dataclass(frozen=True)
class FeatureSpec:
    """The feature map of a model linear in its parameters.

    `Features(inputs, degree, knots, intercept)`: powers 1..degree of each of the
    `inputs` columns, column by column; then relu(x_j - k) of each column at each knot;
    then the constant when `intercept`, last. `Polynomial(degree)` of the first column
    is inputs=1 with the constant first (beta0, beta1, ..., betad): `intercept_first`.
    """

    inputs: int = 1
    degree: int = 1
    knots: tuple[float, ...] = ()
    intercept: bool = True
    intercept_first: bool = False

    def __post_init__(self) -> None:
        if self.inputs < 1 or self.degree < 0:
            raise ValueError(f"FeatureSpec needs inputs >= 1 and degree >= 0; got {self.inputs}, {self.degree}")
        if self.intercept_first and not self.intercept:
            raise ValueError("intercept_first needs intercept=True")
        object.__setattr__(self, "knots", tuple(float(k) for k in self.knots))
        if not self.labels():
            raise ValueError("FeatureSpec has no feature: set degree >= 1, knots or intercept")

    @classmethod
    def polynomial(cls, degree: int) -> FeatureSpec:
        """`pipeline.models.Polynomial(degree)`: beta0 + beta1 x + ... of the first x column."""
        return cls(inputs=1, degree=degree, knots=(), intercept=True, intercept_first=True)

    @classmethod
    def from_model(cls, model: Any) -> FeatureSpec:
        """The spec of a `pipeline.models.Features` or `Polynomial` (read by attribute,
        so this module need not import torch)."""
        if all(hasattr(model, a) for a in ("inputs", "degree", "knots", "intercept")):
            return cls(int(model.inputs), int(model.degree), tuple(model.knots), bool(model.intercept))
        if type(model).__name__ == "Polynomial" and hasattr(model, "degree"):
            return cls.polynomial(int(model.degree))
        raise ValueError(f"{type(model).__name__} is not a Features or Polynomial model")

    @property
    def n_params(self) -> int:
        return len(self.labels())

    def labels(self) -> list[Label]:
        """Each parameter's feature, in the model's parameter order."""
        powers = [("pow", j, p) for j in range(self.inputs) for p in range(1, self.degree + 1)]
        hinges = [("hinge", j, i) for j in range(self.inputs) for i in range(len(self.knots))]
        if self.intercept_first:
            return [("const",)] + powers + hinges
        return powers + hinges + ([("const",)] if self.intercept else [])


@dataclass(frozen=True)
class RawUnits:
    """theta_raw = matrix @ theta: coefficients of `spec`'s features of raw x, with
    column j's hinge knots at `knots[j]` (raw units)."""

    spec: FeatureSpec
    matrix: np.ndarray
    shift: tuple[float, ...]
    scale: tuple[float, ...]
    knots: tuple[tuple[float, ...], ...]
    note: str

    def design(self, x_raw: np.ndarray) -> np.ndarray:
        """The raw-unit design: the same feature map on raw x, knots moved."""
        return feature_matrix(self.spec, x_raw, self.knots)


def feature_matrix(spec: FeatureSpec, x: np.ndarray, knots: Optional[Sequence[Sequence[float]]] = None) -> np.ndarray:
    """(rows, n_params): the model's features of x, in its parameter order.

    `knots` gives each column its own knots (as raw-unit knots differ by column);
    default: `spec.knots` for every column. Polynomial reads only the first column.
    """
    x = np.asarray(x, dtype=float)
    x = x[:, None] if x.ndim == 1 else x
    if not spec.intercept_first and x.shape[1] != spec.inputs:
        raise ValueError(f"the spec has {spec.inputs} input column(s); x has {x.shape[1]}")
    per_column = [spec.knots] * spec.inputs if knots is None else [tuple(k) for k in knots]
    columns = {("const",): np.ones(len(x))}
    for j in range(spec.inputs):
        for p in range(1, spec.degree + 1):
            columns[("pow", j, p)] = x[:, j] ** p
        for i, knot in enumerate(per_column[j]):
            columns[("hinge", j, i)] = np.maximum(x[:, j] - knot, 0.0)
    return np.stack([columns[label] for label in spec.labels()], axis=-1)


def _per_column(values: ArrayLike, spec: FeatureSpec, key: str) -> np.ndarray:
    """One value per input column: a scalar broadcasts; Polynomial keeps the first."""
    arr = np.atleast_1d(np.asarray(values, dtype=float))
    if arr.ndim != 1:
        raise ValueError(f"{key} must be a scalar or one value per x column; got shape {arr.shape}")
    if len(arr) == 1:
        return np.repeat(arr, spec.inputs)
    if len(arr) == spec.inputs:
        return arr
    if spec.intercept_first:  # Polynomial fits the first x column; the others are unused
        return arr[:1]
    raise ValueError(f"{key} has {len(arr)} values; the model has {spec.inputs} x column(s)")


def _power_in_raw(column: int, power: int, m: float, s: float) -> dict[Label, float]:
    """((x - m) / s)^power as raw features: C(p, i) (-m)^(p-i) / s^p for x^i."""
    terms: dict[Label, float] = {}
    for i in range(power + 1):
        coef = comb(power, i) * (-m) ** (power - i) / s**power
        if coef != 0.0:
            terms[("const",) if i == 0 else ("pow", column, i)] = coef
    return terms


def _hinge_in_raw(column: int, index: int, raw_knot: float, s: float) -> dict[Label, float]:
    """relu((x - m) / s - k) as raw features, with raw_knot = m + s k."""
    if s > 0:
        return {("hinge", column, index): 1.0 / s}
    # (x - raw_knot) / s is -(x - raw_knot) / |s|; relu(-u) = relu(u) - u
    terms = {("hinge", column, index): 1.0 / -s, ("pow", column, 1): -1.0 / -s}
    if raw_knot != 0.0:
        terms[("const",)] = raw_knot / -s
    return terms


def _in_raw(
    label: Label, shift: np.ndarray, scale: np.ndarray, raw_knots: tuple[tuple[float, ...], ...]
) -> dict[Label, float]:
    """One feature of z = (x - shift) / scale as a combination of raw-x features."""
    if label[0] == "const":
        return {("const",): 1.0}
    _, j, n = label
    if label[0] == "pow":
        return _power_in_raw(j, n, shift[j], scale[j])
    return _hinge_in_raw(j, n, raw_knots[j][n], scale[j])


def _why_missing(label: Label, spec: FeatureSpec) -> str:
    """Why the raw-unit map lacks `label`, a feature the converted fit needs."""
    if label[0] == "const":
        return (
            "the shift (or a negative scale with hinges) makes the raw-unit model need a constant "
            "term, and the model has no intercept: fit with x_shift 0 or with an intercept"
        )
    return (
        f"a negative scale on x column {label[1] + 1} turns each hinge relu(z - k) into "
        f"relu(x - k') - x + k', which needs a linear term in x that degree {spec.degree} lacks"
    )


def _note(spec: FeatureSpec, shift: np.ndarray, scale: np.ndarray, raw_knots: tuple[tuple[float, ...], ...]) -> str:
    moved = (
        "; ".join(
            f"x{j + 1}: " + ", ".join(f"{k:g} -> {r:.10g}" for k, r in zip(spec.knots, raw_knots[j]))
            for j in range(spec.inputs)
        )
        if spec.knots
        else ""
    )
    pairs = "; ".join(f"x{j + 1}: shift {m:.10g}, scale {s:.10g}" for j, (m, s) in enumerate(zip(shift, scale)))
    return (
        "Coefficients in raw units of x: the same features of untransformed x, converted exactly "
        f"from the fit on (x - shift) / scale ({pairs})"
        + (f", each hinge knot k moved to shift + scale * k ({moved})" if moved else "")
        + "."
    )


def _build(spec: FeatureSpec, shift: ArrayLike, scale: ArrayLike) -> tuple[Optional[RawUnits], Optional[str]]:
    shift_arr, scale_arr = _per_column(shift, spec, "shift"), _per_column(scale, spec, "scale")
    if (scale_arr == 0).any() or not np.isfinite(np.concatenate([shift_arr, scale_arr])).all():
        return None, f"scale must be finite and non-zero and shift finite; got shift {shift_arr}, scale {scale_arr}"
    raw_knots = tuple(tuple(float(m + s * k) for k in spec.knots) for m, s in zip(shift_arr, scale_arr))
    labels = spec.labels()
    row_of = {label: r for r, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)))
    for c, label in enumerate(labels):
        for raw_label, coef in _in_raw(label, shift_arr, scale_arr, raw_knots).items():
            if raw_label not in row_of:
                return None, _why_missing(raw_label, spec)
            matrix[row_of[raw_label], c] += coef
    note = _note(spec, shift_arr, scale_arr, raw_knots)
    return RawUnits(spec, matrix, tuple(shift_arr.tolist()), tuple(scale_arr.tolist()), raw_knots, note), None


def raw_unit_matrix(spec: FeatureSpec, shift: ArrayLike, scale: ArrayLike) -> Optional[RawUnits]:
    """The exact map from coefficients fitted on (x - shift) / scale to raw units, or
    None when the raw-unit feature map cannot express the fit (`raw_unit_problem`)."""
    return _build(spec, shift, scale)[0]


def raw_unit_problem(spec: FeatureSpec, shift: ArrayLike, scale: ArrayLike) -> Optional[str]:
    """Why `raw_unit_matrix` gives None for these arguments; None when it does not."""
    return _build(spec, shift, scale)[1]


def to_raw(params: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Raw-unit coefficients of each run: params (runs, p) or (p,) -> the same shape. A diverged
    run's inf / NaN parameters give NaN, as its status already says: no RuntimeWarning."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.asarray(params, dtype=float) @ np.asarray(matrix).T


def raw_covariance(matrix: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Covariance of matrix @ theta given that of theta: M cov M^T."""
    return matrix @ cov @ matrix.T


def raw_std_errors(matrix: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Standard errors of the raw-unit coefficients: sqrt(diag(M cov M^T))."""
    return np.sqrt(np.diag(raw_covariance(matrix, cov)))
