"""The Helm chart and the kustomize manifests: valid, and identical in substance.

The base is the chart rendered with BASE_VALUES; whoever edits one without the other (or without
re-running deploy/tools/render_kustomize_base.py) fails here. Compared: every object's kind and
name, and per kind the fields that change behaviour (images, commands, env, probes, resources,
security, replicas, ports, selectors, hook Job, autoscaling, disruption budgets, configuration).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from .support import (
    BASE_VALUES,
    CHART,
    KUBE_VERSION,
    KUSTOMIZE,
    console_scripts,
    kustomize_build,
    render_chart,
    run,
    settings_env_names,
    tool,
)

pytestmark = [pytest.mark.unit, pytest.mark.tools]

HASH_SUFFIX = re.compile(r"-[a-z0-9]{10}$")  # kustomize's configMapGenerator name suffix


def _name(obj: dict[str, Any]) -> str:
    name = obj["metadata"]["name"]
    return HASH_SUFFIX.sub("", name) if obj["kind"] == "ConfigMap" else name


def _unhash(node: Any) -> Any:
    """ConfigMap references without kustomize's hash suffix."""
    if isinstance(node, dict):
        out = {k: _unhash(v) for k, v in node.items()}
        if "name" in out and isinstance(out["name"], str) and out["name"].startswith("scheduler-"):
            out["name"] = HASH_SUFFIX.sub("", out["name"])
        return out
    if isinstance(node, list):
        return [_unhash(v) for v in node]
    return node


def _pod(spec: dict[str, Any]) -> dict[str, Any]:
    pod = _unhash(spec["template"]["spec"])
    return {
        "securityContext": pod.get("securityContext"),
        "serviceAccountName": pod.get("serviceAccountName"),
        "automountServiceAccountToken": pod.get("automountServiceAccountToken"),
        "restartPolicy": pod.get("restartPolicy"),
        "terminationGracePeriodSeconds": pod.get("terminationGracePeriodSeconds"),
        "priorityClassName": pod.get("priorityClassName"),
        "topologySpreadConstraints": pod.get("topologySpreadConstraints"),
        "volumes": pod.get("volumes"),
        "labels": spec["template"]["metadata"].get("labels"),
        "containers": [
            {
                k: c.get(k)
                for k in (
                    "name",
                    "image",
                    "command",
                    "args",
                    "ports",
                    "env",
                    "envFrom",
                    "startupProbe",
                    "livenessProbe",
                    "readinessProbe",
                    "resources",
                    "securityContext",
                    "volumeMounts",
                )
            }
            for c in pod["containers"]
        ],
    }


def essentials(obj: dict[str, Any]) -> Any:
    kind, spec = obj["kind"], obj.get("spec", {})
    if kind == "Deployment":
        keep = {k: spec.get(k) for k in ("replicas", "strategy", "selector")}
        return {**keep, "pod": _pod(spec)}
    if kind == "Job":
        return {"backoffLimit": spec.get("backoffLimit"), "pod": _pod(spec)}
    if kind == "Service":
        return {k: spec.get(k) for k in ("type", "clusterIP", "ports", "selector")}
    if kind == "ConfigMap":
        return obj["data"]
    if kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget"):
        return spec
    if kind == "ServiceAccount":
        return obj.get("automountServiceAccountToken")
    raise AssertionError(f"no comparison for {kind}")


def _index(objects: list[dict[str, Any]]) -> dict[tuple[str, str], Any]:
    return {(o["kind"], _name(o)): essentials(o) for o in objects}


@pytest.fixture(scope="module")
def chart() -> list[dict[str, Any]]:
    return render_chart(*BASE_VALUES)


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return kustomize_build("base")


def test_chart_and_kustomize_base_are_identical_in_substance(chart, base) -> None:
    ours, theirs = _index(chart), _index(base)
    assert sorted(ours) == sorted(theirs)
    assert len(ours) >= 15
    for key in ours:
        assert ours[key] == theirs[key], key


def test_the_example_overlay_is_the_chart_with_its_helm_values() -> None:
    """overlays/example and `helm-values.yaml` beside it describe the same installation."""
    values = KUSTOMIZE / "overlays/example/helm-values.yaml"
    ours = _index(render_chart(*BASE_VALUES, values_file=values))
    theirs = _index(kustomize_build("overlays/example"))
    assert sorted(ours) == sorted(theirs)
    for key in ours:
        assert ours[key] == theirs[key], key
    assert ours[("Deployment", "scheduler-bucketer")]["replicas"] == 3


