"""What the SLURM controller says: its limits and the state of our array tasks.

One `scontrol` or `squeue` call per question, never a poll per task, and never `sacct`:
the sweep folder is the record of what finished; the queue only tells what is still
pending or running (see slurm/README.md for why accounting is not needed).
"""

from __future__ import annotations

import logging
import re
import subprocess
from typing import Iterable

DEFAULT_MAX_ARRAY_SIZE = 1001  # SLURM's own default

log = logging.getLogger(__name__)


class QueueError(RuntimeError):
    """squeue did not answer: the queue's state is unknown (never read as 'empty')."""


def _run(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout


def max_array_size() -> int:
    """MaxArraySize from `scontrol show config`: array indices must stay below it."""
    try:
        text = _run(["scontrol", "show", "config"])
    except (OSError, subprocess.SubprocessError) as err:
        log.info("scontrol show config did not answer (%s): MaxArraySize taken as %d", err, DEFAULT_MAX_ARRAY_SIZE)
        return DEFAULT_MAX_ARRAY_SIZE
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", text, flags=re.MULTILINE)
    return int(match.group(1)) if match else DEFAULT_MAX_ARRAY_SIZE


def queue_states(job_ids: Iterable[str]) -> dict[str, str]:
    """State of every queued array task of these jobs, keyed `<job>_<index>`.

    A task that has left the queue is absent: finished, failed or cancelled, which
    the sweep folder (part, failure record, or neither) tells apart.
    """
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    proc = subprocess.run(
        ["squeue", "--noheader", "--array", "--jobs", ",".join(ids), "--format=%i %T"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        if "Invalid job id" in proc.stderr:  # every one of them has left the controller's memory
            return {}
        raise QueueError(f"squeue failed ({proc.returncode}): {proc.stderr.strip()}")
    out = proc.stdout
    states = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states
