"""How many runs of a chunk go through a fast engine at once.

Each engine estimates the bytes one run needs; a batch takes at most half the free GPU
memory, or a quarter of the RAM available on a CPU node.
"""

from __future__ import annotations

import os

import torch

GPU_SHARE, RAM_SHARE = 0.5, 0.25


def available_memory(device: torch.device) -> tuple[int, str]:
    """Bytes a batch may take on `device`, and where that figure comes from."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * GPU_SHARE), f"{GPU_SHARE:.0%} of {free / 2**30:.1f} GiB free on {device}"
    ram = _available_ram()
    return int(ram * RAM_SHARE), f"{RAM_SHARE:.0%} of {ram / 2**30:.1f} GiB RAM available"


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def batch_size(n_runs: int, run_bytes: int, device: torch.device) -> tuple[int, str]:
    """How many runs go through an engine at once, and a sentence saying why."""
    budget, source = available_memory(device)
    fits = max(1, budget // max(run_bytes, 1))
    return min(n_runs, fits), f"about {run_bytes / 2**10:.1f} KiB per run; {source} fit {fits} runs"