def test_the_comparison_sees_a_difference(chart, base) -> None:
    """A changed metrics port in the chart's rendering is a difference."""
    changed = render_chart(*BASE_VALUES, "bucketer.metricsPort=9200")
    assert _index(changed) != _index(base)


def test_chart_lints() -> None:
    run(tool("helm"), "lint", "--strict", CHART, "--kube-version", KUBE_VERSION)


@pytest.mark.parametrize(
    "values",
    [
        (),
        (
            "secrets.existingSecret=creds",
            "kafka.securityProtocol=SASL_SSL",
            "kafka.sasl.mechanism=SCRAM-SHA-512",
            "kafka.sasl.username=scheduler",
            "kafka.caConfigMap=kafka-ca",
            "cassandra.username=scheduler",
        ),
        ("dispatcher.instances=3", "ingest.autoscaling.enabled=false"),
    ],
    ids=["defaults", "secured", "scaled"],
)
def test_renderings_validate_against_the_kubernetes_schemas(values, tmp_path) -> None:
    path = tmp_path / "rendered.yaml"
    import yaml

    path.write_text(yaml.safe_dump_all(render_chart(*values)))
    run(tool("kubernetes-validate"), "--strict", "--quiet", "-k", KUBE_VERSION, path)


@pytest.mark.parametrize("directory", ["base", "overlays/example"])
def test_kustomize_output_validates(directory, tmp_path) -> None:
    import yaml

    path = tmp_path / "built.yaml"
    path.write_text(yaml.safe_dump_all(kustomize_build(directory)))
    run(tool("kubernetes-validate"), "--strict", "--quiet", "-k", KUBE_VERSION, path)


