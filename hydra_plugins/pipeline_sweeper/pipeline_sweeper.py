"""`hydra/sweeper=pipeline`: `pipeline-sweep -m optim.lr=0.01,0.03` runs ONE sweep whose grid holds both.

Why a sweeper of our own: a pipeline sweep already is a grid (learning rates x initial
vectors x bootstrap resamples) that one job plans, trains and aggregates into one folder
of tables, with intervals per grid cell. Hydra's basic sweeper would start one job per
value instead: N unrelated sweep folders that no table compares. This sweeper rewrites
the multirun into the single job that sweeps the same values.

The rule, per swept key:

- a key that is an axis of the grid folds into that axis, in the order given, repeats
  dropped (a repeated value would plan the same runs twice):
    `optim.lr=a,b` or `sweep.lr=a,b`          -> `sweep.lr=[a,b]`   (learning rates)
    `init=[..],[..]` or `sweep.init=[..],[..]` -> `sweep.init=[[..],[..]]` (initial vectors)
  (a swept `sweep.lr` / `sweep.init` value may itself be a list: its items join the axis);
- every other swept key (`train.epochs`, `experiment`, `sweep=...`, `sweep.resamples`,
  `sweep.seed`, `out_dir`, ...) changes every run of the sweep, or what the sweep is, so
  it has no place in one grid: refused, naming the key and printing the equivalent
  commands (one `pipeline-sweep` per value), exit code 2, nothing created;
- also refused: interval sweeps (no finite list of values), and a swept `optim.lr` /
  `init` while `sweep.lr` / `sweep.init` is set (by `sweep=lr_grid`, `sweep=init_grid`,
  an override, or swept too): that setting takes precedence over the experiment's value,
  so folding would silently replace it.

Overrides that are not sweeps pass through unchanged. The one job goes through Hydra's
configured launcher, as the basic sweeper's jobs do, so `hydra.*` settings keep working.

Where files land: `conf/config.yaml` sets `hydra.sweep.dir: ${out_dir}` and
`hydra.sweep.subdir: ""`, so the job's `.hydra/` and `sweep.log` sit in out_dir beside the
tables, as in a plain run (no `out_dir/0/`); `multirun.yaml` there keeps the command as
typed, sweeps unfolded. An out_dir not given is pinned for the job (`pinned_out_dir`).

This module must stay light: Hydra imports every `hydra_plugins` module at each start.
"""

# No `from __future__ import annotations`: Hydra executes plugin modules before they are in
# sys.modules, where dataclasses cannot resolve string annotations.
import itertools
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType, Transformer
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

COMMAND = "pipeline-sweep"
LR_AXIS, INIT_AXIS = "sweep.lr", "sweep.init"
# Swept key -> the grid axis it folds into; the experiment's own value (optim.lr, init)
# is what the axis defaults to when it is null.
AXES = {"optim.lr": LR_AXIS, LR_AXIS: LR_AXIS, "init": INIT_AXIS, INIT_AXIS: INIT_AXIS}
EXPERIMENT_KEYS = {LR_AXIS: "optim.lr", INIT_AXIS: "init"}
MAX_COMMANDS = 8  # more equivalent commands than this are summarised, not printed

# Why some refused keys have a better answer than one sweep per value.
HINTS = {
    "sweep.resamples": "draw k depends on sweep.seed and k alone, so the sweep with the largest "
    "sweep.resamples holds every draw of the smaller ones (relaunched into the same "
    "out_dir with more resamples, a sweep trains only the new draws)",
    "sweep.seed": "another seed gives other draws of the same bootstrap; for more draws, raise sweep.resamples instead",
}


class MultirunRefused(Exception):
    """A multirun that has no single-sweep equivalent; the message says what to run instead."""


@dataclass
class PipelineSweeperConf:
    _target_: str = "hydra_plugins.pipeline_sweeper.pipeline_sweeper.PipelineSweeper"
    # Overrides added before the command line's, as the basic sweeper's `params`.
    params: Optional[Dict[str, str]] = None


ConfigStore.instance().store(group="hydra/sweeper", name="pipeline", node=PipelineSweeperConf, provider="pipeline")


@dataclass
class Refusal:
    """One swept override that cannot join the grid, and why."""

    override: Override
    reason: str
    # False where one sweep per value would repeat the mistake (a value that is no learning
    # rate, an axis given twice): the reason says the fix instead.
    per_value: bool = True


@dataclass
class Fold:
    """The single job a multirun becomes, or the refusals that keep it from being one."""

    plain: List[str] = field(default_factory=list)  # overrides that are not sweeps, as given
    axes: Dict[str, List[Any]] = field(default_factory=dict)  # grid axis -> its values, parsed
    sources: Dict[str, List[str]] = field(default_factory=dict)  # grid axis -> the overrides folded in
    refusals: List[Refusal] = field(default_factory=list)

    def axis_overrides(self) -> List[str]:
        return [f"{axis}={format_list(values)}" for axis, values in self.axes.items()]

    def job_overrides(self) -> List[str]:
        return self.plain + self.axis_overrides()

    def summary(self) -> str:
        """The line that tells the user what their multirun became."""
        if not self.axes:
            return "multirun: no grid axis swept -> one sweep"
        given = " ".join(line for lines in self.sources.values() for line in lines)
        return f"multirun: {given} -> one sweep with {' '.join(self.axis_overrides())}"


