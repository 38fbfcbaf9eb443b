#!/usr/bin/env bash
# The project's test command (README, "Run the tests"); .ci/run calls it.
# Installs the CPU build of torch first (an unpinned torch would pull a multi-GB CUDA
# build), then the package with its test extra and a headless browser, starts the one-node SLURM cluster the
# slurm tests talk to, and runs pytest. Any failure, the cluster's included, fails it.
#
#   bash tests/run.sh            the whole suite (what .ci/run runs): unit, integration, e2e, SLURM
#   bash tests/run.sh --fast     the fast tier (unit and integration, not slow): no browser, no cluster
#   bash tests/run.sh -k resume  any other arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check torch==2.13.0
python -m pip install --quiet --disable-pip-version-check -e '.[test]'
if [[ "${1:-}" == "--fast" ]]; then
    shift
    exec python -m pytest tests/unit tests/integration -m "not slow and not e2e" "$@"
fi
# Debian's chromium and chromedriver for the report's browser test (tests/e2e/test_report.py)
bash tests/install_browser.sh
# The SLURM tests get a one-node cluster of their own: a fresh state folder, free ports, its own
# cluster name, /etc/slurm left alone, stopped (and its folder removed) when the tests end. A
# cluster someone else runs on this machine (slurm/local-cluster.sh's default /tmp/pipeline-slurm,
# say) is never touched. MaxArraySize 5, what tests/e2e/test_slurm.py expects, so sweeps there
# split into several arrays.
eval "$(python tests/slurm_cluster.py env)"
trap 'bash slurm/local-cluster.sh stop >/dev/null 2>&1 || true; rm -rf "$SLURM_LOCAL_STATE"' EXIT
bash slurm/local-cluster.sh start
eval "$(bash slurm/local-cluster.sh env)"
python -m pytest "$@"
