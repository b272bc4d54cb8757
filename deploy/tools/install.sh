#!/usr/bin/env bash
# Install the deploy validation tools, pinned, into .local/tools (git-ignored):
#   helm       built from its Go module (the Go module proxy), with nice: builds are CPU-heavy
#   kustomize  built from its Go module, so the plain manifests render without kubectl
#   kubernetes-validate  from PyPI, in its own venv (the project's venv is locked by uv)
#   promtool + prometheus  Debian's `prometheus` package (promtool checks rules; the binary
#              runs the dashboard/alert integration test)
# Idempotent: a tool already at its pinned version is left alone.
set -euo pipefail

HELM_VERSION=v3.20.2
KUSTOMIZE_VERSION=v5.5.0
KUBERNETES_VALIDATE_VERSION=1.37.0
PROMETHEUS_DEB_VERSION=2.42.0+ds-5+deb12u1

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS="${SCHEDULER_TOOLS_DIR:-$ROOT/.local/tools}"
BIN="$TOOLS/bin"
mkdir -p "$BIN"

say() { printf '[deploy-tools] %s\n' "$*"; }

go_tool() { # name module version
    local name=$1 module=$2 version=$3 stamp="$BIN/.$1.version"
    if [[ -x "$BIN/$name" && "$(cat "$stamp" 2>/dev/null)" == "$version" ]]; then
        say "$name $version already installed"
        return
    fi
    command -v go >/dev/null || { say "go is required to build $name"; exit 1; }
    say "building $name $version from the Go module proxy (a few minutes)"
    GOBIN="$BIN" CGO_ENABLED=0 GOFLAGS=-buildvcs=false nice -n 10 go install "$module@$version"
    echo "$version" >"$stamp"
}

go_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION"
go_tool kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION"

VALIDATE_VENV="$TOOLS/kubernetes-validate"
if [[ "$("$VALIDATE_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null)" != "$KUBERNETES_VALIDATE_VERSION" ]]; then
    say "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into its own venv"
    python3 -m venv "$VALIDATE_VENV"
    "$VALIDATE_VENV/bin/python" -m pip install -q --disable-pip-version-check \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
else
    say "kubernetes-validate $KUBERNETES_VALIDATE_VERSION already installed"
fi
ln -sf "$VALIDATE_VENV/bin/kubernetes-validate" "$BIN/kubernetes-validate"

if [[ "$(dpkg-query -W -f='${Version}' prometheus 2>/dev/null)" != "$PROMETHEUS_DEB_VERSION" ]]; then
    say "installing Debian's prometheus $PROMETHEUS_DEB_VERSION (promtool)"
    export DEBIAN_FRONTEND=noninteractive
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
    $SUDO apt-get update -qq
    # The package's own service is not wanted: tests start prometheus themselves.
    $SUDO apt-get install -y -qq --no-install-recommends "prometheus=$PROMETHEUS_DEB_VERSION"
    if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
        $SUDO systemctl disable --now prometheus || true
    fi
else
    say "prometheus $PROMETHEUS_DEB_VERSION already installed"
fi
ln -sf "$(command -v promtool)" "$BIN/promtool"
ln -sf "$(command -v prometheus)" "$BIN/prometheus"

say "tools in $BIN:"
"$BIN/helm" version --short
echo "kustomize $(cat "$BIN/.kustomize.version") (go install stamps no version into the binary)"
"$BIN/kubernetes-validate" --version
"$BIN/promtool" --version 2>&1 | head -1