def as_override_string(override: Override) -> str:
    """An override that is not a sweep, spelt so that Hydra parses it back to the same value."""
    return f"{override.get_key_element()}={override.get_value_element_as_str()}"


def format_list(values: Sequence[Any]) -> str:
    return "[" + ",".join(Transformer.str(v) for v in values) + "]"


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_vector(value: Any) -> bool:
    return isinstance(value, list) and all(is_number(v) for v in value)


def axis_of(override: Override) -> Optional[str]:
    """The grid axis a plain `key=...` override sets, if any (`+key`, `~key`, `key@pkg` are no axis)."""
    if override.type != OverrideType.CHANGE or override.package is not None:
        return None
    return AXES.get(override.key_or_group)


def swept_values(override: Override) -> List[Any]:
    return list(override.sweep_iterator())


def learning_rates(override: Override) -> List[Any]:
    """Each value of a swept `optim.lr` is one rate; one of a swept `sweep.lr` may be a list of them."""
    rates: List[Any] = []
    for value in swept_values(override):
        items = value if isinstance(value, list) and override.key_or_group == LR_AXIS else [value]
        if not all(is_number(v) for v in items):
            raise ValueError(f"learning rates must be numbers; got {Transformer.str(value)}")
        rates += items
    return rates


def initial_vectors(override: Override) -> List[Any]:
    """Each value of a swept `init` is one vector; one of a swept `sweep.init` may be a list of them."""
    vectors: List[Any] = []
    for value in swept_values(override):
        if is_vector(value):
            vectors.append(value)
        elif override.key_or_group == INIT_AXIS and isinstance(value, list) and all(map(is_vector, value)):
            vectors += value
        else:
            raise ValueError(f"initial values must be vectors of numbers, e.g. [0,0,0]; got {Transformer.str(value)}")
    return vectors


def without_repeats(values: Iterable[Any]) -> List[Any]:
    unique: List[Any] = []
    for value in values:
        if value not in unique:
            unique.append(value)
    return unique


def precedence_conflict(override: Override, axis: str, preset: Dict[str, Any], swept_keys: set) -> Optional[str]:
    """Why a swept experiment value (optim.lr, init) would not be what the sweep uses."""
    if override.key_or_group != EXPERIMENT_KEYS[axis]:
        return None
    if axis in swept_keys:
        return (
            f"{axis} is swept too and takes precedence over {override.key_or_group}: give all the values in one of them"
        )
    if preset.get(axis) is not None:
        return (
            f"{axis} is already set ({preset[axis]}, by sweep={preset.get('sweep.name')} or an override) "
            f"and takes precedence over {override.key_or_group}, so folding would replace that grid"
        )
    return None


def fold(overrides: Sequence[Override], preset: Dict[str, Any]) -> Fold:
    """Sort each override into the single job's plain overrides, a grid axis, or a refusal.

    `preset` holds the composed config's `sweep.lr`, `sweep.init` (unresolved) and
    `sweep.name`, composed without the sweeps: what the job would use if nothing folded.
    """
    result = Fold()
    swept_keys = {o.key_or_group for o in overrides if o.is_sweep_override() and axis_of(o)}
    for override in overrides:
        if not override.is_sweep_override():
            result.plain.append(as_override_string(override))
            continue
        axis = axis_of(override)
        if override.is_interval_sweep():
            result.refusals.append(
                Refusal(
                    override, "an interval has no finite list of values to run; list them, e.g. optim.lr=0.01,0.03,0.1"
                )
            )
        elif axis is None:
            result.refusals.append(Refusal(override, HINTS.get(override.key_or_group, "")))
        elif conflict := precedence_conflict(override, axis, preset, swept_keys):
            result.refusals.append(Refusal(override, conflict, per_value=axis not in swept_keys))
        else:
            try:
                values = learning_rates(override) if axis == LR_AXIS else initial_vectors(override)
            except ValueError as err:
                result.refusals.append(Refusal(override, str(err), per_value=False))
                continue
            result.axes[axis] = without_repeats(result.axes.get(axis, []) + values)
            result.sources.setdefault(axis, []).append(override.input_line or override.key_or_group)
    return result


def plain_key(line: str) -> str:
    return line.split("=", 1)[0].lstrip("+~")


def value_slug(value: Any) -> str:
    """A folder-name-safe spelling of a value: `[0,1]` -> `0_1`."""
    return re.sub(r"[^A-Za-z0-9.]+", "_", Transformer.str(value)).strip("_") or "value"


