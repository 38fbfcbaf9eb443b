"""How plan, train and aggregate grow with the number of runs: wall time and peak memory.

    PYTHONPATH=. python benchmarks/bench_scale.py                 # 10^4 and 10^5 runs
    PYTHONPATH=. python benchmarks/bench_scale.py --million       # and 10^6 (synthetic parts)
    PYTHONPATH=. python benchmarks/bench_scale.py --sizes 1000    # a quick look

Each stage runs in a fresh Python process (`--stage`), which reports its wall time, its
peak resident memory (VmHWM of /proc/self/status) and its memory after imports, so one
stage's garbage never counts against the next:
- `plan`: `pipeline-sweep launcher=slurm --dry-run` of the sweep (planning, chunking, arrays);
- `train`: a real `tdm_quadratic` bootstrap of n runs with the gram engine and the debug
  launcher (prepare + launch, in this process: what a local or SLURM task does, all at once);
- `aggregate`: `aggregate` of that folder (estimates, curves, intervals, plots);
- `report`: `report.html` of that folder (past ~20,000 runs its curves figure reads a sample);
- for 10^6 runs, `aggregate` of a folder of synthetic parts in the real schema
  (benchmarks/synthetic.py), as training a million runs here would take long.
Last, the growth exponent between the two largest sizes: log(t2 / t1) / log(n2 / n1).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SWEEP = ("experiment=tdm_quadratic", "sweep=bootstrap", "report=false", "launcher.progress=false")


def vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def compose(out_dir: Path, *overrides: str) -> dict:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from pipeline.config.schema import to_container
    from pipeline.config.shipped import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return to_container(hydra_compose("config", overrides=[*overrides, f"out_dir={out_dir}"]))


def run_stage(stage: str, n: int, out_dir: Path) -> dict:
    """One stage, in this process; returns seconds and memory in MiB."""
    import pipeline.results.aggregate  # noqa: F401 - imports belong to the baseline, not to the stage
    from pipeline.launch.prepare import prepare
    from pipeline.launch.submit import launch

    baseline = vm_kib("VmRSS")
    started = time.perf_counter()
    if stage == "plan":
        launch(prepare(compose(out_dir, *SWEEP, f"sweep.resamples={n - 1}", "launcher=slurm", "launcher.dry_run=true")))
    elif stage == "train":
        launch(prepare(compose(out_dir, *SWEEP, f"sweep.resamples={n - 1}", "launcher=debug")))
    elif stage == "aggregate":
        pipeline.results.aggregate.aggregate(out_dir)
    elif stage == "report":
        from pipeline.report.page import write_report

        write_report(out_dir)
    elif stage == "synthetic":
        from benchmarks.synthetic import write_synthetic_sweep

        write_synthetic_sweep(out_dir, n, runs_per_part=25_000)
    seconds = time.perf_counter() - started
    return {
        "stage": stage,
        "n": n,
        "seconds": seconds,
        "peak_mib": vm_kib("VmHWM") / 1024,
        "growth_mib": (vm_kib("VmHWM") - baseline) / 1024,
    }


def measure(stage: str, n: int, out_dir: Path) -> dict:
    """`run_stage` in a fresh process (its stdout's last line is the JSON result)."""
    proc = subprocess.run(
        [sys.executable, __file__, "--stage", stage, "-n", str(n), "--out", str(out_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"stage {stage} n={n} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def exponent(small: dict, large: dict, key: str) -> float:
    a, b = max(small[key], 1e-9), max(large[key], 1e-9)
    return math.log(b / a) / math.log(large["n"] / small["n"])


def show(r: dict) -> None:
    print(
        f"{r['stage']:>10} {r['n']:>9,} runs: {r['seconds']:7.1f} s, peak {r['peak_mib']:6.0f} MiB "
        f"({r['growth_mib']:+.0f} MiB over imports)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--million", action="store_true", help="also aggregate 10^6 synthetic runs")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("-n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        sys.path.insert(0, str(REPO))
        print(json.dumps(run_stage(args.stage, args.n, Path(args.out))))
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for n in args.sizes:
            for stage in ("plan", "train", "aggregate", "report"):
                results.append(measure(stage, n, Path(tmp) / f"sweep-{n}"))
                show(results[-1])
        if args.million:
            for stage in ("plan", "synthetic", "aggregate", "report"):
                results.append(measure(stage, 1_000_000, Path(tmp) / "million"))
                show(results[-1])
    by = {(r["stage"], r["n"]): r for r in results}
    sizes = sorted({r["n"] for r in results})
    for stage in ("plan", "train", "aggregate", "report"):
        have = [n for n in sizes if (stage, n) in by]
        if len(have) >= 2:
            small, large = by[stage, have[-2]], by[stage, have[-1]]
            print(
                f"growth {stage:>9} {have[-2]:,} -> {have[-1]:,}: time ~ n^{exponent(small, large, 'seconds'):.2f}, "
                f"memory over imports ~ n^{exponent(small, large, 'growth_mib'):.2f}"
            )


if __name__ == "__main__":
    main()
