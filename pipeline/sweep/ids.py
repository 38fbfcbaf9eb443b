"""Run ids, and the conventions of a run that everything downstream relies on:
- resample 0 is the original rows (the point estimate); resample k >= 1 is bootstrap
  draw k, whose rows depend on (`sweep.seed`, k) alone, never on the chunk, the
  launcher or the device; resample -(j+1) is jackknife fit j, which leaves row j out
  (planned when `sweep.jackknife` is true: BCa's acceleration needs them);
- `sweep.scheme` says what a bootstrap draw resamples: `case` takes the drawn rows
  (x, y) pairs; `residual` keeps x and adds the drawn rows' residuals of the original
  OLS fit to its fitted values (models linear in their parameters only);
- a run's id is a hash of the settings that change its numbers, named one by one
  (`ID_SETTINGS`), so the same run always has the same id and a relaunch can skip it,
  and a new config key (with its default) changes no id. Versioned by `ID_VERSION`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any, Mapping, Optional

from pipeline.core.resampling import DRAW_RULE, LEGACY_RULE
from pipeline.core.runs import CASE
from pipeline.core.settings import PARAM_TOL

# The run-id scheme. Bump ID_VERSION only when a change makes the same settings give other
# numbers (or a new setting changes them); a folder of an older version is migrated at its
# next launch (pipeline/migrate.py). Version 0: `legacy_run_id`, a hash of the whole config.
ID_VERSION = 1


# What a run's numbers depend on, besides the data (by content: `data_digest`, training and
# test rows, so moving a file keeps its runs and editing it makes new ones) and its own
# lr, init, resample, seed and scheme. In: model, loss, optimiser and their arguments;
# epochs; log_every (the curve and where divergence is checked); dtype; grad_tol (it sets
# the status stored with the run's results). Out: the engine and device (same numbers,
# tests/integration/test_batched.py), the launcher, intervals, report, out_dir, the experiment's name.
ID_SETTINGS = {"model": None, "loss": None, "optim": None, "train": ("epochs", "log_every", "grad_tol", "dtype")}

# Settings added since: each enters the id only when set to another value than its default,
# so that an upgrade changes no id (a folder's runs are still found). param_tol sets the
# status of runs with a closed-form optimum, as grad_tol does for the others.
ADDED_SETTINGS = {("train", "param_tol"): PARAM_TOL}


# Version 0 (legacy_run_id): the whole resolved config but these; kept to migrate old folders.
_NOT_IN_ID = {
    "train": ("engine", "device", "param_tol"),
    "launcher": None,
    "intervals": None,
    "out_dir": None,
    "report": None,
    "sweep": None,
    "data": None,
    "data_dir": None,
    "lr_grid_factors": None,
}  # keys added after version 0: an old folder's config has none


def settings_fingerprint(cfg: dict[str, Any]) -> dict[str, Any]:
    """The settings shared by all runs of a sweep that change their numbers (`ID_SETTINGS`)."""
    out = {}
    for section, keys in ID_SETTINGS.items():
        value = copy.deepcopy(cfg.get(section))
        if keys is not None and value is not None:
            value = {k: value.get(k) for k in keys}
        out[section] = value
    if isinstance(out["optim"], dict):
        out["optim"].pop("lr", None)  # each run carries its own learning rate
    for (section, key), default in ADDED_SETTINGS.items():
        value = (cfg.get(section) or {}).get(key, default)
        if value != default and isinstance(out.get(section), dict):
            out[section][key] = value
    return out


def run_id(
    fingerprint: dict[str, Any],
    lr: float,
    init: Optional[list[float]],
    resample: int,
    seed: int,
    scheme: str = CASE,
    draw_rule: str = DRAW_RULE,
    draw_settings: Optional[Mapping[str, Any]] = None,
) -> str:
    """Version `ID_VERSION`: seed, scheme, draw rule and draw settings change bootstrap draws (k >= 1) only."""
    return run_id_from_json(
        json.dumps(fingerprint, sort_keys=True, default=str), lr, init, resample, seed, scheme, draw_rule, draw_settings
    )


def run_id_from_json(
    settings_json: str,
    lr: float,
    init: Optional[list[float]],
    resample: int,
    seed: int,
    scheme: str = CASE,
    draw_rule: str = DRAW_RULE,
    draw_settings: Optional[Mapping[str, Any]] = None,
) -> str:
    """`run_id` with the settings serialised once per sweep, not once per run (10^6 runs: minutes).

    The text hashed is json.dumps(..., sort_keys=True) of {"v", "settings", "lr", "init",
    "resample", "seed", "scheme"} and, for a bootstrap draw of any draw rule but the first
    (`core.resampling.LEGACY_RULE`), "draw": the rule, so the ids of folders made before
    the rule had a name stay, and no two rules' draws share an id; for a bootstrap draw of a
    scheme that reads settings (block length, wild weights: `SweepMeta.draw_settings`),
    "draw_settings": those, so the case and residual ids are as they were. "settings" and "v"
    sort after the run's own keys, so the run's part is dumped alone and the settings' text
    appended (tests/integration/test_house.py pins it).
    """
    return run_ids_from_json(settings_json, lr, init, [resample], seed, scheme, draw_rule, draw_settings)[0]


_RESAMPLE = "__resample__"  # where each run's resample index goes in its kind's text


def _id_text(
    settings_json: str,
    lr: float,
    init: Optional[list[float]],
    draw: bool,
    seed: int,
    scheme: str,
    draw_rule: str,
    draw_settings: Optional[Mapping[str, Any]],
) -> tuple[str, str]:
    """The text `run_id_from_json` hashes, split around the resample index: the same for
    every run of a grid cell and kind (original or jackknife, or bootstrap draw)."""
    own = {
        "lr": float(lr),
        "init": None if init is None else [float(v) for v in init],
        "resample": _RESAMPLE,
        "seed": int(seed) if draw else None,
        "scheme": scheme if draw else None,
    }
    if draw and draw_rule != LEGACY_RULE:
        own["draw"] = draw_rule
    if draw and draw_settings:
        own["draw_settings"] = dict(draw_settings)
    text = json.dumps(own, sort_keys=True, default=str)[:-1] + f', "settings": {settings_json}, "v": {ID_VERSION}}}'
    before, after = text.split(json.dumps(_RESAMPLE), 1)  # the run's own keys come first
    return before, after


def run_ids_from_json(
    settings_json: str,
    lr: float,
    init: Optional[list[float]],
    resamples: list[int],
    seed: int,
    scheme: str = CASE,
    draw_rule: str = DRAW_RULE,
    draw_settings: Optional[Mapping[str, Any]] = None,
) -> list[str]:
    """`run_id_from_json` of the runs of one grid cell, one per resample: the text around the
    index built once per kind, so an id costs one string join and one hash (10^6 runs: seconds)."""
    texts = {
        draw: _id_text(settings_json, lr, init, draw, seed, scheme, draw_rule, draw_settings) for draw in (False, True)
    }
    ids = []
    for k in resamples:
        before, after = texts[k > 0]
        ids.append(hashlib.sha256(f"{before}{int(k)}{after}".encode()).hexdigest()[:16])
    return ids


def legacy_fingerprint(cfg: dict[str, Any]) -> dict[str, Any]:
    """Version 0's settings: the whole resolved config minus `_NOT_IN_ID` (do not change)."""
    out = {}
    for key, value in copy.deepcopy(cfg).items():
        if key in _NOT_IN_ID and _NOT_IN_ID[key] is None:
            continue
        if key in _NOT_IN_ID:
            value = {k: v for k, v in value.items() if k not in _NOT_IN_ID[key]}
        out[key] = value
    out.pop("init", None)  # each run carries its own init vector
    out.get("optim", {}).pop("lr", None)  # and its own learning rate
    return out


def legacy_run_id(
    fingerprint: dict[str, Any], lr: float, init: Optional[list[float]], resample: int, seed: int, scheme: str = CASE
) -> str:
    """Version 0's run id (before ID_VERSION), given `legacy_fingerprint`: do not change."""
    fields = {
        "settings": fingerprint,
        "lr": lr,
        "init": init,
        "resample": resample,
        "seed": seed if resample > 0 else None,
    }
    if resample > 0 and scheme != CASE:  # kept the ids of case-resampling sweeps as they were
        fields["scheme"] = scheme
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]
