"""Launcher backends as classes over typed configs (pipeline/config/launcher.py, launch/backends.py).

- each conf/launcher/*.yaml composes to its typed config, and a key of another backend is
  refused by Hydra naming it;
- the backend is chosen by `cluster`, also from an old folder's flat launcher dict;
- the hooks in which the backends differ: slots, threads, submitit's parameters, checks.
"""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from pipeline.config.compose import compose_config
from pipeline.config.launcher import DebugConf, LocalConf, SlurmConf, launcher_conf
from pipeline.core.errors import ConfigError
from pipeline.launch.backends import DebugBackend, LocalBackend, SlurmBackend, backend_for, cpu_count
from tests.conftest import REPO

BASE = ["experiment=linear_synthetic", "sweep=single", "out_dir=/tmp/unused"]
OLD_FLAT = OmegaConf.to_container(OmegaConf.load(REPO / "tests/fixtures/legacy/sweep/config.yaml"))["launcher"]


@pytest.mark.parametrize(
    "choice, conf_type, backend_type",
    [
        ("debug", DebugConf, DebugBackend),
        ("local", LocalConf, LocalBackend),
        ("slurm", SlurmConf, SlurmBackend),
        ("slurm_gpu", SlurmConf, SlurmBackend),
    ],
)
def test_each_launcher_file_composes_to_its_typed_config_and_backend(choice, conf_type, backend_type):
    launcher = compose_config([*BASE, f"launcher={choice}"])["launcher"]
    backend = backend_for(launcher)
    assert type(backend) is backend_type and type(backend.conf) is conf_type
    assert launcher["name"] == choice and set(launcher) == set(conf_type.__dataclass_fields__)


def test_a_key_of_another_backend_is_refused_when_composing_naming_it():
    with pytest.raises(ConfigError, match=r"`launcher.partition` is not a config key"):
        compose_config([*BASE, "launcher=local", "launcher.partition=short"])
    with pytest.raises(ConfigError, match=r"`launcher.max_parallel` is not a config key"):
        compose_config([*BASE, "launcher=slurm", "launcher.max_parallel=4"])
    slurm = compose_config([*BASE, "launcher=slurm", "launcher.partition=short", "launcher.wait=true"])["launcher"]
    assert slurm["partition"] == "short" and slurm["wait"] is True


def test_an_old_folders_flat_launcher_dict_gives_the_backend_of_its_cluster():
    assert OLD_FLAT["cluster"] == "debug" and "partition" in OLD_FLAT  # every backend's keys in one dict
    assert launcher_conf(OLD_FLAT) == DebugConf(runs_per_task=2, progress=False)
    as_slurm = launcher_conf({**OLD_FLAT, "cluster": "slurm", "name": "slurm", "partition": "short"})
    assert isinstance(as_slurm, SlurmConf) and as_slurm.partition == "short" and as_slurm.mem_gb == 2.0
    with pytest.raises(ConfigError, match=r"`launcher.cluster` must be one of debug, local, slurm; got 'k8s'"):
        backend_for({**OLD_FLAT, "cluster": "k8s"})


def test_the_backends_differ_in_their_hooks():
    debug, local = backend_for({"cluster": "debug"}), backend_for({"cluster": "local"})
    slurm = backend_for({"cluster": "slurm", "cpus_per_task": 4, "partition": "short", "max_array_size": 7})
    assert (debug.slots, debug.task_threads, debug.executor_parameters()) == (1, None, {})
    assert (local.slots, local.task_threads, local.executor_parameters()) == (cpu_count(), 1, {"timeout_min": 60})
    assert backend_for({"cluster": "local", "max_parallel": 3}).slots == 3
    params = slurm.executor_parameters()
    assert slurm.task_threads == 4 and params["slurm_partition"] == "short" and params["cpus_per_task"] == 4
    assert "slurm_account" not in params and "gpus_per_node" not in params  # unset: left to the cluster
    assert slurm.array_limit == 7 and not slurm.runs_here and debug.runs_here and local.runs_here
    assert local.watched_parent() is not None and debug.watched_parent() is None
    assert {key for key, _, _ in slurm.rules()} >= {"launcher.mem_gb", "launcher.max_array_size"}
    assert not {key for key, _, _ in local.rules()} & {"launcher.mem_gb", "launcher.partition"}


def test_a_slurm_launch_asks_the_controller_for_max_array_size_once(monkeypatch):
    """Where no controller answers, `scontrol` takes ~9 s to give up: a dry run (sizing, then
    the arrays) must not pay it twice."""
    from pipeline.launch import backends

    calls = []
    monkeypatch.setattr(backends, "max_array_size", lambda: calls.append(1) or 1001)
    slurm = backend_for({"cluster": "slurm"})
    assert slurm.array_limit == slurm.array_limit == 1001
    assert len(calls) == 1
    assert backend_for({"cluster": "slurm", "max_array_size": 7}).array_limit == 7 and len(calls) == 1
