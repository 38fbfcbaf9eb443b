#!/usr/bin/env bash
# The CUDA path, run for real (issue 25): one script for a machine with an NVIDIA GPU.
#
#   bash benchmarks/gpu_check.sh --fetch-wheels        here, with network: the pure-Python dependencies into .whl/
#   bash benchmarks/gpu_check.sh --out "$OUT"          on the GPU machine (the device tool: carry .whl)
#   bash benchmarks/gpu_check.sh --cpu-dry-run --out /tmp/gc    on the CPU, small sizes, no install
#   bash benchmarks/gpu_check.sh --out "$OUT" --only bench     some of the steps: tests bench invariance
#
# Steps (setup always, then all others by default; a failing step is logged and the next one
# runs; the exit code is 1 if any failed):
#   setup       the CUDA build of torch: the python that holds it (the device image's python3)
#               is checked to see the GPU; the project's pure-Python dependencies (Hydra, OmegaConf,
#               antlr4, submitit) are installed from .whl/ into a private folder. No network
#               there, and a CUDA torch wheel (~1 GB) cannot travel within the tool's 64 MiB.
#   tests       pytest -m gpu (the CUDA tests), then the engine tests (-m engines: each engine
#               against the reference loop, a run across chunks) with PIPELINE_TEST_DEVICE=cuda
#               (tests/conftest.py), i.e. every problem and config of theirs on train.device=cuda
#   bench       benchmarks/bench_engines.py: tdm_quadratic 10,000 resamples x 10,000 epochs (gram;
#               batched, all 10,000 epochs on the GPU, 20 scaled on the CPU) and the toy MLP
#               10,000 runs x 2,000 Adam steps, on the GPU and the same machine's CPU cores,
#               float32 and float64
#   invariance  benchmarks/check_invariance.py: the same runs in two grids on the GPU, bit for bit
#
# Everything lands in --out (default $OUT): gpu_check.log (the whole output), figures.jsonl
# (every figure and outcome as a record naming its device, benchmarks/figures.py) and
# summary.txt (those records as tables). --cpu-dry-run runs the same steps on the CPU at small
# sizes with the python on PATH, installing nothing: tests/e2e/test_gpu_check.py runs it.
set -uo pipefail
START="$PWD"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"

DRY=0
OUT_DIR="${OUT:-}"
STEPS=(tests bench invariance)
WHEELS="$REPO/.whl"
SITE="${GPU_CHECK_SITE:-/tmp/gpu_check_site}"
PURE_DEPS=(hydra-core omegaconf antlr4-python3-runtime submitit)

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

fetch_wheels() {
    # The versions installed here, so the GPU machine runs what the suite runs here.
    local pins
    pins=$(python -c "from importlib.metadata import version as v; print(' '.join(f'{n}=={v(n)}' for n in '${PURE_DEPS[*]}'.split()))") || exit 2
    mkdir -p "$WHEELS"
    # antlr4-python3-runtime 4.9.3 (what hydra-core 1.3 needs) is published as a source archive only: build its wheel
    python -m pip wheel --quiet --no-deps --wheel-dir "$WHEELS" $pins || exit 2
    ls -l "$WHEELS"
}

