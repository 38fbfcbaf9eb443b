"""Read a sweep folder's parts as one stream, cell by cell, in bounded memory.

Three steps, none of which holds every run at once:
1. `index_parts` reads the few key columns of every part (run id, grid cell, resample,
   kind, status): which row of which part wins each run id (the newest part, as
   `record.read_parts` does), restricted to the runs of the latest plan, and which grid
   cell (lr, init_index) each winning row belongs to;
2. `scan_parts` streams the parts row group by row group, hands every batch of winning
   rows (in part order) to a callback, and parks them per cell in a `CellSpill`, which
   moves its buffers to Arrow IPC files in a temporary folder when they outgrow a budget;
3. `CellSpill.pop(cell)` gives back one cell's rows, in the order they were read.

Reading needs only pyarrow: no torch, no pandas frames of the whole sweep.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

KEY_COLUMNS = ("run_id", "lr", "init_index", "resample", "kind", "status")
SPILL_BUDGET_BYTES = 128 * 2**20  # rows parked in memory before they move to disk


@dataclass
class PartIndex:
    """Where the winning row of each planned run lies, and its grid cell."""

    files: list[Path]
    schema: pa.Schema  # the union of the parts' schemas (older parts may lack columns)
    rows: list[np.ndarray]  # per part: positions of its winning rows, ascending
    cells: list[np.ndarray]  # per part: the cell number of each winning row
    cell_keys: list[tuple[float, int]]  # cell number -> (lr, init_index), sorted
    keys: pd.DataFrame  # the winners' key columns (run_id, lr, init_index, resample, kind, status)

    @property
    def n_found(self) -> int:
        return len(self.keys)


def _part_keys(parquet: pq.ParquetFile) -> pd.DataFrame:
    present = parquet.schema_arrow.names
    frame = parquet.read(columns=[c for c in KEY_COLUMNS if c in present]).to_pandas()
    for name in KEY_COLUMNS:
        if name not in frame.columns:  # a column an older part lacks (`kind`: from `resample`)
            frame[name] = None
    return frame[list(KEY_COLUMNS)]


def index_parts(files: Sequence[Path], plan_ids: pd.Index) -> PartIndex:
    """Which row of which part holds each planned run id (the last part listing it wins)."""
    files, frames, schemas = list(files), [], []
    for i, path in enumerate(files):  # each part opened once: its footer, then its key columns
        parquet = pq.ParquetFile(path)
        schemas.append(parquet.schema_arrow.remove_metadata())
        frames.append(_part_keys(parquet).assign(_part=i, _row=np.arange(parquet.metadata.num_rows)))
    # one schema for every part: the union of their columns, in first-seen order
    schema = pa.unify_schemas(schemas) if schemas else pa.schema([])
    keys = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*KEY_COLUMNS, "_part", "_row"])
    keys = keys.drop_duplicates("run_id", keep="last")
    keys = keys[keys["run_id"].isin(plan_ids)]
    cell_frame = keys[["lr", "init_index"]].drop_duplicates().sort_values(["lr", "init_index"])
    cell_keys = [(float(lr), int(i)) for lr, i in cell_frame.itertuples(index=False)]
    lookup = {key: n for n, key in enumerate(cell_keys)}
    cell_of = np.fromiter(
        (lookup[(float(lr), int(i))] for lr, i in zip(keys["lr"], keys["init_index"])), dtype=np.int64, count=len(keys)
    )
    part, row = keys["_part"].to_numpy(dtype=np.int64), keys["_row"].to_numpy(dtype=np.int64)
    order = np.lexsort((row, part))
    part, row, cell_sorted = part[order], row[order], cell_of[order]
    bounds = np.searchsorted(part, np.arange(len(files) + 1))
    rows = [row[bounds[i] : bounds[i + 1]] for i in range(len(files))]
    cells = [cell_sorted[bounds[i] : bounds[i + 1]] for i in range(len(files))]
    return PartIndex(files, schema, rows, cells, cell_keys, keys.drop(columns=["_part", "_row"]).reset_index(drop=True))


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with every column of `schema`, in its order (nulls where a part lacks one)."""
    columns = [
        table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type) for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


@dataclass
class CellSpill:
    """Rows parked per grid cell: in memory up to a budget, then in Arrow IPC files."""

    schema: pa.Schema
    budget_bytes: int = SPILL_BUDGET_BYTES
    folder: Optional[Path] = None
    buffers: dict[int, list[pa.Table]] = field(default_factory=dict)
    files: dict[int, list[Path]] = field(default_factory=dict)
    buffered_bytes: int = 0
    n_spills: int = 0

    def add(self, cell: int, table: pa.Table) -> None:
        self.buffers.setdefault(cell, []).append(table)
        self.buffered_bytes += table.nbytes
        if self.buffered_bytes > self.budget_bytes:
            self._spill()

    def _spill(self) -> None:
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="pipeline-aggregate-"))
        for cell, tables in self.buffers.items():
            path = self.folder / f"cell{cell}-{self.n_spills}.arrow"
            with pa.ipc.new_file(path, self.schema) as writer:
                for table in tables:
                    writer.write_table(table)
            self.files.setdefault(cell, []).append(path)
        self.buffers, self.buffered_bytes = {}, 0
        self.n_spills += 1

    def pop(self, cell: int) -> pa.Table:
        """The cell's rows in the order they were added; its memory and files are freed."""
        tables = []
        for path in self.files.pop(cell, []):
            with pa.memory_map(str(path)) as source:
                tables.append(pa.ipc.open_file(source).read_all())
            path.unlink()
        buffered = self.buffers.pop(cell, [])
        self.buffered_bytes -= sum(t.nbytes for t in buffered)
        tables += buffered
        return pa.concat_tables(tables) if tables else self.schema.empty_table()

    def close(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def scan_parts(index: PartIndex, on_rows: Callable[[pa.Table], None], spill: CellSpill) -> None:
    """Stream every part's winning rows, row group by row group, in part order: each batch
    goes to `on_rows` and, split by grid cell and cut to the columns of `spill.schema`
    (the estimates: loss curves are done with once `on_rows` has them), into `spill`."""
    for path, rows, cells in zip(index.files, index.rows, index.cells):
        if not len(rows):
            continue
        parquet = pq.ParquetFile(path)
        start = 0
        for group in range(parquet.num_row_groups):
            n = parquet.metadata.row_group(group).num_rows
            lo, hi = np.searchsorted(rows, [start, start + n])
            if hi > lo:
                table = conform(parquet.read_row_group(group), index.schema).take(rows[lo:hi] - start)
                on_rows(table)
                _park_by_cell(table.select(spill.schema.names), cells[lo:hi], spill)
            start += n


def _park_by_cell(table: pa.Table, cells: np.ndarray, spill: CellSpill) -> None:
    order = np.argsort(cells, kind="stable")  # stable: rows keep their part order within a cell
    sorted_cells = cells[order]
    starts = np.flatnonzero(np.r_[True, sorted_cells[1:] != sorted_cells[:-1]])
    for a, b in zip(starts, [*starts[1:], len(order)]):
        spill.add(int(sorted_cells[a]), table.take(order[a:b]))
