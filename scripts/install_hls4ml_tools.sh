#!/usr/bin/env bash
# Set-up for the hls4ml flow's C simulation: g++ (hls4ml compiles its C-sim with it; the
# ap_fixed headers ship with hls4ml). Idempotent; run as root on Debian 12.
# Usage: bash scripts/install_hls4ml_tools.sh [VENV]   (VENV defaults to .venv)
set -euo pipefail
VENV="${1:-.venv}"
if ! command -v g++ >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends g++ make
fi
if [ -x "$VENV/bin/python" ]; then
    if ! "$VENV/bin/python" -c "import hls4ml, qonnx" >/dev/null 2>&1; then
        "$VENV/bin/pip" install -q "hls4ml==1.3.0" "qonnx==1.0.0"
    fi
    "$VENV/bin/python" -c "import hls4ml; print('hls4ml', hls4ml.__version__)"
fi
g++ --version | head -n 1
# Vendor HLS tools (vitis-run / vivado_hls) are not installable here; `opq-hw build --synth`
# prints the exact command to run where they are.
