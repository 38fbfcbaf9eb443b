"""A sweep folder holds one sweep: what defines it, and the refusal of a launch of another.

A sweep is defined by what its run ids hash besides the grid (`sweep.ids.settings_fingerprint`:
model, loss, optimiser and their arguments, epochs, log_every, grad_tol, dtype, param_tol),
by its data's values (`data_digest`) and by its experiment's name. A launch into a folder
whose sweep differs in any of these would train runs no plan of the folder describes and
replace its plan and tables: it is refused before anything is written, naming the
differences and the two ways on. Growing the grid (learning rates, initial values,
resamples, seed, scheme) is a relaunch of the same sweep. `--new-sweep`
(`launcher.new_sweep=true`) first moves the old sweep's files aside (`store.set_sweep_aside`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from pipeline import store
from pipeline.sweep.ids import settings_fingerprint

MAX_SHOWN = 6  # differences named in the message; the rest are counted


def sweep_identity(cfg: dict[str, Any], data_digest: Optional[str]) -> dict[str, Any]:
    """What defines the sweep of a config: experiment, (data), and the settings its run ids hash."""
    identity = {"experiment": cfg.get("experiment"), **settings_fingerprint(cfg)}
    return identity if data_digest is None else {**identity, "data": data_digest}


def folder_identity(out_dir: Path, with_data: bool) -> Optional[dict[str, Any]]:
    """The identity of the sweep a folder holds (its config.yaml and sweep.json); None when the
    folder holds no sweep, or not enough of one to tell (a damaged folder is the readers' matter)."""
    out_dir = Path(out_dir)
    if not (out_dir / store.SWEEP_META).is_file() or not (out_dir / store.CONFIG).is_file():
        return None
    try:
        cfg = store.read_config(out_dir)
        digest = store.read_json(out_dir / store.SWEEP_META).get("data_digest") if with_data else None
    except Exception:  # noqa: BLE001 - unreadable: nothing to compare with (pipeline-status names the file)
        return None
    if not isinstance(cfg, dict) or not cfg:
        return None
    return sweep_identity(cfg, digest)


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}.{key}" if prefix else str(key)))
        return out or {prefix: {}}
    return {prefix: value}


def differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """`key: old -> new` for each setting that differs (the data by its digest)."""
    old, new = _flat(before, ""), _flat(now, "")
    out = []
    for key in sorted(set(old) | set(new), key=lambda k: (k != "experiment", k != "data", k)):
        if old.get(key, "(unset)") == new.get(key, "(unset)"):
            continue
        if key == "data":
            out.append("data: other values (the data's digest changed)")
        else:
            out.append(f"{key}: {old.get(key, '(unset)')!r} -> {new.get(key, '(unset)')!r}")
    return out


def other_sweep_problems(cfg: dict[str, Any], data_digest: Optional[str]) -> list[str]:
    """One message when `out_dir` holds another sweep than `cfg`'s and `--new-sweep` is not given;
    the data are compared when `data_digest` is given (the CLI's early check has none yet)."""
    out_dir = Path(str(cfg["out_dir"])).expanduser().absolute()
    if cfg["launcher"].get("new_sweep"):
        return []
    before = folder_identity(out_dir, with_data=data_digest is not None)
    if before is None:
        return []
    found = differences(before, sweep_identity(cfg, data_digest))
    if not found:
        return []
    shown = "; ".join(found[:MAX_SHOWN]) + (f"; and {len(found) - MAX_SHOWN} more" if len(found) > MAX_SHOWN else "")
    return [
        f"`out_dir`: {out_dir} holds another sweep ({shown}). A folder holds one sweep, whose runs these "
        f"settings define; nothing was written. Either give another out_dir=..., or add --new-sweep "
        f"(launcher.new_sweep=true) to move the old sweep's plan, results and tables to "
        f"{out_dir / store.REPLACED}/<time>/ (nothing is deleted) and start this one there. Growing the grid "
        "(sweep.lr, sweep.init, sweep.resamples) is a relaunch of the same sweep and needs neither"
    ]
