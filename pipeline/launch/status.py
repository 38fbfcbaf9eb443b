"""Where a sweep stands, from its folder and one `squeue` call: `pipeline-status`.

A run is done when a part holds it; a submitted task is running or pending while the
queue lists it, failed when it left a failure record, and lost when it left the queue
with neither (cancelled, killed, node failure). Relaunching the sweep retrains exactly
the runs of failed and lost tasks.
"""

from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
from tqdm import tqdm

from pipeline import store
from pipeline.core.errors import FolderError
from pipeline.core.runs import STATUSES
from pipeline.launch.slurm import QueueError, queue_states
from pipeline.store.folder import submitted_tasks

log = logging.getLogger(__name__)

QUEUE_RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING", "RESIZING"}
ACTIVE = ("running", "pending")


def _run_statuses(out_dir: Path) -> dict[str, str]:
    parts = store.read_parts(out_dir, columns=["run_id", "status"])
    return dict(zip(parts["run_id"], parts["status"]))


def task_table(out_dir: Path) -> pd.DataFrame:
    """One row per submitted task: its state, its runs done / in progress, and those done per status."""
    out_dir = Path(out_dir)
    tasks = submitted_tasks(out_dir)
    finished = _run_statuses(out_dir)
    # the queue is asked only about tasks with runs left: a finished sweep needs no squeue
    queue = queue_states(t["job_id"] for t in tasks if not all(r in finished for r in t["runs"]))
    rows = []
    for t in tasks:
        statuses = [finished[r] for r in t["runs"] if r in finished]
        queued = queue.get(t["slurm_id"])
        if len(statuses) == len(t["runs"]):
            state = "done"
        elif queued is not None:
            state = "running" if queued in QUEUE_RUNNING else "pending"
        elif store.failure_path(out_dir, t["part"]).is_file():
            state = "failed"
        else:
            state = "lost"
        rows.append(
            {
                "job": t["slurm_id"],
                "task": t["task"],
                "state": state,
                "runs": len(t["runs"]),
                "done": len(statuses),
                "in_progress": store.progress_count(out_dir, t["part"]) if state != "done" else 0,
                **{status: statuses.count(status) for status in STATUSES},
                "queue_state": queued or "",
            }
        )
    return pd.DataFrame(rows, columns=["job", "task", "state", "runs", "done", "in_progress", *STATUSES, "queue_state"])


@dataclass
class StillQueued:
    """Runs of tasks submitted earlier that the queue still lists (pending or running): a
    relaunch leaves them to those tasks instead of training them twice."""

    run_ids: set[str] = field(default_factory=set)
    tasks: list[dict[str, Any]] = field(default_factory=list)

    def text(self) -> str:
        """E.g. `skipped 400 runs of 4 tasks still queued or running: job 123_[4-7]`."""
        return (
            f"skipped {len(self.run_ids)} runs of {len(self.tasks)} task(s) still queued or running: "
            f"job {job_list(t['slurm_id'] for t in self.tasks)} (they train them; --force resubmits them, "
            "after scancel)"
        )


def job_list(slurm_ids: Iterable[str]) -> str:
    """SLURM's short form of array tasks: 123_4, 123_5, 123_6, 124 -> `123_[4-6], 124`."""
    by_job: dict[str, list[int]] = {}
    plain = []
    for slurm_id in slurm_ids:
        job, _, index = str(slurm_id).partition("_")
        if index.isdigit():
            by_job.setdefault(job, []).append(int(index))
        else:
            plain.append(job)
    out = []
    for job, indices in by_job.items():
        spans, indices = [], sorted(set(indices))
        start = prev = indices[0]
        for i in [*indices[1:], None]:
            if i is not None and i == prev + 1:
                prev = i
                continue
            spans.append(str(start) if start == prev else f"{start}-{prev}")
            if i is not None:
                start = prev = i
        out.append(f"{job}_[{','.join(spans)}]" if len(indices) > 1 else f"{job}_{indices[0]}")
    return ", ".join(out + plain)


