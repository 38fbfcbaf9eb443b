"""One launch at a time trains into a sweep folder: an exclusive `flock` on `out_dir/.lock`.

The holder writes who it is (pid, host, start time, command) into the lock file, so a
second launch can say whom it waits for; it stops with exit code 2, or waits with
`--wait-lock` (`launcher.wait_lock=true`). The lock goes with the process: a killed
launch never leaves a stale lock (the kernel drops it). Readers (`pipeline-aggregate`,
`pipeline-status`) never take it: parts are renamed into place whole, so a reader sees
every part complete or not at all.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import shlex
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pipeline import store
from pipeline.core.errors import FolderError

log = logging.getLogger(__name__)


def holder_text(lock_path: Path) -> str:
    """Who holds the lock, as its holder wrote it (best effort: it may be writing right now)."""
    try:
        info = json.loads(lock_path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another launch (it has not said who yet)"
    return (
        f"pid {info.get('pid')} on host {info.get('host')}, started {info.get('started')}, "
        f"command: {info.get('command')}"
    )


def _write_holder(fd: int) -> None:
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "command": shlex.join(sys.argv),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)


@contextmanager
def folder_lock(out_dir: Path, wait: bool = False) -> Iterator[None]:
    """Hold `out_dir/.lock` for the body; raise FolderError naming the holder, or wait for it."""
    path = Path(out_dir) / store.LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # umask applies, as for every file
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = holder_text(path)
            if not wait:
                raise FolderError(
                    f"sweep folder {out_dir} is in use by another launch ({holder}); wait for "
                    "it to end, or pass --wait-lock (launcher.wait_lock=true) to wait"
                ) from None
            log.info("waiting for the sweep folder's lock, held by %s", holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        _write_holder(fd)
        yield
    finally:
        os.close(fd)  # releases the lock
