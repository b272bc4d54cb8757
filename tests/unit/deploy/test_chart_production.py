"""deploy/k8s/chart/values-production.yaml renders what it promises: two or more pods of every
service, two dispatcher instances, budgets that keep one pod of each up, RF 3 / min ISR 2 /
LOCAL_QUORUM in the services' settings. (`make deploy-check` validates the same rendering
against the Kubernetes schemas.)"""

from __future__ import annotations

from typing import Any

import pytest

from .support import CHART, render_chart

pytestmark = [pytest.mark.unit, pytest.mark.tools]
VALUES = CHART / "values-production.yaml"
COMPONENTS = ("ingest", "bucketer", "releaser", "dispatcher")


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return render_chart(values_file=VALUES)


def _of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def _component(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["labels"]["app.kubernetes.io/component"])


def _min_pods(objects: list[dict[str, Any]], component: str) -> int:
    """Pods of a component at the least: the HPA's minimum, else the Deployments' replicas."""
    hpas = [h for h in _of_kind(objects, "HorizontalPodAutoscaler") if _component(h) == component]
    if hpas:
        return int(hpas[0]["spec"]["minReplicas"])
    deployments = [d for d in _of_kind(objects, "Deployment") if _component(d) == component]
    return sum(int(d["spec"]["replicas"]) for d in deployments)


def test_every_service_runs_at_least_two_pods(objects: list[dict[str, Any]]) -> None:
    for component in COMPONENTS:
        assert _min_pods(objects, component) >= 2, component


def _config(objects: list[dict[str, Any]]) -> dict[str, str]:
    [config] = [
        c for c in _of_kind(objects, "ConfigMap") if c["metadata"]["name"].endswith("-config")
    ]
    return dict(config["data"])


def test_the_dispatcher_runs_as_instances_0_and_1_of_2(objects: list[dict[str, Any]]) -> None:
    dispatchers = [d for d in _of_kind(objects, "Deployment") if _component(d) == "dispatcher"]
    instances = set()
    for deployment in dispatchers:
        env = {e["name"]: e.get("value") for e in deployment_env(deployment)}
        instances.add(env["SCHEDULER_DISPATCH_INSTANCE"])
        assert deployment["spec"]["replicas"] == 1
    assert instances == {"0", "1"}
    assert _config(objects)["SCHEDULER_DISPATCH_INSTANCES"] == "2"


def deployment_env(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return list(deployment["spec"]["template"]["spec"]["containers"][0].get("env", []))


def test_every_service_has_a_budget_that_keeps_one_pod_up(objects: list[dict[str, Any]]) -> None:
    budgets = {_component(b): b["spec"] for b in _of_kind(objects, "PodDisruptionBudget")}
    assert set(budgets) == set(COMPONENTS)
    for component, spec in budgets.items():
        # maxUnavailable 1 over >= 2 pods: a drain never takes the last one (= minAvailable 1)
        assert spec["maxUnavailable"] == 1
        assert _min_pods(objects, component) - spec["maxUnavailable"] >= 1, component


def test_the_production_durability_settings(objects: list[dict[str, Any]]) -> None:
    data = _config(objects)
    assert data["SCHEDULER_KAFKA_REPLICATION_FACTOR"] == "3"
    assert data["SCHEDULER_KAFKA_MIN_INSYNC_REPLICAS"] == "2"
    assert data["SCHEDULER_CASSANDRA_REPLICATION_FACTOR"] == "3"
    assert data["SCHEDULER_CASSANDRA_CONSISTENCY"] == "LOCAL_QUORUM"
