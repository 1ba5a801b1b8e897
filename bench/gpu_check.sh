#!/usr/bin/env bash
# bench/gpu_check.sh OUTDIR: mlxp's first run on a GPU, in under 8 minutes (issue 11).
#
# Phases, each under its own time limit (the limits sum to 447 s): install the wheels found in
# .whl/ beside the checkout (bench/gpu_wheels.sh fetches them; the GPU machine has no network)
# into a private folder put first on PYTHONPATH; report the environment; run the test suite on
# the CuPy cases, then on the other CUDA cases (torch:cuda, jax:cuda: pytest -k on the backend
# fixture's ids, e.g. test_x[cupy:cuda:0-float32]); time bench/run.py on cupy and torch:cuda:0
# for OLS and logistic 1e6×100, and with numpy, PyTorch's own network (CUDA, CPU) and
# scikit-learn beside them for MLP epochs of 50 000 samples and CNN epochs of 8 192 images;
# a CPU reference (numpy, scikit-learn) for OLS and logistic at 1e5×100; CuPy's MLP and CNN
# epochs at batches 32 and 128 with the step replayed from CUDA graphs against eager steps. Writes the logs, each
# run's results.json/.md/plots under OUTDIR/bench/NAME/ and OUTDIR/summary.md, printed at the
# end. Exit status: 0 if every phase succeeded.
#
# GPU_CHECK_DRY=1: the same phases at CPU-sized work (a smoke test of this script, seconds).
set -uo pipefail
OUT=${1:?usage: bench/gpu_check.sh OUTDIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.." || exit 2
export PY=${PYTHON:-python3}
DRY=${GPU_CHECK_DRY:-0}
export SITE=${GPU_CHECK_SITE:-/tmp/mlxp-gpu-site}
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false # JAX would take 75% of the GPU in every process
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INDEX=1 # no network there: pip must not try it
# float32 for every library, tests and timings alike: no TF32 products (cuDNN's convolutions
# in native PyTorch's CNN, JAX's matrix products, by default), so the timings compare like
export NVIDIA_TF32_OVERRIDE=0 JAX_DEFAULT_MATMUL_PRECISION=highest
SUMMARY=()
FAILED=0

summary() { # OUTDIR/summary.md as it stands, rewritten after every phase
    {
        echo "# mlxp GPU check ($(date -u '+%Y-%m-%d %H:%M UTC'), ${SECONDS} s)"
        echo
        echo "| phase | result | took | limit |"
        echo "|---|---|---|---|"
        printf '%s\n' "${SUMMARY[@]}"
        for log in "$OUT"/tests-*.log; do
            [ -f "$log" ] || continue
            echo
            echo "$(basename "$log" .log): $(grep -E '[0-9]+ (passed|failed|error)' "$log" | tail -n 1)"
        done
        for md in "$OUT"/bench/*/results.md "$OUT"/bench/graphs.md; do
            [ -f "$md" ] || continue
            echo
            cat "$md"
        done
    } >"$OUT/summary.md"
}

phase() { # phase NAME LIMIT_S COMMAND...: run it, its output in OUTDIR/NAME.log
    local name=$1 limit=$2 start=$SECONDS rc
    shift 2
    echo "== $name (limit ${limit} s): $*" >&2
    if declare -F "$1" >/dev/null; then # a function of this script: through a child bash
        export -f "${1?}"
        set -- bash -c "$1"
    fi
    timeout -k 3 "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    local state=ok
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then state="timed out"; elif [ "$rc" -ne 0 ]; then state="failed ($rc)"; fi
    [ "$state" = ok ] || FAILED=1
    SUMMARY+=("| $name | $state | $((SECONDS - start)) s | $limit s |")
    tail -n 3 "$OUT/$name.log" >&2
    summary # a run cut short still leaves the phases it finished
}

# shellcheck disable=SC2329 # install_wheels and environment run through phase
install_wheels() { # those this Python takes: pure, stable-ABI (abi3), or built for its version
    local tag wheel wheels=()
    tag=$("$PY" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
    for wheel in .whl/*.whl; do
        case $wheel in
        *-none-any.whl | *-abi3-* | *-"$tag"-*) wheels+=("$wheel") ;;
        *) echo "skipped (not for $tag): $wheel" ;;
        esac
    done
    if [ "${#wheels[@]}" -eq 0 ]; then # fine if the packages are there already
        echo "no wheel in .whl/ for $tag"
        "$PY" -c "import array_api_compat"
        return
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "${wheels[@]}"
}

# shellcheck disable=SC2329
environment() {
    command -v nvidia-smi >/dev/null && nvidia-smi -L
    "$PY" -m mlxp info
    "$PY" -m pip list 2>/dev/null | grep -i -E "^(cupy-cuda[0-9]+x|torch|jax|jaxlib|numpy|scikit-learn|array-api-compat|array-api-strict|dask) "
}

if compgen -G ".whl/*.whl" >/dev/null; then
    phase wheels 30 install_wheels
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
elif ! "$PY" -c "import array_api_compat" 2>/dev/null; then # every later phase would fail
    SUMMARY+=("| wheels | missing: no .whl/ beside the checkout (carry it), no array-api-compat | 0 s | 30 s |")
    FAILED=1
fi
phase environment 25 environment

# -v: a killed run still names each result; a module that cannot be imported there (a test
# dependency missing) loses its own tests only
PYTEST=("$PY" -m pytest -v -p no:cacheprovider -rfE --durations=15 --continue-on-collection-errors)
"$PY" -c "import xdist" 2>/dev/null && [ "$DRY" = 0 ] && PYTEST+=(-n 8)
"$PY" -c "import pytest_timeout" 2>/dev/null && PYTEST+=(--timeout 120)
if [ "$DRY" = 0 ]; then
    phase tests-cupy 94 "${PYTEST[@]}" -k "cupy"
    phase tests-cuda 98 "${PYTEST[@]}" -k "cuda and not cupy" # ~1040 tests, JAX compiling for the GPU
else
    phase tests-cupy 60 "${PYTEST[@]}" tests/test_gpu_contact.py -k "cupy"
fi

# bench NAME LIMIT_S RUN.PY-OPTIONS...: one bench/run.py invocation into OUTDIR/bench/NAME/
bench() {
    local name=$1 limit=$2
    shift 2
    phase "bench-$name" "$limit" "$PY" bench/run.py "$@" --out "$OUT/bench/$name"
}
GPUS=cupy,torch:cuda:0
if [ "$DRY" = 0 ]; then
    # The solvers on the GPUs at 1e6×100 (float64, 800 MB); scikit-learn and NumPy, which take
    # minutes there, at 1e5×100 in the CPU reference below.
    bench linear 35 --models linear --backends "$GPUS" --sizes linear=1000000x100 --repeat 2 --no-peers
    bench logistic 45 --models logistic --backends "$GPUS" --sizes logistic=1000000x100 --repeat 2 --no-peers
    # Epochs on the GPUs and NumPy, beside PyTorch's own network (CUDA and CPU) and scikit-learn.
    bench mlp 40 --models mlp --backends "$GPUS,numpy" --sizes mlp=50000x256 --repeat 2
    bench cnn 40 --models cnn --backends "$GPUS,numpy" --sizes cnn=8192x8 --repeat 2
    bench cpu-reference 20 --models linear,logistic --backends numpy --sizes 100000x100 --repeat 1
    # CuPy's steps replayed from CUDA graphs (compile=True) against eager ones, at small batches
    phase bench-graphs 20 "$PY" bench/compiled_steps.py cupy:cuda:0 --n 4096 --repeat 2 --out "$OUT/bench/graphs.md"
else
    bench linear 60 --models linear --backends numpy --quick --repeat 1 --no-peers
    phase bench-graphs 60 "$PY" bench/compiled_steps.py jax:cpu --models mlp --n 256 --batches 32 \
        --epochs 1 --repeat 1 --out "$OUT/bench/graphs.md"
fi

summary
cat "$OUT/summary.md"
exit "$FAILED"