while (($#)); do
    case "$1" in
        --cpu-dry-run) DRY=1 ;;
        --out) OUT_DIR="$2"; shift ;;
        --only) STEPS=(); while (($# > 1)) && [[ "$2" != --* ]]; do STEPS+=("$2"); shift; done ;;
        --fetch-wheels) fetch_wheels; exit 0 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument '$1' (--help lists them)" >&2; exit 2 ;;
    esac
    shift
done
[[ -n "$OUT_DIR" ]] || { echo "gpu_check.sh: give --out DIR (or set OUT)" >&2; exit 2; }
[[ "$OUT_DIR" == /* ]] || OUT_DIR="$START/$OUT_DIR"
for step in "${STEPS[@]}"; do
    [[ " tests bench invariance " == *" $step "* ]] || { echo "gpu_check.sh: unknown step '$step' (tests, bench, invariance)" >&2; exit 2; }
done
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
FIGURES="$OUT_DIR/figures.jsonl"
exec > >(tee -a "$LOG") 2>&1
TEE=$!
trap 'exec >&- 2>&-; wait "$TEE"' EXIT  # the log is whole before the files go back
export PYTHONUNBUFFERED=1

if ((DRY)); then
    # The same steps on the CPU at small sizes: what the GPU run does, known to work.
    PY="${PYTHON:-python}"
    DEVICE=cpu BENCH_DEVICES=(cpu)
    TDM_RUNS=16 MLP_RUNS=16 EPOCHS=100 MLP_STEPS=50 GPU_BATCHED_EPOCHS=20 CPU_BATCHED_EPOCHS=20 REFERENCE_RUNS=1
    DRAWS=4 INVARIANCE_EPOCHS=50
    # one of the engine tests (the suite runs them all on the CPU anyway); the GPU run takes them all
    ENGINE_TESTS=(-k "run_by_run and tdm and gram and float64")
    LIMIT=600
else
    PY="${PYTHON:-python3}"  # the device image's python3 holds the CUDA build of torch
    DEVICE=cuda BENCH_DEVICES=(cuda cpu)
    # the sizes of issue 25; GPU_CHECK_<NAME> overrides one (e.g. GPU_CHECK_TDM_RUNS=1000 when time is short)
    TDM_RUNS=${GPU_CHECK_TDM_RUNS:-10000} MLP_RUNS=${GPU_CHECK_MLP_RUNS:-10000}
    EPOCHS=${GPU_CHECK_EPOCHS:-10000} MLP_STEPS=${GPU_CHECK_MLP_STEPS:-2000}
    GPU_BATCHED_EPOCHS=${GPU_CHECK_GPU_BATCHED_EPOCHS:-10000} CPU_BATCHED_EPOCHS=${GPU_CHECK_CPU_BATCHED_EPOCHS:-20}
    REFERENCE_RUNS=${GPU_CHECK_REFERENCE_RUNS:-2} DRAWS=${GPU_CHECK_DRAWS:-1000}
    INVARIANCE_EPOCHS=${GPU_CHECK_INVARIANCE_EPOCHS:-2000}
    ENGINE_TESTS=()
    LIMIT="${GPU_CHECK_STEP_LIMIT:-400}"  # seconds per command: a hang costs one step, not the lease
fi

FAILED=()
note() { "$PY" -m benchmarks.figures "$FIGURES" --add device="$DEVICE" "$@"; }

run_step() {  # name, then the command; logs its time and exit code, and keeps going
    local name="$1" start=$SECONDS rc
    shift
    echo "== $name: $*"
    timeout "$LIMIT" "$@"
    rc=$?
    echo "== $name: exit $rc after $((SECONDS - start)) s"
    ((rc == 0)) || FAILED+=("$name (exit $rc)")
    return $rc
}

step_setup() {  # in this shell: it sets PYTHONPATH for the steps after it
    if ((!DRY)); then
        if compgen -G "$WHEELS/*.whl" >/dev/null; then
            PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
                --target "$SITE" "$WHEELS"/*.whl || return 1
        else
            echo "no wheels in $WHEELS: run 'bash benchmarks/gpu_check.sh --fetch-wheels' here and carry .whl"
        fi
        export PYTHONPATH="$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH}"
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    else
        export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
    fi
    "$PY" - "$DEVICE" <<'EOF'
import sys, torch
from importlib.metadata import version
device = sys.argv[1]
print(f"python {sys.version.split()[0]} at {sys.executable}; torch {torch.__version__} (CUDA {torch.version.cuda})")
if device == "cuda":
    assert torch.version.cuda, "this torch is a CPU build: the CUDA path needs the CUDA build"
    assert torch.cuda.is_available(), "torch was built with CUDA but sees no GPU"
    free, total = torch.cuda.mem_get_info()
    print(f"GPU {torch.cuda.get_device_name()}: {free / 2**30:.1f} of {total / 2**30:.1f} GiB free")
for name in ("hydra-core", "omegaconf", "submitit", "pandas", "pyarrow", "scipy", "matplotlib", "pytest"):
    print(f"  {name} {version(name)}")
import pipeline.api  # noqa: F401 - the package and its dependencies import
EOF
}

pytest_step() {  # name, marker expression, then pytest arguments; the outcome goes to figures.jsonl too
    local name="$1" markers="$2" out="$OUT_DIR/pytest.out" rc
    shift 2
    run_step "$name" "$PY" -m pytest tests -m "$markers" -p no:cacheprovider -q -rfEs "$@" >"$out" 2>&1
    rc=$?
    cat "$out"
    note figure=pytest stage="$name: -m '$markers' $*" rc="$rc" result="$(grep -E '(passed|failed|skipped|error|no tests ran)' "$out" | tail -n 1 | tr -d '=')"
    rm -f "$out"
}

step_tests() {
    pytest_step "CUDA tests" "gpu"
    PIPELINE_TEST_DEVICE="$DEVICE" pytest_step "engine tests on $DEVICE" "engines and not gpu" "${ENGINE_TESTS[@]}"
}

step_bench() {
    local device batched
    for device in "${BENCH_DEVICES[@]}"; do
        [[ $device == cuda ]] && batched=$GPU_BATCHED_EPOCHS || batched=$CPU_BATCHED_EPOCHS
        run_step "bench on $device" "$PY" -m benchmarks.bench_engines --only tdm mlp --device "$device" \
            --dtype float32 float64 --tdm-runs "$TDM_RUNS" --epochs "$EPOCHS" --batched-epochs "$batched" \
            --mlp-runs "$MLP_RUNS" --mlp-steps "$MLP_STEPS" --reference-runs "$REFERENCE_RUNS" --record "$FIGURES"
    done
}

step_invariance() {
    run_step "batch invariance on $DEVICE" "$PY" -m benchmarks.check_invariance --device "$DEVICE" \
        --draws "$DRAWS" --epochs "$INVARIANCE_EPOCHS" --record "$FIGURES"
}

echo "gpu_check.sh $(date -Is) on $(hostname), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), dry run: $DRY"
echo "== setup"
if ! step_setup; then
    echo "== setup failed: nothing else can run"
    exit 1
fi
for step in "${STEPS[@]}"; do
    case "$step" in
        tests) step_tests ;;
        bench) step_bench ;;
        invariance) step_invariance ;;
    esac
done
"$PY" -m benchmarks.figures "$FIGURES" >"$OUT_DIR/summary.txt" && cat "$OUT_DIR/summary.txt"
if ((${#FAILED[@]})); then
    echo "gpu_check.sh: failed: ${FAILED[*]}"
    exit 1
fi
echo "gpu_check.sh: every step passed"
