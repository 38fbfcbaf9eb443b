"""One home for a benchmark figure as a record: a JSON line naming the device it was measured on.

`bench_engines.py --record FILE` and `check_invariance.py --record FILE` append to the same
file (benchmarks/gpu_check.sh gives both `$OUT/figures.jsonl`); the device machine's output
comes back as files only, so every figure carries the device's name, the host, torch's
version and threads and the load with it, not just the log around it.

    python -m benchmarks.figures FILE                                  # the figures of FILE as tables
    python -m benchmarks.figures FILE --add device=cuda figure=pytest stage='-m gpu' result='2 passed'
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    import torch


def cpu_model() -> str:
    """The processor's model name as `lscpu` gives it (platform's guess where lscpu is missing)."""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def device_name(device: torch.device) -> str:
    """What ran the arithmetic: the GPU's name, or the CPU's model with the cores and torch threads used."""
    import torch  # here, not above: printing a table of figures needs no torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({len(os.sched_getaffinity(0))} cores, {torch.get_num_threads()} torch threads)"


def record(path: Optional[Path], device: torch.device, **fields: Any) -> None:
    """Append one figure to `path` (nothing when None), with the device, host, torch and load."""
    import torch

    if path is None:
        return
    line = {
        **fields,
        "device": device.type,
        "device_name": device_name(device),
        "host": socket.gethostname(),
        "torch": torch.__version__,
        "load": round(os.getloadavg()[0], 2),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with open(path, "a") as out:
        out.write(json.dumps(line) + "\n")


TIMING_COLUMNS = ("figure", "stage", "dtype", "device_name", "runs", "epochs", "ms_per_run", "seconds", "note")
CHECK_COLUMNS = ("figure", "stage", "dtype", "device_name", "shared_runs", "identical", "max_rel_diff", "note")
OUTCOME_COLUMNS = ("figure", "stage", "device_name", "rc", "result")


def table(path: Path) -> str:
    """The figures of a record file as two plain-text tables: timings, then checks."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out = []
    for columns, wanted in ((OUTCOME_COLUMNS, "rc"), (TIMING_COLUMNS, "ms_per_run"), (CHECK_COLUMNS, "identical")):
        chosen = [row for row in rows if wanted in row]
        if chosen:
            out.append(" | ".join(columns))
            out.extend(" | ".join(_cell(row.get(c)) for c in columns) for row in chosen)
            out.append("")
    return "\n".join(out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--add", nargs="+", metavar="KEY=VALUE", help="append a record (device=cpu|cuda required)")
    args = parser.parse_args(argv)
    if args.add:
        import torch

        fields = dict(pair.split("=", 1) for pair in args.add)
        record(args.file, torch.device(fields.pop("device")), **fields)
    else:
        print(table(args.file))


if __name__ == "__main__":
    main()
