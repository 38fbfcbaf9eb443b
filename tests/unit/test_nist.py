"""NIST StRD certified values: the pipeline's closed-form OLS and the raw-unit
conversion must reproduce them to at least 9 significant digits.

NIST computed the certified results in 500-digit arithmetic, so they are the truth
for the shipped data. Two routes are checked: `ols_fit` on the raw design (what a
user fitting with `data.standardize=false` gets), and the pipeline's own route, a
fit on standardised x converted back with `raw_unit_matrix` (what the README promises
for `data.standardize=true`).
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from scipy.linalg import solve_triangular

from pipeline.data.load import load_dataset
from pipeline.data.nist import StrdData, StrdFormatError, parse_strd, read_strd
from pipeline.stats.ols import ols_fit
from pipeline.stats.raw_units import (
    FeatureSpec,
    feature_matrix,
    raw_std_errors,
    raw_unit_matrix,
    raw_unit_problem,
    to_raw,
)

NIST_DIR = Path(__file__).resolve().parents[2] / "data" / "nist"
DATASETS = ("Norris", "Pontius", "NoInt1")
DIGITS = 1e-9  # relative error allowed: at least 9 significant digits

# sha256 of NIST's files as shipped (CRLF line ends): any edit or newline conversion shows
SHA256 = {
    "Norris": "5ab6906c68a9c4b2eb1661c0cd7d2a09f5a469a6d4e05b6b691f190f5f7b944f",
    "Pontius": "de60baa5dc66fd804f9316f895bc5aa2b8f791c09d1ecc1ec39f8b199b8c15c7",
    "NoInt1": "d8234c428dedaa9de23b67df7d04aeee83befae73ceb6b38321b224955a9b667",
}


def _data(name: str) -> StrdData:
    return read_strd(NIST_DIR / f"{name}.dat")


def _spec(data: StrdData) -> FeatureSpec:
    """The model NIST certifies: a polynomial in x (B0 first), or B1 x + ... through 0."""
    if data.intercept:
        return FeatureSpec.polynomial(len(data.parameters) - 1)
    return FeatureSpec(inputs=1, degree=len(data.parameters), intercept=False)


def _relative_error(got: np.ndarray, certified: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(got) - certified) / np.abs(certified)))


def _ols_with_cov(design: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(coefficients, s^2 (X'X)^-1, residual sd) by QR, as `ols_fit` computes them."""
    n, p = design.shape
    q, r = np.linalg.qr(design)
    coef = solve_triangular(r, q.T @ y)
    r_inv = solve_triangular(r, np.eye(p))
    resid = y - design @ coef
    s2 = resid @ resid / (n - p)
    return coef, s2 * (r_inv @ r_inv.T), float(np.sqrt(s2))


def _r_squared(design: np.ndarray, y: np.ndarray, coef: np.ndarray, intercept: bool) -> float:
    """R^2 as NIST defines it: about the mean with an intercept, about 0 without."""
    resid = y - design @ coef
    total = y - y.mean() if intercept else y
    return float(1 - resid @ resid / (total @ total))


# --- the files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DATASETS)
def test_dat_file_is_nists_bytes(name):
    raw = (NIST_DIR / f"{name}.dat").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == SHA256[name]
    lines = raw.decode("ascii").split("\r\n")
    assert lines[0] == "NIST/ITL StRD" and lines[1].startswith(f"Dataset Name:  {name}")
    assert "Linear Least Squares Regression" in lines[7]
    assert "Certified Regression Statistics" in "\n".join(lines[20:30])


@pytest.mark.parametrize("name", DATASETS)
def test_certified_block_is_where_the_header_says(name):
    """NIST's layout: 'Certified Values (lines a to b)' and the first `B` line at a."""
    lines = (NIST_DIR / f"{name}.dat").read_text(encoding="ascii").splitlines()
    header = next(line for line in lines[:10] if "Certified Values" in line)
    first = int(header.split("lines")[1].split()[0])
    assert lines[first - 1].split()[0] in ("B0", "B1")
    assert lines[first - 3].split()[:2] == ["Parameter", "Estimate"]


