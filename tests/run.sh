#!/usr/bin/env bash
# The project's test command (README, "Run the tests"); .ci/run calls it.
# Installs the CPU build of torch first (an unpinned torch would pull a multi-GB CUDA
# build), then the package with its test extra, starts the one-node SLURM cluster the
# slurm tests talk to, and runs pytest. Any failure, the cluster's included, fails it.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check torch==2.13.0
python -m pip install --quiet --disable-pip-version-check -e '.[test]'
if [ -f slurm/local-cluster.sh ]; then
    bash slurm/local-cluster.sh start
fi
exec python -m pytest "$@"
