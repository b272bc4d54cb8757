"""The chart's operator-facing behaviours, rendered with values and asserted on the objects.

PDBs only where they protect, the prefix trap refused at render time, ingest's metrics port
apart from its API, probes and grace periods from values, the optional Ingress, NetworkPolicies
and KEDA scaling, and the pod-level knobs (labels, priority, spread, extra env and volumes,
image digest).
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from .support import CHART, KUBE_VERSION, render_chart, run, tool

pytestmark = [pytest.mark.unit, pytest.mark.tools]

DIGEST = "sha256:" + "ab" * 32


def _kinds(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _deployment(objects: list[dict[str, Any]], suffix: str) -> dict[str, Any]:
    [found] = [o for n, o in _kinds(objects, "Deployment").items() if n.endswith(f"-{suffix}")]
    return found


def _pod(objects: list[dict[str, Any]], suffix: str) -> dict[str, Any]:
    return dict(_deployment(objects, suffix)["spec"]["template"]["spec"])


def _container(objects: list[dict[str, Any]], suffix: str) -> dict[str, Any]:
    return dict(_pod(objects, suffix)["containers"][0])


def _config(objects: list[dict[str, Any]]) -> dict[str, str]:
    [config] = [o for n, o in _kinds(objects, "ConfigMap").items() if n.endswith("-config")]
    return dict(config["data"])


def _refused(*values: str) -> str:
    """The render's error output; the render must fail."""
    args = [str(tool("helm")), "template", "x", str(CHART), "--kube-version", KUBE_VERSION]
    for value in values:
        args += ["--set", value]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    assert done.returncode != 0, "the render should have failed"
    return done.stderr


# -- disruption budgets ----------------------------------------------------------------------


def _budgets(*values: str) -> set[str]:
    names = _kinds(render_chart(*values), "PodDisruptionBudget")
    return {name.rsplit("-", 1)[-1] for name in names}


def test_no_disruption_budget_over_a_single_pod() -> None:
    # defaults: ingest (HPA min 2), bucketer 2, releaser 2, one dispatcher instance
    assert _budgets() == {"ingest", "bucketer", "releaser"}
    assert _budgets("releaser.replicas=1", "bucketer.replicas=1") == {"ingest"}
    assert "ingest" not in _budgets("ingest.autoscaling.minReplicas=1")
    assert "ingest" not in _budgets("ingest.autoscaling.enabled=false", "ingest.replicas=1")


def test_the_dispatchers_budget_spans_its_instances() -> None:
    objects = render_chart("dispatcher.instances=3")
    budget = _kinds(objects, "PodDisruptionBudget")["scheduler-pit-scheduler-dispatcher"]
    assert budget["spec"]["maxUnavailable"] == 1
    selected = budget["spec"]["selector"]["matchLabels"]
    dispatchers = [d for n, d in _kinds(objects, "Deployment").items() if "-dispatcher-" in n]
    assert len(dispatchers) == 3
    for d in dispatchers:
        assert selected.items() <= d["spec"]["template"]["metadata"]["labels"].items()


def test_a_budget_can_be_turned_off() -> None:
    assert "bucketer" not in _budgets("bucketer.pdb.enabled=false")


# -- the prefix trap -----------------------------------------------------------------------


def test_a_restricted_ingest_with_an_unrestricted_dispatcher_fails_the_render() -> None:
    err = _refused("ingest.kafkaEndpointPrefixes={tenant.}")
    assert "dispatcher.kafkaDestinationPrefixes is empty" in err
    assert "EVERY topic" in err and '["tenant."]' in err


def test_prefixes_given_to_both_render_into_both_settings() -> None:
    config = _config(
        render_chart(
            "ingest.kafkaEndpointPrefixes={tenant.}",
            "dispatcher.kafkaDestinationPrefixes={tenant.}",
        )
    )
    assert config["SCHEDULER_INGEST_KAFKA_ENDPOINT_PREFIXES"] == '["tenant."]'
    assert config["SCHEDULER_DISPATCH_KAFKA_DESTINATION_PREFIXES"] == '["tenant."]'


