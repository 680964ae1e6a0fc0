#!/usr/bin/env bash
# Install a headless browser for the report screenshot test (issue 3). Idempotent; run as root on
# Debian 12 (uses sudo otherwise). Installs Debian's `chromium` package only when no Chromium/Chrome
# binary is on PATH. Usage: scripts/install_browser.sh
set -euo pipefail
for b in chromium chromium-browser google-chrome; do
  if command -v "$b" >/dev/null 2>&1; then
    echo "install_browser: $b found at $(command -v "$b")"
    exit 0
  fi
done
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
echo "install_browser: chromium $(chromium --version 2>/dev/null || echo '?')"
