"""Derive `norris.csv`, `pontius.csv`, `noint1.csv` (columns `x`, `y`) from NIST's .dat files.

The pipeline reads CSV or Parquet, not NIST's fixed-layout text, so each data block
becomes a two-column CSV (`data.path=data/nist/norris.csv data.x=x data.y=y`). The
numbers are copied character for character (`.11019` stays `.11019`; no float round
trip), so the CSV holds exactly NIST's values and the certified results apply to it.
Rows keep NIST's order. tests/test_nist.py rebuilds the files and compares bytes.

    python data/nist/make_csv.py
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # run as a script from anywhere: find `pipeline`

from pipeline.data.nist import data_tokens  # noqa: E402

SOURCES = ("Norris.dat", "Pontius.dat", "NoInt1.dat")


def csv_text(dat_path: Path) -> str:
    """The CSV for one .dat file: header `x,y`, then NIST's rows, x first."""
    columns, rows = data_tokens(dat_path.read_text(encoding="ascii"), str(dat_path))
    if columns != ("y", "x"):
        raise SystemExit(f"{dat_path}: columns {columns}; this script handles one predictor (y, x)")
    return "x,y\n" + "".join(f"{x},{y}\n" for y, x in rows)


def csv_path(dat_path: Path) -> Path:
    return dat_path.with_name(dat_path.stem.lower() + ".csv")


def main() -> None:
    for name in SOURCES:
        source = HERE / name
        target = csv_path(source)
        target.write_text(csv_text(source), encoding="ascii", newline="\n")
        print(f"wrote {target.relative_to(HERE.parents[1])}")


if __name__ == "__main__":
    main()
