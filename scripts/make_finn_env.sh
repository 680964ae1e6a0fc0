#!/usr/bin/env bash
# Create the FINN environment `.venv-finn` at the repository root (idempotent).
#
# FINN (the `finn-plus` package) cannot share opq-hw's main environment: its exact pins on
# onnx, onnxruntime, protobuf, matplotlib, scikit-learn and brevitas conflict with ours, and
# a plain `pip install finn-plus` fails on a setuptools clash. Recipe (verified):
#   1. a fresh venv with torch==2.13.0 (CPU build) and brevitas==0.13.4 (finn-plus pins 0.13.0,
#      we use the same Brevitas as the main environment so exported models agree),
#   2. finn-plus's other declared requirements, with its own pins,
#   3. `pip install --no-deps finn-plus==1.6.1`,
#   4. psutil (imported by finn but not declared).
# Left out of finn-plus's requirements: cmake and the test extras (FINN's C++ simulation builds and
# its own test suite); the transformations, Python execution and estimates opq-hw runs need neither.
# Measured: ~8 min on a 2-core machine shared with other jobs (the torch CPU wheel from the local
# wheel directory; everything else downloaded).
# opq_hw never imports FINN: opq_hw/flows/finn_flow.py runs opq_hw/flows/finn_worker.py with
# `.venv-finn/bin/python` and reads its JSON answer.
#
# Usage: scripts/make_finn_env.sh            (reuses a working .venv-finn)
#        FORCE=1 scripts/make_finn_env.sh    (rebuilds it)
#        PYTHON=/path/to/python3.11 scripts/make_finn_env.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-finn"
FINN_VERSION="1.6.1"

check_env() {
    "$VENV/bin/python" - <<'EOF' 2>/dev/null
import importlib.metadata as md
assert md.version("finn-plus") == "1.6.1"
import psutil, qonnx, brevitas  # noqa: F401
from finn.util.settings import initialize_dummy_settings
initialize_dummy_settings()
import finn.transformation.streamline  # noqa: F401
import finn.transformation.fpgadataflow.convert_to_hw.quantized_matrix_vector_activation  # noqa: F401
EOF
}

if [ "${FORCE:-0}" != "1" ] && [ -x "$VENV/bin/python" ] && check_env; then
    echo "make_finn_env: $VENV is ready (reused; FORCE=1 to rebuild)"
    exit 0
fi

pick_python() {
    if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
    for c in python3.11 python3.12 python3; do
        if command -v "$c" >/dev/null 2>&1 &&
           "$c" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else 1)'; then
            command -v "$c"; return
        fi
    done
    echo "make_finn_env: finn-plus needs Python >= 3.11; none found (set PYTHON=...)" >&2
    exit 1
}
PY="$(pick_python)"
# Debian's python3 ships venv/ensurepip separately (python3-venv)
if ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    else
        echo "make_finn_env: $PY has no venv/ensurepip; install python3-venv (apt-get install python3-venv)" >&2
        exit 1
    fi
fi

start=$(date +%s)
rm -rf "$VENV"
"$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check --no-input)
"${PIP[@]}" --upgrade pip wheel "setuptools<81"
# torch exactly as the main environment gets it (the CPU build: pip prefers the local
# 2.13.0+cpu wheel found through PIP_FIND_LINKS on our machines).
"${PIP[@]}" "torch==2.13.0"
# finn-plus 1.6.1's declared requirements (its METADATA), brevitas moved to 0.13.4.
"${PIP[@]}" \
    "brevitas==0.13.4" \
    "bitstring>=4.3.1,<4.4.0" \
    "click>=8.1.8,<9.0.0" \
    "mashumaro[yaml]>=3.15,<4.0" \
    "matplotlib>=3.10.9,<3.11.0" \
    "mip==1.17.0" \
    "numpy>=2.4.6,<2.5.0" \
    "onnx==1.21.0" \
    "onnx-ir>=0.1.15" \
    "onnx-passes>=0.4.0" \
    "onnxoptimizer>=0.4.2,<0.5.0" \
    "onnxruntime==1.25.1" \
    "onnxscript>=0.7.0" \
    "pandas>=2.3.1,<2.4.0" \
    "protobuf==5.29.6" \
    "pybind11==3.0.1" \
    "pydantic>2.0" \
    "pyyaml>=6.0.2,<6.1.0" \
    "qonnx==1.0.0" \
    "rich>=13.9.4,<14.0.0" \
    "scikit-learn>=1.7.2,<1.8.0" \
    "scipy>=1.17.0,<1.18.0" \
    "termcolor>=2.5.0,<3.0.0" \
    psutil
"${PIP[@]}" --no-deps "finn-plus==$FINN_VERSION"

if ! check_env; then
    echo "make_finn_env: $VENV was built but FINN does not import; see the pip output above" >&2
    exit 1
fi
echo "make_finn_env: $VENV ready in $(( $(date +%s) - start )) s"
