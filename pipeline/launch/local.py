"""The processes of a local sweep: stop them with their launch, never leave one behind.

- submitit's local controller (a process between the launch and each task) is started
  ignoring SIGINT (`controller_ignores_sigint`): a Ctrl-C would make it print a raw
  KeyboardInterrupt traceback to the user's terminal. The task restores Python's SIGINT
  handler for itself (`restore_sigint`);
- Ctrl-C / SIGTERM of the launching process: `stop_jobs` sends SIGINT to every task (the
  controllers' children), so each ends and its controller with it, and waits;
- SIGKILL of the launching process leaves nothing to stop them, and the controller (the
  task's real parent, so `PR_SET_PDEATHSIG` would not fire) outlives it: each task
  watches the launching pid and its own parent (`watch_parent`) and ends when either goes.
Imports nothing of ours and no torch.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

log = logging.getLogger(__name__)


def process_start(pid: int) -> Optional[str]:
    """When process `pid` started (clock ticks since boot, from /proc), or None if there is
    none; where /proc is missing, "alive" or None. Tells a live parent from a reused pid."""
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").is_file():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[19]
        except (OSError, IndexError):
            return None
    try:
        os.kill(pid, 0)
        return "alive"
    except ProcessLookupError:
        return None
    except PermissionError:
        return "alive"


def this_process() -> tuple[int, Optional[str]]:
    return os.getpid(), process_start(os.getpid())


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux /proc; empty elsewhere)."""
    children = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
    return children


@contextmanager
def controller_ignores_sigint() -> Iterator[None]:
    """Processes started in the body inherit SIGINT ignored (see the module's docstring)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def restore_sigint() -> None:
    """In a task: Ctrl-C (SIGINT) raises KeyboardInterrupt again, whatever was inherited."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def watch_parent(parent: tuple[int, Optional[str]], poll_s: float = 0.5) -> threading.Thread:
    """Stop this task process when the launching process or this process's parent is gone
    (SIGKILL leaves them no time to stop us). Finished runs are already saved atomically
    in progress/, so ending at any moment loses no result."""
    pid, started = parent
    own_parent = os.getppid()

    def watch() -> None:
        while process_start(pid) == started and os.getppid() == own_parent:
            time.sleep(poll_s)
        log.warning("the launching process %d is gone: this task stops (its finished runs are saved)", pid)
        logging.shutdown()
        os._exit(143)

    thread = threading.Thread(target=watch, name="watch-parent", daemon=True)
    thread.start()
    return thread


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (kill, a session closing) ends the launch like Ctrl-C: tasks stopped, progress kept."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop_jobs(jobs: list[Any], deadline_s: float = 20.0) -> None:
    """Stop local jobs: SIGINT to each task (the controller then ends by itself), waited for
    with back-off; a controller still there at the deadline is killed (its task then stops
    by `watch_parent`). A second Ctrl-C meanwhile is ignored, so no task is left behind."""
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main else None
    try:
        for job in jobs:
            process = getattr(job, "_process", None)  # submitit keeps the controller's Popen there
            for task in child_pids(process.pid) if process is not None else []:
                try:
                    os.kill(task, signal.SIGINT)
                except ProcessLookupError:
                    pass
        deadline, wait = time.monotonic() + deadline_s, 0.05
        while any(_alive(j) for j in jobs) and time.monotonic() < deadline:
            time.sleep(wait)
            wait = min(wait * 2, 1.0)
        for job in jobs:
            if _alive(job):
                job._process.kill()
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)


def _alive(job: Any) -> bool:
    process = getattr(job, "_process", None)
    return process is not None and process.poll() is None


def remove_placeholder_folder(folder: Path) -> None:
    """submitit's local controller creates the folder template itself (`logs/%j`): drop it if empty."""
    try:
        folder.rmdir()
    except OSError:
        pass
