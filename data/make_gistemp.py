"""Derive `data/gistemp/gistemp_annual.csv` (columns `year`, `anomaly`) from NASA's `graph.csv`.

NASA's file opens with a quoted two-line title before its header
`Year,No_Smoothing,Lowess(5)`; a plain `read_csv` would take the title for the header.
This script finds the header, keeps the year and the unsmoothed annual anomaly, and
copies each number character for character (no float round trip), so the shipped
file holds exactly NASA's values. All years are kept; presets choose their rows.

    python data/make_gistemp.py path/to/graph.csv     # default: ../shared/data/gistemp/graph.csv
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parents[1] / "shared" / "data" / "gistemp" / "graph.csv"
TARGET = HERE / "gistemp" / "gistemp_annual.csv"
HEADER = ["Year", "No_Smoothing", "Lowess(5)"]


def read_annual(source: Path) -> list[tuple[str, str]]:
    """(year, anomaly) strings from NASA's graph.csv, checked for a gap-free series."""
    records = list(csv.reader(source.read_text().splitlines(keepends=True)))
    try:
        start = next(i for i, rec in enumerate(records) if rec[:3] == HEADER) + 1
    except StopIteration:
        raise SystemExit(f"{source}: no header line {','.join(HEADER)}") from None
    rows = [(rec[0].strip(), rec[1].strip()) for rec in records[start:] if rec]
    years = [int(year) for year, _ in rows]
    if years != list(range(years[0], years[0] + len(years))):
        raise SystemExit(f"{source}: years are not consecutive")
    for year, value in rows:
        float(value)  # every anomaly must be a number; raises on anything else
    return rows


def main(argv: list[str]) -> None:
    source = Path(argv[1]) if len(argv) > 1 else DEFAULT_SOURCE
    rows = read_annual(source)
    TARGET.parent.mkdir(exist_ok=True)
    TARGET.write_text("year,anomaly\n" + "".join(f"{y},{v}\n" for y, v in rows))
    print(f"wrote {TARGET} ({len(rows)} rows, {rows[0][0]}-{rows[-1][0]})")


if __name__ == "__main__":
    main(sys.argv)
