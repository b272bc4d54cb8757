#!/usr/bin/env bash
# `make deploy-check`: validate the deploy artefacts with the pinned tools of install.sh.
#   helm lint + helm template (several value sets), every rendering and the kustomize output
#   validated offline against the Kubernetes schemas (strict: unknown fields fail), promtool on
#   the alert rules, and the unit tests of tests/unit/deploy (metrics named, chart == kustomize,
#   image/compose names).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${SCHEDULER_TOOLS_DIR:-$ROOT/.local/tools}/bin"
KUBE_VERSION=1.31.0
CHART="$ROOT/deploy/k8s/chart"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

for tool in helm kubectl kubernetes-validate promtool; do
    [[ -x "$BIN/$tool" ]] || { echo "missing $BIN/$tool: run deploy/tools/install.sh" >&2; exit 1; }
done
say() { printf '[deploy-check] %s\n' "$*"; }

validate() { # file: strict schema validation; fails on any error
    "$BIN/kubernetes-validate" --strict --quiet -k "$KUBE_VERSION" "$1"
}

say "helm lint"
"$BIN/helm" lint --strict "$CHART" --kube-version "$KUBE_VERSION"

# Value sets: defaults; existing Secret + SASL/TLS + registry; several dispatchers, no HPA,
# ServiceMonitor on; production-like: every option on (Ingress, NetworkPolicies, KEDA,
# PrometheusRule, dashboards; CRDs have no schema offline: warned, not validated).
declare -A VARIANTS=(
    [defaults]=""
    [secured]="--set secrets.existingSecret=scheduler-creds --set kafka.securityProtocol=SASL_SSL --set kafka.sasl.mechanism=SCRAM-SHA-512 --set kafka.sasl.username=scheduler --set kafka.caConfigMap=kafka-ca --set kafka.schemaRegistryUrl=https://registry.example.com --set cassandra.username=scheduler"
    [scaled]="--set dispatcher.instances=3 --set ingest.autoscaling.enabled=false --set ingest.replicas=4 --set metrics.serviceMonitor.enabled=true"
    [production]="--set secrets.existingSecret=scheduler-creds --set kafka.securityProtocol=SASL_SSL --set kafka.sasl.mechanism=SCRAM-SHA-512 --set kafka.sasl.username=scheduler --set kafka.caConfigMap=kafka-ca --set image.digest=sha256:0000000000000000000000000000000000000000000000000000000000000000 --set dispatcher.instances=3 --set ingest.kafkaEndpointPrefixes={tenant.} --set dispatcher.kafkaDestinationPrefixes={tenant.} --set ingress.enabled=true --set ingress.className=nginx --set ingress.tls[0].secretName=scheduler-tls --set ingress.tls[0].hosts[0]=scheduler.example.com --set networkPolicy.enabled=true --set bucketer.autoscaling.enabled=true --set bucketer.autoscaling.authenticationRef=kafka-auth --set metrics.serviceMonitor.enabled=true --set metrics.prometheusRule.enabled=true --set metrics.dashboards.enabled=true --set priorityClassName=scheduler --set bucketer.topologySpreadConstraints[0].maxSkew=1 --set bucketer.topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone --set bucketer.topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway --set extraEnvFrom[0].secretRef.name=scheduler-extra"
)
# The production example values file (replicas 2+, two dispatcher instances, RF 3, PDBs).
VARIANTS[values-production]="-f $CHART/values-production.yaml"
for name in "${!VARIANTS[@]}"; do
    say "helm template ($name) + schema validation"
    # shellcheck disable=SC2086 # the variant is a list of words
    "$BIN/helm" template scheduler "$CHART" --kube-version "$KUBE_VERSION" ${VARIANTS[$name]} \
        >"$OUT/chart-$name.yaml"
    validate "$OUT/chart-$name.yaml"
done

for dir in base overlays/example; do
    say "kustomize build $dir + schema validation (kubectl kustomize)"
    "$BIN/kubectl" kustomize "$ROOT/deploy/k8s/kustomize/$dir" >"$OUT/kustomize-${dir//\//-}.yaml"
    validate "$OUT/kustomize-${dir//\//-}.yaml"
done

say "promtool check rules"
"$BIN/promtool" check rules "$ROOT/deploy/prometheus/alerts.yml"
if [[ -f "$ROOT/deploy/prometheus/alerts.test.yml" ]]; then
    say "promtool test rules"
    (cd "$ROOT/deploy/prometheus" && "$BIN/promtool" test rules alerts.test.yml)
fi

say "unit tests of the deploy artefacts"
"$ROOT/.venv/bin/pytest" -p no:cacheprovider -q "$ROOT/tests/unit/deploy"
say "all checks passed"
