"""A one-node SLURM cluster of the tests' own, never someone else's (issue 22, item 6).

`slurm/local-cluster.sh` starts a cluster in the state folder and on the ports its environment
names (default: /tmp/pipeline-slurm, ports 6817/6818, /etc/slurm/slurm.conf linked to it). The
tests must not touch a cluster they did not start, so they name a fresh state folder, two free
ports and a cluster name of their own, and leave /etc/slurm alone:

    eval "$(python tests/slurm_cluster.py env)"   # tests/run.sh: the exports, then start ... stop

`private_cluster_env` gives the same to the session fixture of tests/e2e/test_slurm.py when
pytest runs without tests/run.sh.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from pathlib import Path

MAX_ARRAY_SIZE = 5  # tests/e2e/test_slurm.py: sweeps there split into several arrays


def free_ports(n: int) -> list[int]:
    """`n` TCP ports nothing listens on now (the kernel's choice; released for the daemons)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def private_cluster_env(state: Path) -> dict[str, str]:
    """local-cluster.sh's environment for a cluster of our own in `state`."""
    ctld, slurmd = free_ports(2)
    return {
        "SLURM_LOCAL_STATE": str(state),
        "SLURM_LOCAL_CTLD_PORT": str(ctld),
        "SLURM_LOCAL_SLURMD_PORT": str(slurmd),
        "SLURM_LOCAL_CLUSTER_NAME": f"pipeline-tests-{os.getpid()}",
        "SLURM_LOCAL_LINK_ETC": "0",
        "SLURM_LOCAL_MAX_ARRAY_SIZE": str(MAX_ARRAY_SIZE),
    }


if __name__ == "__main__" and sys.argv[1:] == ["env"]:
    env = private_cluster_env(Path(tempfile.mkdtemp(prefix="pipeline-tests-slurm.")))
    print("\n".join(f"export {key}={value}" for key, value in env.items()))