def test_an_invalid_manifest_fails_validation(tmp_path, chart) -> None:
    import subprocess

    import yaml

    broken = [o for o in chart if o["kind"] == "Deployment"][:1]
    broken[0]["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump_all(broken))
    args = [str(tool("kubernetes-validate")), "--strict", "--quiet", "-k", KUBE_VERSION, str(path)]
    assert subprocess.run(args, capture_output=True, check=False).returncode != 0


def _environment(objects: list[dict[str, Any]]) -> tuple[dict[str, str], set[str]]:
    """The ConfigMap's data and every env var name the containers set."""
    config = next(o["data"] for o in objects if o["kind"] == "ConfigMap")
    names = set(config)
    for obj in objects:
        if obj["kind"] in ("Deployment", "Job"):
            for container in obj["spec"]["template"]["spec"]["containers"]:
                names |= {e["name"] for e in container.get("env", [])}
    return config, names


@pytest.mark.parametrize("source", ["chart", "overlay"])
def test_every_variable_is_a_setting_and_parses(source, monkeypatch) -> None:
    """Each SCHEDULER_* variable is read by a settings class, and every class accepts the lot."""
    objects = (
        render_chart("kafka.sasl.mechanism=PLAIN", "kafka.sasl.username=u", "cassandra.username=u")
        if source == "chart"
        else kustomize_build("overlays/example")
    )
    config, names = _environment(objects)
    known = settings_env_names()
    assert names <= set(known), sorted(names - set(known))
    for key in list(known):
        monkeypatch.delenv(key, raising=False)
    for key, value in config.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SCHEDULER_SECRET_PEPPER", "x" * 32)
    for cls in set(known.values()):
        cls()  # raises on a value the service would refuse at startup
    cassandra = next(c for c in known.values() if c.__name__ == "CassandraSettings")()
    assert isinstance(cassandra.contact_points, list) and cassandra.contact_points


def test_commands_are_console_scripts(chart) -> None:
    scripts = console_scripts()
    commands = {
        c["command"][0]
        for o in chart
        if o["kind"] in ("Deployment", "Job")
        for c in o["spec"]["template"]["spec"]["containers"]
    }
    assert commands == {
        "scheduler",
        "scheduler-ingest",
        "scheduler-bucketer",
        "scheduler-releaser",
        "scheduler-dispatcher",
    }
    assert commands <= set(scripts)


def test_each_dispatcher_instance_is_its_own_deployment() -> None:
    objects = render_chart("dispatcher.instances=3")
    dispatchers = [
        o for o in objects if o["kind"] == "Deployment" and "dispatcher" in o["metadata"]["name"]
    ]
    assert len(dispatchers) == 3
    config = next(o["data"] for o in objects if o["kind"] == "ConfigMap")
    assert config["SCHEDULER_DISPATCH_INSTANCES"] == "3"
    seen = set()
    for d in dispatchers:
        assert d["spec"]["replicas"] == 1 and d["spec"]["strategy"] == {"type": "Recreate"}
        env = d["spec"]["template"]["spec"]["containers"][0]["env"]
        seen |= {e["value"] for e in env if e["name"] == "SCHEDULER_DISPATCH_INSTANCE"}
    assert seen == {"0", "1", "2"}


def test_probes_target_the_health_and_metrics_endpoints(chart) -> None:
    ports = {}
    for obj in chart:
        if obj["kind"] != "Deployment":
            continue
        container = obj["spec"]["template"]["spec"]["containers"][0]
        ports[container["name"]] = container["ports"][0]["containerPort"]
        live, ready = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]
        assert (live["path"], ready["path"]) == ("/healthz", "/readyz")
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert obj["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    config = next(o["data"] for o in chart if o["kind"] == "ConfigMap")
    assert str(ports["ingest"]) == config["SCHEDULER_INGEST_PORT"]
    assert str(ports["bucketer"]) == config["SCHEDULER_BUCKETER_METRICS_PORT"]
    assert str(ports["releaser"]) == config["SCHEDULER_RELEASE_METRICS_PORT"]
    assert str(ports["dispatcher"]) == config["SCHEDULER_DISPATCH_METRICS_PORT"]


def test_hooks_order_config_and_secret_before_the_migration_job() -> None:
    objects = render_chart()
    hooks = {
        o["kind"]: o["metadata"]["annotations"]
        for o in objects
        if "helm.sh/hook" in o["metadata"].get("annotations", {})
    }
    assert set(hooks) == {"ConfigMap", "Secret", "Job"}
    assert hooks["Job"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    # Configuration follows a rollback too (the Job need not: migrations only move forward).
    for kind in ("ConfigMap", "Secret"):
        assert hooks[kind]["helm.sh/hook"] == "pre-install,pre-upgrade,pre-rollback"
    weight = {kind: int(a["helm.sh/hook-weight"]) for kind, a in hooks.items()}
    assert weight["ConfigMap"] < weight["Job"] and weight["Secret"] < weight["Job"]
    job = next(o for o in objects if o["kind"] == "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][-1] == "setup"


def test_existing_secret_means_no_generated_secret() -> None:
    objects = render_chart("secrets.existingSecret=creds")
    assert not [o for o in objects if o["kind"] == "Secret"]
    ingest = next(
        o
        for o in objects
        if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-ingest")
    )
    env = ingest["spec"]["template"]["spec"]["containers"][0]["env"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in env if "valueFrom" in e}
    assert refs["SCHEDULER_SECRET_PEPPER"] == "creds"


def test_service_monitor_selects_every_metrics_service() -> None:
    objects = render_chart("metrics.serviceMonitor.enabled=true")
    monitor = next(o for o in objects if o["kind"] == "ServiceMonitor")
    wanted = monitor["spec"]["selector"]["matchLabels"]
    services = [o for o in objects if o["kind"] == "Service"]
    selected = [s for s in services if wanted.items() <= s["metadata"]["labels"].items()]
    assert len(selected) == 4
    for service in selected:
        assert "metrics" in {p["name"] for p in service["spec"]["ports"]}


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        # helm 3.17's schema messages (gojsonschema; 3.18+ words them differently)
        ("kafka.bootstrapServer=typo:9092", "Additional property bootstrapServer is not allowed"),
        ("dispatcher.instances=0", "dispatcher.instances: Must be greater than or equal to 1"),
        ("dispatcher.instances=7", "must not exceed dispatcher.maxInstances"),
        ("secrets.pepper=short", "secrets.pepper:"),
        ("kafka.securityProtocol=TLS", "kafka.securityProtocol must be one of"),
    ],
)
def test_values_schema_refuses_typos_and_bad_values(value, complaint) -> None:
    import subprocess

    args = [str(tool("helm")), "template", "x", str(CHART), "--kube-version", KUBE_VERSION]
    done = subprocess.run([*args, "--set", value], capture_output=True, text=True, check=False)
    assert done.returncode != 0 and complaint in done.stderr, done.stderr