def test_every_topic_can_be_allowed_on_purpose(tmp_path) -> None:
    """The message's way out: [""] (the empty prefix matches every topic), said explicitly."""
    values = tmp_path / "values.yaml"
    values.write_text(
        'ingest: {kafkaEndpointPrefixes: ["tenant."]}\n'
        'dispatcher: {kafkaDestinationPrefixes: [""]}\n'
    )
    config = _config(render_chart(values_file=values))
    assert config["SCHEDULER_DISPATCH_KAFKA_DESTINATION_PREFIXES"] == '[""]'
    assert 'or to [""] to allow every topic on purpose' in _refused(
        "ingest.kafkaEndpointPrefixes={tenant.}"
    )


# -- ingest's metrics port -----------------------------------------------------------------


def test_ingest_serves_metrics_on_its_own_port_and_service() -> None:
    objects = render_chart("ingest.metricsPort=9201")
    container = _container(objects, "ingest")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "metrics": 9201}
    assert _config(objects)["SCHEDULER_INGEST_METRICS_PORT"] == "9201"
    services = _kinds(objects, "Service")
    api = services["scheduler-pit-scheduler-ingest"]
    assert [p["targetPort"] for p in api["spec"]["ports"]] == ["http"]
    assert "scheduler/metrics" not in api["metadata"]["labels"]
    metrics = services["scheduler-pit-scheduler-ingest-metrics"]
    assert metrics["metadata"]["labels"]["scheduler/metrics"] == "true"
    assert [(p["port"], p["targetPort"]) for p in metrics["spec"]["ports"]] == [(9201, "metrics")]


def test_the_ingress_routes_to_the_api_port_only() -> None:
    assert not _kinds(render_chart(), "Ingress")
    objects = render_chart(
        "ingress.enabled=true",
        "ingress.className=nginx",
        "ingress.hosts[0].host=api.example.com",
        "ingress.hosts[0].paths[0].path=/",
        "ingress.hosts[0].paths[0].pathType=Prefix",
        "ingress.tls[0].secretName=api-tls",
        "ingress.tls[0].hosts[0]=api.example.com",
    )
    [ingress] = _kinds(objects, "Ingress").values()
    assert ingress["spec"]["ingressClassName"] == "nginx"
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "api.example.com"
    [path] = rule["http"]["paths"]
    assert path["backend"]["service"] == {
        "name": "scheduler-pit-scheduler-ingest",
        "port": {"name": "http"},
    }
    assert ingress["spec"]["tls"][0]["secretName"] == "api-tls"


# -- probes, grace, log levels -------------------------------------------------------------


def test_every_deployment_has_a_startup_probe_and_probes_come_from_values() -> None:
    objects = render_chart(
        "bucketer.probes.startup.failureThreshold=60", "ingest.probes.liveness.periodSeconds=20"
    )
    for deployment in _kinds(objects, "Deployment").values():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert _container(objects, "bucketer")["startupProbe"]["failureThreshold"] == 60
    assert _container(objects, "ingest")["livenessProbe"]["periodSeconds"] == 20
    assert _container(objects, "ingest")["livenessProbe"]["httpGet"]["port"] == "http"


def test_grace_periods_and_the_dispatchers_shutdown_timeout() -> None:
    objects = render_chart(
        "dispatcher.shutdownTimeoutMs=50000", "dispatcher.terminationGracePeriodSeconds=90"
    )
    assert _pod(objects, "dispatcher-0")["terminationGracePeriodSeconds"] == 90
    assert _config(objects)["SCHEDULER_DISPATCH_SHUTDOWN_TIMEOUT_MS"] == "50000"
    # after the stop, the record writer (10 s) and the producer's flush (10 s) may each take
    # their bound, and the consumers close: 50 s + 10 s of grace would be killed mid-exit
    err = _refused(
        "dispatcher.shutdownTimeoutMs=50000", "dispatcher.terminationGracePeriodSeconds=60"
    )
    assert "must exceed dispatcher.shutdownTimeoutMs (50000 ms) by at least 25 s" in err


def test_ingest_grace_covers_its_drain() -> None:
    assert "ingest drains in-flight requests" in _refused("ingest.terminationGracePeriodSeconds=20")