def still_queued(out_dir: Path, run_ids: set[str]) -> StillQueued:
    """Which of `run_ids` belong to tasks submitted earlier that are still pending or running,
    from launches.jsonl and one `squeue` call (none when no such task was submitted).

    Raises QueueError when the queue cannot be asked (squeue fails or is missing): whether
    those tasks still run is then unknown, never assumed."""
    tasks = [t for t in submitted_tasks(out_dir) if run_ids.intersection(t["runs"])]
    if not tasks:
        return StillQueued()
    try:
        states = queue_states(t["job_id"] for t in tasks)
    except (OSError, subprocess.SubprocessError) as err:  # no squeue on this machine, or no answer
        raise QueueError(f"squeue cannot be run here ({err})") from err
    active = [t for t in tasks if t["slurm_id"] in states]
    ids = {r for t in active for r in t["runs"]} & run_ids
    return StillQueued(ids, active)


def failure_messages(out_dir: Path, table: pd.DataFrame) -> list[str]:
    messages = []
    by_task = {t["task"]: t for t in submitted_tasks(out_dir)}
    for row in table[table["state"].isin(["failed", "lost"])].itertuples():
        path = store.failure_path(out_dir, by_task[row.task]["part"])
        error = failure_error(path) if path.is_file() else "left the queue without a result"
        messages.append(f"task {row.task} (job {row.job}, {row.runs} runs): {row.state}: {error}")
    return messages


def failure_error(path: Path) -> str:
    """The error a task's failure record holds; what is wrong with the record when it cannot say."""
    try:
        record = store.read_json(path)
        return str(record["error"]) if isinstance(record, dict) and "error" in record else f"({path} holds no error)"
    except (OSError, ValueError) as err:
        return f"(its failure record {path} cannot be read: {type(err).__name__})"


def summary(out_dir: Path, table: pd.DataFrame) -> str:
    plan = store.read_plan(out_dir, columns=["run_id"])
    finished = _run_statuses(out_dir)
    found = pd.Series([finished[r] for r in plan["run_id"] if r in finished], dtype=object).value_counts()
    by_status = ", ".join(f"{int(found.get(s, 0))} {s}" for s in [*STATUSES, *sorted(set(found.index) - set(STATUSES))])
    remaining = (table["runs"] - table["done"]).groupby(table["state"]).sum()
    counts = {s: int(remaining.get(s, 0)) for s in ("running", "pending", "failed", "lost")}
    return (
        f"runs: {int(found.sum())} of {len(plan)} done ({by_status}), {counts['running']} running, "
        f"{counts['pending']} pending, {counts['failed']} in failed tasks, {counts['lost']} in lost tasks"
    )


def status_text(out_dir: Path) -> str:
    """What `pipeline-status` prints: the runs' summary, one row per submitted task, the failures.
    A queue that cannot be asked is a FolderError (the folder's own view: `pipeline-aggregate`)."""
    try:
        table = task_table(out_dir)
    except QueueError as err:
        raise FolderError(
            f"{out_dir}: where its SLURM tasks stand cannot be told: {err}; `pipeline-aggregate out_dir={out_dir}` "
            "reports the runs that have results"
        ) from err
    lines = [f"sweep folder: {out_dir}", summary(out_dir, table)]
    if len(table):
        lines.append(table.to_string(index=False))
    else:
        lines.append("(no SLURM tasks recorded: a debug or local sweep; `pipeline-aggregate` reports its runs)")
    lines += [f"  {message}" for message in failure_messages(out_dir, table)]
    return "\n".join(lines)


def wait_for_sweep(out_dir: Path, progress: bool = True, poll_s: float = 2.0) -> list[str]:
    """Block until no submitted task is pending or running; return failure messages."""
    plan_size = len(store.read_plan(out_dir, columns=["run_id"]))
    with tqdm(total=plan_size, unit="run", desc="runs", disable=not progress) as bar:
        while True:
            try:
                table = task_table(out_dir)
            except QueueError as err:  # a busy controller: ask again at the next poll
                log.warning("%s", err)
                time.sleep(poll_s)
                continue
            bar.n = int(len(_run_statuses(out_dir)))
            bar.refresh()
            if not table["state"].isin(ACTIVE).any():
                return failure_messages(out_dir, table)
            time.sleep(poll_s)
