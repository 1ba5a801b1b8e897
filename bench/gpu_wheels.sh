#!/usr/bin/env bash
# bench/gpu_wheels.sh: fetch into .whl/ (git-ignored) the pure-Python packages the GPU machine
# lacks (array-api-compat, array-api-strict, dask and its requirements, pytest-xdist),
# at the versions installed here, as Python 3.12 wheels: that machine has no network, and
# bench/gpu_check.sh installs what it finds in .whl/. Run from anywhere, on a machine with pip.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# dask and distributed with their own requirements; pytest-xdist (8 workers on that machine's
# cores) and pytest-timeout, which bench/gpu_check.sh uses where present
PACKAGES=(array-api-compat array-api-strict dask distributed partd locket tblib zict tornado
    click cloudpickle toolz pyyaml msgpack psutil sortedcontainers urllib3
    pytest-xdist execnet pytest-timeout)
pins=()
for name in "${PACKAGES[@]}"; do
    if version=$("$PY" -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null); then
        pins+=("$name==$version")
    else
        pins+=("$name")
    fi
done
mkdir -p .whl
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl "${pins[@]}"
ls -l .whl