def test_every_component_has_a_log_level() -> None:
    objects = render_chart(
        "ingest.logLevel=DEBUG",
        "bucketer.logLevel=WARNING",
        "releaser.logLevel=ERROR",
        "dispatcher.logLevel=debug",
        "setup.logLevel=WARNING",
    )
    config = _config(objects)
    assert config["SCHEDULER_INGEST_LOG_LEVEL"] == "DEBUG"
    assert config["SCHEDULER_BUCKETER_LOG_LEVEL"] == "WARNING"
    assert config["SCHEDULER_RELEASE_LOG_LEVEL"] == "ERROR"
    assert config["SCHEDULER_DISPATCH_LOG_LEVEL"] == "debug"
    [job] = _kinds(objects, "Job").values()
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "--log-level",
        "WARNING",
        "setup",
    ]
    assert "logLevel" in _refused("releaser.logLevel=LOUD")


# -- scaling ---------------------------------------------------------------------------------


def test_the_bucketer_scales_on_consumer_lag_with_keda() -> None:
    assert not _kinds(render_chart(), "ScaledObject")
    objects = render_chart(
        "bucketer.autoscaling.enabled=true", "bucketer.autoscaling.maxReplicas=6"
    )
    [scaled] = _kinds(objects, "ScaledObject").values()
    assert scaled["spec"]["scaleTargetRef"]["name"] == "scheduler-pit-scheduler-bucketer"
    assert scaled["spec"]["maxReplicaCount"] == 6
    topics = {t["metadata"]["topic"] for t in scaled["spec"]["triggers"]}
    assert topics == {"scheduler.requests", "scheduler.commands"}
    assert {t["metadata"]["consumerGroup"] for t in scaled["spec"]["triggers"]} == {
        "scheduler-bucketer"
    }
    assert "replicas" not in _deployment(objects, "bucketer")["spec"], "KEDA owns replicas"


def test_bucketers_beyond_the_partitions_are_refused() -> None:
    err = _refused("bucketer.autoscaling.enabled=true", "bucketer.autoscaling.maxReplicas=13")
    assert "exceeds kafka.partitions.requests (12)" in err


def test_lag_scaling_on_a_secured_kafka_needs_keda_credentials() -> None:
    err = _refused("bucketer.autoscaling.enabled=true", "kafka.securityProtocol=SASL_SSL")
    assert "bucketer.autoscaling.authenticationRef" in err
    objects = render_chart(
        "bucketer.autoscaling.enabled=true",
        "kafka.securityProtocol=SASL_SSL",
        "bucketer.autoscaling.authenticationRef=kafka-auth",
    )
    [scaled] = _kinds(objects, "ScaledObject").values()
    for trigger in scaled["spec"]["triggers"]:
        assert trigger["authenticationRef"] == {"name": "kafka-auth"}


def test_the_dispatcher_cannot_autoscale() -> None:
    err = _refused("dispatcher.autoscaling.enabled=true")
    assert "fixed set of ring partitions" in err and "dispatcher.instances" in err


# -- network policies ------------------------------------------------------------------------


