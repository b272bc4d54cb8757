#!/usr/bin/env bash
# Debian's Chromium for the browser tests of the web console (Playwright drives it through its
# executable path; no browser is downloaded). Idempotent.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  echo "[chromium] $(chromium --version 2>/dev/null | head -1) already installed"
  exit 0
fi
SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
chromium --version