def test_read_strd_parses_the_certified_values():
    norris, pontius, noint1 = (_data(name) for name in DATASETS)
    assert (norris.name, norris.parameters, norris.model) == ("Norris", ("B0", "B1"), "y = B0 + B1*x + e")
    assert norris.estimates.tolist() == [-0.262323073774029, 1.00211681802045]
    assert norris.std_devs.tolist() == [0.232818234301152, 0.429796848199937e-03]
    assert (norris.residual_sd, norris.r_squared) == (0.884796396144373, 0.999993745883712)
    assert norris.x.shape == (36, 1) and norris.y.shape == (36,) and (norris.x[0, 0], norris.y[0]) == (0.2, 0.1)
    assert pontius.parameters == ("B0", "B1", "B2") and pontius.estimates[2] == -0.316081871345029e-14
    assert pontius.model == "y = B0 + B1*x + B2*(x**2)" and pontius.n_observations == 40
    assert noint1.parameters == ("B1",) and not noint1.intercept and noint1.n_observations == 11


def test_read_strd_refuses_a_cut_file():
    text = (NIST_DIR / "Norris.dat").read_text(encoding="ascii")
    with pytest.raises(StrdFormatError, match="lines"):
        parse_strd("\n".join(text.splitlines()[:80]), "cut")
    with pytest.raises(StrdFormatError, match="NIST/ITL StRD"):
        parse_strd("hello\n" + text, "shifted")


def _make_csv_module():
    spec = importlib.util.spec_from_file_location("nist_make_csv", NIST_DIR / "make_csv.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_csv_files_rebuild_byte_for_byte():
    make_csv = _make_csv_module()
    for name in make_csv.SOURCES:
        source = NIST_DIR / name
        assert make_csv.csv_path(source).read_bytes() == make_csv.csv_text(source).encode("ascii"), name


@pytest.mark.parametrize("name", DATASETS)
def test_csv_reads_through_the_pipeline_as_nists_values(name):
    data = _data(name)
    dataset = load_dataset({"path": str(NIST_DIR / f"{name.lower()}.csv"), "x": "x", "y": "y"})
    np.testing.assert_array_equal(dataset.x, data.x)
    np.testing.assert_array_equal(dataset.y[:, 0], data.y)


# --- certified values ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", DATASETS)
def test_ols_fit_on_the_raw_design_reproduces_the_certified_values(name):
    data = _data(name)
    design = feature_matrix(_spec(data), data.x)
    fit = ols_fit(design, data.y)
    _, _, residual_sd = _ols_with_cov(design, data.y)
    assert _relative_error(fit.coef, data.estimates) <= DIGITS
    assert _relative_error(fit.se, data.std_devs) <= DIGITS
    assert _relative_error(residual_sd, data.residual_sd) <= DIGITS
    assert _relative_error(_r_squared(design, data.y, fit.coef, data.intercept), data.r_squared) <= DIGITS


def _transform_config(data: StrdData) -> dict:
    """Standardise when the model has an intercept; through the origin, scale only
    (a shift would need a constant the model lacks)."""
    if data.intercept:
        return {"standardize": True}
    return {"x_shift": 0.0, "x_scale": float(data.x[:, 0].std())}


@pytest.mark.parametrize("name", DATASETS)
def test_standardised_fit_converted_to_raw_units_reproduces_the_certified_values(name):
    data = _data(name)
    dataset = load_dataset(
        {"path": str(NIST_DIR / f"{name.lower()}.csv"), "x": "x", "y": "y", **_transform_config(data)}
    )
    if data.intercept:  # the pipeline's standardisation is the population mean and sd
        assert dataset.x_shift == (data.x[:, 0].mean(),) and dataset.x_scale == (data.x[:, 0].std(),)
    spec = _spec(data)
    raw = raw_unit_matrix(spec, dataset.x_shift, dataset.x_scale)
    assert raw is not None
    theta, cov, _ = _ols_with_cov(feature_matrix(spec, dataset.x), dataset.y[:, 0])
    assert _relative_error(to_raw(theta, raw.matrix), data.estimates) <= DIGITS
    assert _relative_error(raw_std_errors(raw.matrix, cov), data.std_devs) <= DIGITS
    assert (
        _relative_error(ols_fit(feature_matrix(spec, dataset.x), dataset.y[:, 0]).se, np.sqrt(np.diag(cov))) <= 1e-12
    )  # the same covariance ols_fit uses


def test_a_shift_without_an_intercept_has_no_raw_units():
    data = _data("NoInt1")
    x = data.x[:, 0]
    assert raw_unit_matrix(_spec(data), x.mean(), x.std()) is None
    assert "intercept" in raw_unit_problem(_spec(data), x.mean(), x.std())
