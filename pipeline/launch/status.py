"""Where a sweep stands, from its folder and one `squeue` call: `pipeline-status`.

A run is done when a part holds it; a submitted task is running or pending while the
queue lists it, failed when it left a failure record, and lost when it left the queue
with neither (cancelled, killed, node failure). Relaunching the sweep retrains exactly
the runs of failed and lost tasks.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from pipeline import store
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
    queue = queue_states(t["job_id"] for t in tasks)
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


def failure_messages(out_dir: Path, table: pd.DataFrame) -> list[str]:
    messages = []
    by_task = {t["task"]: t for t in submitted_tasks(out_dir)}
    for row in table[table["state"].isin(["failed", "lost"])].itertuples():
        path = store.failure_path(out_dir, by_task[row.task]["part"])
        error = store.read_json(path)["error"] if path.is_file() else "left the queue without a result"
        messages.append(f"task {row.task} (job {row.job}, {row.runs} runs): {row.state}: {error}")
    return messages


def summary(out_dir: Path, table: pd.DataFrame) -> str:
    plan = pd.read_parquet(Path(out_dir) / store.PLAN, columns=["run_id"])
    finished = _run_statuses(out_dir)
    found = pd.Series([finished[r] for r in plan["run_id"] if r in finished], dtype=object).value_counts()
    by_status = ", ".join(f"{int(found.get(s, 0))} {s}" for s in [*STATUSES, *sorted(set(found.index) - set(STATUSES))])
    remaining = (table["runs"] - table["done"]).groupby(table["state"]).sum()
    counts = {s: int(remaining.get(s, 0)) for s in ("running", "pending", "failed", "lost")}
    return (
        f"runs: {int(found.sum())} of {len(plan)} done ({by_status}), {counts['running']} running, "
        f"{counts['pending']} pending, {counts['failed']} in failed tasks, {counts['lost']} in lost tasks"
    )


def wait_for_sweep(out_dir: Path, progress: bool = True, poll_s: float = 2.0) -> list[str]:
    """Block until no submitted task is pending or running; return failure messages."""
    plan_size = len(pd.read_parquet(Path(out_dir) / store.PLAN, columns=["run_id"]))
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