def equivalent_commands(result: Fold) -> List[List[str]]:
    """One plain `pipeline-sweep` per combination of the refused values, the grid folded.

    A user-given out_dir gets the values as a suffix: several sweeps in one folder would
    share its tables (run ids differ, so a relaunch would not tell them apart).
    """
    if not all(r.per_value and r.override.is_discrete_sweep() for r in result.refusals):
        return []
    refused = [r.override for r in result.refusals]
    out_dirs = [line for line in result.plain if plain_key(line) == "out_dir"]
    others = [line for line in result.plain if plain_key(line) != "out_dir"]
    commands = []
    for combo in itertools.product(*(swept_values(o) for o in refused)):
        fixed = [f"{o.get_key_element()}={Transformer.str(v)}" for o, v in zip(refused, combo)]
        suffix = "-".join(
            f"{o.key_or_group.split('.')[-1].split('/')[-1]}-{value_slug(v)}" for o, v in zip(refused, combo)
        )
        out = [f"{line}-{suffix}" for line in out_dirs]
        commands.append(fixed + others + result.axis_overrides() + out)
    return commands


def largest_resamples_command(result: Fold) -> List[str]:
    """`sweep.resamples=5,10` alone has a one-sweep answer: the largest, which holds the other's draws."""
    if len(result.refusals) != 1 or result.refusals[0].override.key_or_group != "sweep.resamples":
        return []
    override = result.refusals[0].override
    values = swept_values(override) if override.is_discrete_sweep() else []
    if not values or not all(isinstance(v, int) for v in values):
        return []
    return [f"sweep.resamples={max(values)}"] + result.plain + result.axis_overrides()


def shell_command(overrides: Sequence[str]) -> str:
    return " ".join([COMMAND, *(shlex.quote(o) for o in overrides)])


def refusal_message(result: Fold) -> str:
    """One message: each refused key and why, then what to run instead."""
    lines = [
        "error: `pipeline-sweep -m` folds only the grid's axes into one sweep (optim.lr or sweep.lr: "
        "learning rates; init or sweep.init: initial vectors), so this multirun cannot be one sweep:"
    ]
    for refusal in result.refusals:
        why = refusal.reason or "it changes every run of the sweep, so each value is a sweep of its own"
        lines.append(f"  - {refusal.override.key_or_group} ({refusal.override.input_line}): {why}")
    commands = equivalent_commands(result)
    if commands:
        lines.append("Run one sweep per value instead:")
        lines += [f"  {shell_command(c)}" for c in commands[:MAX_COMMANDS]]
        if len(commands) > MAX_COMMANDS:
            lines.append(f"  ... ({len(commands)} commands in all)")
    if one_sweep := largest_resamples_command(result):
        lines += ["or one sweep, the largest:", f"  {shell_command(one_sweep)}"]
    return "\n".join(lines)


def preset_axes(config: DictConfig) -> Dict[str, Any]:
    """The composed config's grid axes, unresolved: `sweep=lr_grid` shows as its `${scaled:...}`."""
    sweep = OmegaConf.select(config, "sweep", default=None)
    raw = OmegaConf.to_container(sweep, resolve=False) if isinstance(sweep, DictConfig) else {}
    return {LR_AXIS: raw.get("lr"), INIT_AXIS: raw.get("init"), "sweep.name": raw.get("name")}


class PipelineSweeper(Sweeper):
    """Launch a multirun over the grid's axes as one pipeline sweep (see the module docstring)."""

    def __init__(self, params: Optional[Dict[str, str]] = None) -> None:
        super().__init__()
        self.params = dict(params or {})
        self.hydra_context: Optional[HydraContext] = None
        self.config: Optional[DictConfig] = None
        self.launcher: Optional[Launcher] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: List[str]) -> Any:
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        try:
            job = self.single_job(arguments)
        except MultirunRefused as err:
            # Exit here, not by raising: Hydra would print any exception with a traceback and exit 1.
            print(err, file=sys.stderr)
            sys.exit(2)
        self.validate_batch_is_legal([job])
        out_dir = Path(str(self.config.hydra.sweep.dir))
        out_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, out_dir / "multirun.yaml")  # the command as given, sweeps unfolded
        returns: Sequence[JobReturn] = self.launcher.launch([job], initial_job_idx=0)
        for ret in returns:
            _ = ret.return_value  # re-raises a failed job's exception, as the basic sweeper does
        return [returns]

    def single_job(self, arguments: List[str]) -> List[str]:
        """The overrides of the one job this multirun becomes; prints what was folded."""
        assert self.config is not None and self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        given = [f"{k}={v}" for k, v in self.params.items()] + list(arguments)
        result = fold(parser.parse_overrides(given), preset_axes(self.config))
        if result.refusals:
            raise MultirunRefused(refusal_message(result))
        print(result.summary())
        return result.job_overrides() + self.pinned_out_dir(result)

    def pinned_out_dir(self, result: Fold) -> List[str]:
        """`out_dir=<the folder>` unless given: the default out_dir holds `${now:...}`, and the
        job composes its config again, a second later perhaps; pinning it keeps Hydra's sweep
        folder, multirun.yaml and the job's tables in one folder."""
        assert self.config is not None
        if any(plain_key(line) == "out_dir" for line in result.plain) or "out_dir" not in self.config:
            return []
        return [f"out_dir={Transformer.str(str(self.config.out_dir))}"]
