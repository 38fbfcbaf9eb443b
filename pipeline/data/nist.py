"""Read NIST StRD linear least-squares files (`Norris.dat`, `Pontius.dat`, ...).

NIST's Statistical Reference Datasets give each data set with certified regression
results computed in 500-digit arithmetic: the yardstick that says whether a fitting
routine is right to 9+ significant digits. A file is plain text in a fixed layout:
a header whose "File Format" lines give the line numbers of the certified values and
of the data, the model, the certified block (one `Bk estimate sd` line per parameter,
the residual standard deviation, R-squared, an ANOVA table), and the data, one
observation per line, y first.

`read_strd` takes the line numbers from the header and checks every count it can
against the rest of the file (parameters, observations, columns), so a file that was
cut, re-wrapped or edited fails loudly instead of giving subtly wrong numbers.
Numbers are parsed from the file's own text; nothing is retyped. numpy only, and
nothing from the rest of the pipeline, so it serves any caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eEdD][-+]?\d+)?"
_PARAMETER_LINE = re.compile(rf"^\s*(B\d+)\s+({_NUMBER})\s+({_NUMBER})\s*$")
_RESIDUAL_SD_LINE = re.compile(rf"^\s*Standard Deviation\s+({_NUMBER})\s*$")
_R_SQUARED_LINE = re.compile(rf"^\s*R-Squared\s+({_NUMBER})\s*$")
_LINE_RANGE = re.compile(r"(Certified Values|Data)\s*\(lines\s+(\d+)\s+to\s+(\d+)\)")
_COLUMN_HEADER = re.compile(r"^Data:((?:\s+[A-Za-z]\w*)+)\s*$")


class StrdFormatError(ValueError):
    """The file is not laid out as a NIST StRD linear least-squares file."""


@dataclass(frozen=True)
class StrdData:
    """One StRD linear regression data set and its certified results.

    `x` has shape (observations, predictors) and `y` (observations,), in the file's
    row order; `estimates` and `std_devs` follow `parameters` (`B0`, `B1`, ...).
    """

    name: str
    model: str  # the model equation as printed, e.g. "y = B0 + B1*x + e"
    parameters: tuple[str, ...]
    estimates: np.ndarray
    std_devs: np.ndarray
    residual_sd: float
    r_squared: float
    x_names: tuple[str, ...]
    y_name: str
    x: np.ndarray
    y: np.ndarray

    @property
    def intercept(self) -> bool:
        """Whether the model has a constant (`B0`): NoInt1/NoInt2 are fitted through 0."""
        return "B0" in self.parameters

    @property
    def n_observations(self) -> int:
        return int(self.y.shape[0])


def _float(text: str) -> float:
    # Fortran-style exponents (1.0D-03) occur in some StRD files; Python wants E
    return float(text.replace("D", "E").replace("d", "e"))


def _header_value(lines: list[str], label: str, source: str) -> str:
    """The text after `label:` on the first line that starts with it."""
    for line in lines:
        if line.startswith(label + ":"):
            return line[len(label) + 1 :].strip()
    raise StrdFormatError(f"{source}: no line starting with {label!r}")


def _declared_ranges(lines: list[str], source: str) -> dict[str, tuple[int, int]]:
    """{"Certified Values": (first, last), "Data": (first, last)}, 1-based inclusive."""
    ranges = {}
    for line in lines[:20]:
        match = _LINE_RANGE.search(line)
        if match:
            ranges[match.group(1)] = (int(match.group(2)), int(match.group(3)))
    missing = {"Certified Values", "Data"} - ranges.keys()
    if missing:
        raise StrdFormatError(f"{source}: the File Format block gives no line range for {sorted(missing)}")
    return ranges


def _declared_count(lines: list[str], pattern: str, source: str) -> int:
    """A count the header states in words, e.g. '36 Observations', '2 Parameters'."""
    for line in lines[:30]:
        match = re.search(rf"(\d+)\s+{pattern}", line)
        if match:
            return int(match.group(1))
    raise StrdFormatError(f"{source}: the header states no {pattern!r} count")


def _model_equation(lines: list[str], source: str) -> str:
    """The `y = ...` line that follows `Model:` (the model as NIST prints it)."""
    start = next((i for i, line in enumerate(lines) if line.startswith("Model:")), None)
    if start is None:
        raise StrdFormatError(f"{source}: no 'Model:' line")
    for line in lines[start : start + 10]:
        if re.match(r"^\s*y\s*=", line):
            return line.strip()
    raise StrdFormatError(f"{source}: no 'y = ...' equation after 'Model:'")


def _certified_values(block: list[str], source: str) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, float, float]:
    """(parameters, estimates, standard deviations, residual sd, R-squared) from the block."""
    params, estimates, sds = [], [], []
    residual_sd = r_squared = None
    for line in block:
        if (match := _PARAMETER_LINE.match(line)) is not None:
            params.append(match.group(1))
            estimates.append(_float(match.group(2)))
            sds.append(_float(match.group(3)))
        elif (match := _RESIDUAL_SD_LINE.match(line)) is not None:
            residual_sd = _float(match.group(1))
        elif (match := _R_SQUARED_LINE.match(line)) is not None:
            r_squared = _float(match.group(1))
    if not params or residual_sd is None or r_squared is None:
        raise StrdFormatError(
            f"{source}: the certified-values block lacks parameter lines, the residual standard deviation or R-squared"
        )
    return tuple(params), np.array(estimates), np.array(sds), residual_sd, r_squared


def data_tokens(text: str, source: str = "<text>") -> tuple[tuple[str, ...], list[list[str]]]:
    """(column names, rows of number strings as written) of an StRD file's data block.

    The strings are the file's own characters, so a caller can copy values without a
    float round trip; the column names come from the `Data:  y  x` line just above.
    """
    lines = text.splitlines()
    first, last = _declared_ranges(lines, source)["Data"]
    if last > len(lines) or first < 2:
        raise StrdFormatError(f"{source}: data declared on lines {first}-{last}; the file has {len(lines)} lines")
    header = _COLUMN_HEADER.match(lines[first - 2].strip())
    if header is None:
        raise StrdFormatError(
            f"{source}: line {first - 1} should name the columns ('Data:  y  x'); got {lines[first - 2]!r}"
        )
    columns = tuple(header.group(1).split())
    rows = [line.split() for line in lines[first - 1 : last]]
    for number, row in enumerate(rows, start=first):
        if len(row) != len(columns) or not all(re.fullmatch(_NUMBER, token) for token in row):
            raise StrdFormatError(f"{source}: line {number} should hold {len(columns)} numbers; got {row}")
    if any(line.strip() for line in lines[last:]):
        raise StrdFormatError(f"{source}: text after the last declared data line {last}")
    return columns, rows


def parse_strd(text: str, source: str = "<text>") -> StrdData:
    """Parse the text of an StRD linear least-squares file (see `read_strd`)."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "NIST/ITL StRD":
        raise StrdFormatError(f"{source}: the first line should be 'NIST/ITL StRD'")
    if "Linear Least Squares Regression" not in _header_value(lines, "Procedure", source):
        raise StrdFormatError(f"{source}: not a linear least-squares data set")
    name = _header_value(lines, "Dataset Name", source).split()[0]
    first, last = _declared_ranges(lines, source)["Certified Values"]
    params, estimates, sds, residual_sd, r_squared = _certified_values(lines[first - 1 : last], source)
    columns, rows = data_tokens(text, source)
    n_params = _declared_count(lines, r"Parameters?", source)
    n_obs = _declared_count(lines, "Observations", source)
    n_predictors = _declared_count(lines, r"Predictor Variables?", source)
    if len(params) != n_params:
        raise StrdFormatError(f"{source}: {len(params)} certified parameters; the header says {n_params}")
    if len(rows) != n_obs:
        raise StrdFormatError(f"{source}: {len(rows)} data rows; the header says {n_obs} observations")
    if len(columns) != 1 + n_predictors or columns[0] != "y":
        raise StrdFormatError(f"{source}: columns {columns}; expected y and {n_predictors} predictor(s)")
    values = np.array([[_float(token) for token in row] for row in rows])
    return StrdData(
        name=name,
        model=_model_equation(lines, source),
        parameters=params,
        estimates=estimates,
        std_devs=sds,
        residual_sd=residual_sd,
        r_squared=r_squared,
        x_names=columns[1:],
        y_name=columns[0],
        x=values[:, 1:],
        y=values[:, 0],
    )


def read_strd(path: Union[str, Path]) -> StrdData:
    """Read one NIST StRD linear least-squares file: its data and certified results."""
    path = Path(path)
    # NIST's files are ASCII with CRLF line ends; splitlines() takes either
    return parse_strd(path.read_text(encoding="ascii"), str(path))