def test_network_policies_open_the_api_metrics_and_the_dependencies() -> None:
    assert not _kinds(render_chart(), "NetworkPolicy")
    objects = render_chart(
        "networkPolicy.enabled=true",
        "networkPolicy.apiFrom[0].namespaceSelector.matchLabels.name=ingress",
        "networkPolicy.kafka.to[0].ipBlock.cidr=10.1.0.0/16",
        "networkPolicy.dispatcher.webhooks.to[0].ipBlock.cidr=203.0.113.0/24",
        "networkPolicy.dispatcher.webhooks.ports={443}",
    )
    policies = {
        n.rsplit("-", 1)[-1]: p["spec"] for n, p in _kinds(objects, "NetworkPolicy").items()
    }
    assert set(policies) == {"ingest", "bucketer", "releaser", "dispatcher", "setup"}
    ingest_ports = [r["ports"][0]["port"] for r in policies["ingest"]["ingress"]]
    assert ingest_ports == ["http", "metrics"]
    assert policies["ingest"]["ingress"][0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"name": "ingress"}}}
    ]
    assert [r["ports"][0]["port"] for r in policies["bucketer"]["ingress"]] == ["metrics"]
    assert policies["setup"]["ingress"] == []

    def egress_ports(spec: dict[str, Any]) -> set[int]:
        return {p["port"] for rule in spec["egress"] for p in rule.get("ports", [])}

    for name, spec in policies.items():
        assert {53, 9092, 9042} <= egress_ports(spec), name
        kafka = next(
            r for r in spec["egress"] if {"port": 9092, "protocol": "TCP"} in r.get("ports", [])
        )
        assert kafka["to"] == [{"ipBlock": {"cidr": "10.1.0.0/16"}}]
    webhooks = [
        r
        for r in policies["dispatcher"]["egress"]
        if r.get("to", [{}])[0].get("ipBlock", {}).get("cidr") == "203.0.113.0/24"
    ]
    assert webhooks and webhooks[0]["ports"] == [{"port": 443, "protocol": "TCP"}]
    assert not any(
        "203.0.113.0/24" in str(r)
        for n, s in policies.items()
        if n != "dispatcher"
        for r in s["egress"]
    )


# -- pod-level knobs -------------------------------------------------------------------------


def test_pod_labels_annotations_priority_spread_env_volumes_and_digest() -> None:
    objects = render_chart(
        "podLabels.team=payments",
        "releaser.podLabels.tier=core",
        "podAnnotations.owner=ops",
        "priorityClassName=scheduler-high",
        "dispatcher.priorityClassName=scheduler-critical",
        "bucketer.topologySpreadConstraints[0].maxSkew=1",
        "bucketer.topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone",
        "bucketer.topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
        "extraEnvFrom[0].secretRef.name=scheduler-extra",
        "extraVolumes[0].name=certs",
        "extraVolumes[0].secret.secretName=client-certs",
        "extraVolumeMounts[0].name=certs",
        "extraVolumeMounts[0].mountPath=/etc/certs",
        f"image.digest={DIGEST}",
    )
    releaser = _deployment(objects, "releaser")["spec"]["template"]["metadata"]
    assert releaser["labels"]["team"] == "payments" and releaser["labels"]["tier"] == "core"
    assert releaser["annotations"]["owner"] == "ops"
    assert "checksum/config" in releaser["annotations"]
    assert _pod(objects, "releaser")["priorityClassName"] == "scheduler-high"
    assert _pod(objects, "dispatcher-0")["priorityClassName"] == "scheduler-critical"
    [spread] = _pod(objects, "bucketer")["topologySpreadConstraints"]
    assert spread["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "bucketer"
    [job] = _kinds(objects, "Job").values()
    pods = [_pod(objects, s) for s in ("ingest", "bucketer", "releaser", "dispatcher-0")]
    pods.append(job["spec"]["template"]["spec"])
    for pod in pods:
        container = pod["containers"][0]
        assert container["image"] == f"pit-scheduler@{DIGEST}"
        assert {"secretRef": {"name": "scheduler-extra"}} in container["envFrom"]
        assert {"name": "certs", "mountPath": "/etc/certs"} in container["volumeMounts"]
        assert {"name": "certs", "secret": {"secretName": "client-certs"}} in pod["volumes"]
    assert "image.digest" in _refused("image.digest=latest")


def test_the_production_like_rendering_validates(tmp_path) -> None:
    """Every optional object on, as an operator with the usual operators installed would."""
    import yaml

    objects = render_chart(
        "ingress.enabled=true",
        "networkPolicy.enabled=true",
        "bucketer.autoscaling.enabled=true",
        "metrics.serviceMonitor.enabled=true",
        "metrics.prometheusRule.enabled=true",
        "metrics.dashboards.enabled=true",
        "dispatcher.instances=3",
        "ingest.kafkaEndpointPrefixes={tenant.}",
        "dispatcher.kafkaDestinationPrefixes={tenant.}",
    )
    kinds = {o["kind"] for o in objects}
    assert {"Ingress", "NetworkPolicy", "ScaledObject", "PrometheusRule"} <= kinds
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    run(tool("kubernetes-validate"), "--strict", "--quiet", "-k", KUBE_VERSION, path)
