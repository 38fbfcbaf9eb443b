"""Write any file of a sweep folder atomically, with the permissions the umask gives, and
turn a full disk (or quota) into one message naming the folder (`DiskFullError`)."""

from __future__ import annotations

import errno
import json
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.errors import DiskFullError, FolderError
from pipeline.store.layout import FAILURES, PARTS, PROGRESS

log = logging.getLogger(__name__)


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(err: BaseException) -> bool:
    """ENOSPC / EDQUOT, also when pyarrow reports it as an OSError without an errno."""
    if isinstance(err, OSError) and err.errno in _DISK_FULL:
        return True
    text = str(err)
    return isinstance(err, OSError) and ("No space left on device" in text or "Disk quota exceeded" in text)


def disk_full_error(path: Path, err: BaseException) -> DiskFullError:
    folder = path.parent.parent if path.parent.name in (PARTS, PROGRESS, FAILURES) else path.parent
    return DiskFullError(
        f"disk full (or quota exceeded) while writing {path.name} in {folder}: {err}. "
        "Files already written there are intact; free some space and relaunch the same "
        "command to finish the sweep"
    )


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (threads may be writing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary name beside `path`; rename it into place only on success.

    A reader never sees half a file, and a task killed mid-write leaves only a
    `.tmp` file that no reader looks at.
    """
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600: give what open() would
        os.close(fd)
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as err:
        if is_disk_full(err):
            raise disk_full_error(path, err) from err
        if path.is_dir():  # a folder in the file's place: say so, the OS error alone is cryptic
            raise FolderError(f"cannot write {path}: a folder of that name is in its place; move it away") from err
        raise
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_table(table: pa.Table, path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_frame(frame: pd.DataFrame, path: Path) -> None:
    write_table(pa.Table.from_pandas(frame, preserve_index=False), path)


def write_json(data: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())
