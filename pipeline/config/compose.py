"""Compose a config from `conf/` and command-line overrides, with every failure as a ConfigError.

Hydra reports a bad override (a value of the wrong type, a misspelt key, an unknown
option of a group, a syntax error) by printing its own text and exiting with code 1,
and a resolver that fails (`${scaled:${optim.lr},...}` on text) by a traceback. The
console entry points compose here first, so such mistakes end like every other one:
one message naming the key, the value and the rule, exit code 2, before anything runs.
"""

from __future__ import annotations

import difflib
from typing import Any, Optional

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from pipeline.config.schema import to_container
from pipeline.config.shipped import CONF_DIR
from pipeline.core.errors import ConfigError


def _first_line(err: BaseException) -> str:
    """An OmegaConf message without its `full_key: ...` / `object_type=...` trailer."""
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _syntax_problems(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(problems, the overrides that parse): each one parsed alone, so every bad one is named."""
    parser, problems, good = OverridesParser.create(), [], []
    for override in overrides:
        try:
            parser.parse_overrides([override])
        except OverrideParseException as err:
            lines = str(err).split("\nSee https://hydra.cc")[0].strip().splitlines()
            reason = " ".join(line.strip() for line in lines if not line.startswith("Error parsing override"))
            problems.append(
                f"`{_override_key(override)}`: override {override!r} cannot be read: {reason} "
                "(Hydra's override grammar: key=value, lists as [a,b], quote text with "
                "special characters)"
            )
        else:
            good.append(override)
    return problems, good


def _culprit(err: Exception, overrides: list[str]) -> Optional[str]:
    """The override a composition error is about, if it can be told."""
    text = str(err)
    key = str(getattr(err.__cause__, "full_key", None) or "").split("[")[0]
    latest_first = overrides[::-1]  # of two overrides of one key, Hydra applies (and fails on) the last
    for matches in (
        lambda o: text.endswith(f"override {o}"),
        lambda o: bool(key) and _override_key(o) == key,
        lambda o: f"'{_override_key(o)}'" in text,
    ):  # "Could not override 'train.epoch'"
        found = [o for o in latest_first if matches(o)]
        if found:
            return found[0]
    return None


def is_unknown_key(err: Exception, override: Optional[str]) -> bool:
    """Whether Hydra refused `override` because its key is not in the config (a misspelling)."""
    cause = err.__cause__
    return cause is not None and "not in" in str(cause) and bool(override) and not str(override).startswith("+")


def config_keys(node: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a composed config (values left unresolved)."""
    keys = []
    for name, value in node.items_ex(resolve=False) if isinstance(node, DictConfig) else node.items():
        key = f"{prefix}{name}"
        keys.append(key)
        if isinstance(value, (DictConfig, dict)):
            keys += config_keys(value, key + ".")
    return keys


def nearest_keys(key: str, keys: list[str], n: int = 2) -> list[str]:
    """The valid keys closest to a misspelt one: a sibling with a like name (`optim.lrr`:
    `optim.lr`), else any key like the whole path (`trian.epochs`: `train.epochs`)."""
    parent, _, name = key.rpartition(".")
    siblings = {k.rpartition(".")[2]: k for k in keys if k.rpartition(".")[0] == parent}
    found = difflib.get_close_matches(name, list(siblings), n=n, cutoff=0.6)
    return [siblings[f] for f in found] or difflib.get_close_matches(key, keys, n=n, cutoff=0.8)


def unknown_key_problem(override: str, keys: list[str]) -> str:
    """`optim.lrr=0.1`: "did you mean `optim.lr`?" before the hint that `+key` adds a new key."""
    key = _override_key(override)
    near = nearest_keys(key, keys)
    guess = f"did you mean {' or '.join(f'`{k}`' for k in near)}? " if near else "misspelt? "
    return f"`{key}` is not a config key: {guess}(`+{override}` adds a new key)"


def explain_composition_error(err: Exception, override: Optional[str]) -> str:
    """One line naming the key, the value and the rule, for an error Hydra raised while composing."""
    if isinstance(err, MissingConfigException):
        group, _, option = str(err.missing_cfg_file or "").rpartition("/")
        options = ", ".join(err.options or [])
        if group:
            return f"`{group}`: no option {option!r}; available: {options or '(none)'}"
        return f"config {err.missing_cfg_file!r} not found" + (f"; available: {options}" if options else "")
    cause = err.__cause__
    key = getattr(cause, "full_key", None) or (_override_key(override) if override else None)
    where = f" (override {override})" if override else ""
    if is_unknown_key(err, override):
        return f"`{key}` is not a config key ({_first_line(cause)}): misspelt? `+{override}` adds a new key{where}"
    reason = _first_line(cause) if cause is not None else _first_line(err)
    return f"`{key}`: {reason}{where}" if key else f"{reason}{where}"


def explain_resolution_error(err: OmegaConfBaseException) -> str:
    """A value that cannot be resolved (an interpolation, a resolver, a missing required key)."""
    key = getattr(err, "full_key", None) or "?"
    if isinstance(err, MissingMandatoryValue):
        return f"`{key}` must be set: it has no default (e.g. {key}=...)"
    return f"`{key}` cannot be resolved: {_first_line(err)}"


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """`to_container`, with a value that cannot be resolved as a ConfigError naming its key."""
    try:
        return to_container(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError([explain_resolution_error(err)]) from err


def compose_config(overrides: list[str], config_name: str = "config") -> dict[str, Any]:
    """The resolved config `conf/<config_name>.yaml` with `overrides` gives, as the entry points
    see it; a ConfigError listing every bad override Hydra would refuse (one at a time)."""
    problems, remaining = _syntax_problems(list(overrides))
    unknown: dict[int, str] = {}  # problems about a misspelt key: given nearest keys once the rest composes
    while True:
        try:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                cfg = compose(config_name, overrides=remaining)
        except (ConfigCompositionException, MissingConfigException) as err:
            culprit = _culprit(err, remaining)
            if culprit is not None and is_unknown_key(err, culprit):
                unknown[len(problems)] = culprit
            problems.append(explain_composition_error(err, culprit))
            # a value override can be left out to look for more; a group choice cannot (what
            # follows would be about the wrong experiment), nor an error we cannot place
            if culprit is None or isinstance(err, MissingConfigException):
                raise ConfigError(problems) from err
            remaining = [o for o in remaining if o != culprit]
            continue
        except Exception as err:  # noqa: BLE001 - any other composition failure is the user's config too
            raise ConfigError(problems + [f"the config cannot be composed: {_first_line(err)}"]) from err
        if problems:
            keys = config_keys(cfg) if unknown else []
            problems = [unknown_key_problem(unknown[i], keys) if i in unknown else p for i, p in enumerate(problems)]
            raise ConfigError(problems)
        return resolved(cfg)
