"""The launcher's config: one typed config per backend, as Hydra's submitit launcher plugin has.

`BaseLauncherConf` holds what every backend takes; `DebugConf`, `LocalConf` and `SlurmConf`
add their own keys, so a key the chosen backend does not use (`launcher=local
launcher.partition=short`) fails when Hydra composes the config, naming it. Each is in
Hydra's ConfigStore as `launcher_schema/<cluster>`; `conf/launcher/<name>.yaml` (the
users' files) start from it in their defaults list.

`cluster` is submitit's name of the backend (`AutoExecutor(cluster=...)`) and what a sweep
folder's `config.yaml` records: `launcher_conf` rebuilds the typed config from that dict,
including the flat launcher dicts of folders written before these classes (every key of
every backend in one dict: the keys of other backends are left out).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Optional

from omegaconf import MISSING

from pipeline.core.errors import ConfigError


@dataclass
class BaseLauncherConf:
    """What every backend takes."""

    name: str = MISSING  # the conf/launcher/ file it came from (slurm_gpu, ...)
    cluster: str = MISSING  # the backend: debug | local | slurm
    # training runs one task (array task) trains; auto: sized from the plan, the engine and
    # the parallel slots (pipeline/launch/chunking.py); a number pins it
    runs_per_task: Any = "auto"
    progress: bool = True  # a progress bar of runs done / total
    dry_run: bool = False  # print the plan (and for slurm the arrays and sbatch script); run nothing
    wait_lock: bool = False  # another launch holds the sweep folder: wait for it (false: stop, exit 2)
    force: bool = False  # --force: also train runs whose earlier SLURM tasks are still queued or running
    new_sweep: bool = False  # --new-sweep: move the sweep out_dir holds to out_dir/replaced/<time>/ first


@dataclass
class DebugConf(BaseLauncherConf):
    """In this process, one task after the other (submitit's DebugExecutor): for pdb and tests."""

    name: str = "debug"
    cluster: str = "debug"


@dataclass
class LocalConf(BaseLauncherConf):
    """Subprocesses on this machine (submitit's LocalExecutor)."""

    name: str = "local"
    cluster: str = "local"
    max_parallel: int = 0  # tasks at once (0: one per CPU core)
    timeout_min: int = 60  # a task running longer is stopped


@dataclass
class SlurmConf(BaseLauncherConf):
    """SLURM job arrays (submitit's SlurmExecutor). Keys carry submitit's names;
    slurm/README.md maps each to its sbatch option."""

    name: str = "slurm"
    cluster: str = "slurm"
    timeout_min: int = 60  # the task's wall-clock limit (sbatch --time)
    wait: bool = False  # block until the sweep ends (false: submit and return)
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    cpus_per_task: int = 1
    mem_gb: float = 2.0
    gpus_per_node: int = 0
    gres: Optional[str] = None
    array_parallelism: int = 256  # at most this many array tasks at once (the %N throttle)
    signal_delay_s: int = 90  # USR2 this long before the time limit: checkpoint and requeue
    max_num_timeout: int = 3  # requeues after a timeout before giving up
    max_array_size: Optional[int] = None  # None: the cluster's MaxArraySize (scontrol)
    additional_parameters: dict[str, Any] = field(default_factory=dict)  # other sbatch --key=value
    setup: list[str] = field(default_factory=list)  # shell lines before the task (module load, venv)


LAUNCHER_CONFS: dict[str, type[BaseLauncherConf]] = {"debug": DebugConf, "local": LocalConf, "slurm": SlurmConf}
CLUSTERS = tuple(LAUNCHER_CONFS)


def launcher_conf(launcher: Mapping[str, Any]) -> BaseLauncherConf:
    """The typed config of a resolved launcher dict, chosen by its `cluster`; keys of other
    backends (an old folder's flat launcher dict has all of them) are left out."""
    cluster = launcher.get("cluster")
    if cluster not in LAUNCHER_CONFS:
        raise ConfigError([f"`launcher.cluster` must be one of {', '.join(CLUSTERS)}; got {cluster!r}"])
    conf_type = LAUNCHER_CONFS[cluster]
    known = {f.name for f in fields(conf_type)}
    return conf_type(**{key: value for key, value in launcher.items() if key in known})
