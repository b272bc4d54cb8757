"""The chart's TLS values (issue #18): the Secrets are mounted into every service pod and the setup
Job, the settings point at the mounted files and parse, and the result is valid Kubernetes."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from scheduler.settings import CassandraSettings, KafkaSettings

from .support import KUBE_VERSION, render_chart, run, settings_env_names, tool

pytestmark = [pytest.mark.unit, pytest.mark.tools]

TLS_VALUES = (
    "kafka.securityProtocol=SSL",
    "kafka.caConfigMap=kafka-ca",
    "kafka.tls.secretName=scheduler-kafka-user",
    "kafka.tls.certificateKey=user.crt",
    "kafka.tls.keyKey=user.key",
    "kafka.tls.keyPasswordKey=user.password",
    "cassandra.tls.enabled=true",
    "cassandra.tls.secretName=cassandra-client",
    "cassandra.tls.certificateKey=tls.crt",
    "cassandra.tls.keyKey=tls.key",
    "cassandra.tls.checkHostname=false",
)


def _pods(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"])
        for o in objects
        if o["kind"] in ("Deployment", "Job")
    ]


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return render_chart(*TLS_VALUES)


def test_every_pod_mounts_both_secrets_read_only(rendered) -> None:
    pods = _pods(rendered)
    assert any(name.startswith("Job/") for name, _ in pods)
    assert len(pods) >= 5  # ingest, bucketer, releaser, dispatcher, setup
    for name, pod in pods:
        secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        assert secrets == {"kafka-tls": "scheduler-kafka-user", "cassandra-tls": "cassandra-client"}
        for container in pod["containers"]:
            mounts = {m["name"]: m for m in container["volumeMounts"]}
            assert mounts["kafka-tls"]["mountPath"] == "/etc/scheduler/kafka-tls", name
            assert mounts["cassandra-tls"]["mountPath"] == "/etc/scheduler/cassandra-tls", name
            assert mounts["kafka-tls"]["readOnly"] and mounts["cassandra-tls"]["readOnly"]
            password = next(
                e for e in container["env"] if e["name"] == "SCHEDULER_KAFKA_SSL_KEY_PASSWORD"
            )
            assert password["valueFrom"]["secretKeyRef"] == {
                "name": "scheduler-kafka-user",
                "key": "user.password",
            }


def test_the_settings_name_the_mounted_files_and_parse(rendered, monkeypatch) -> None:
    config = next(o["data"] for o in rendered if o["kind"] == "ConfigMap")
    for key in settings_env_names():
        monkeypatch.delenv(key, raising=False)
    for key, value in config.items():
        monkeypatch.setenv(key, value)
    kafka = KafkaSettings().client_config()
    assert kafka["ssl.ca.location"] == "/etc/scheduler/kafka-ca/ca.crt"
    assert kafka["ssl.certificate.location"] == "/etc/scheduler/kafka-tls/user.crt"
    assert kafka["ssl.key.location"] == "/etc/scheduler/kafka-tls/user.key"
    assert kafka["ssl.endpoint.identification.algorithm"] == "https"
    cassandra = CassandraSettings()
    assert cassandra.ssl_enabled and not cassandra.ssl_check_hostname
    assert cassandra.ssl_ca_location == "/etc/scheduler/cassandra-tls/ca.crt"
    assert cassandra.ssl_certificate_location == "/etc/scheduler/cassandra-tls/tls.crt"
    assert cassandra.ssl_key_location == "/etc/scheduler/cassandra-tls/tls.key"


def test_without_tls_values_nothing_is_mounted_or_set() -> None:
    objects = render_chart()
    config = next(o["data"] for o in objects if o["kind"] == "ConfigMap")
    assert not [
        key for key in config if "_SSL_" in key and key != "SCHEDULER_KAFKA_SSL_CA_LOCATION"
    ]
    for _, pod in _pods(objects):
        assert not [v for v in pod["volumes"] if "secret" in v]


def test_the_tls_rendering_validates_against_the_kubernetes_schemas(rendered, tmp_path) -> None:
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(rendered))
    run(tool("kubernetes-validate"), "--strict", "--quiet", "-k", KUBE_VERSION, path)


def test_the_values_schema_refuses_a_typo_under_tls() -> None:
    import subprocess

    from .support import CHART

    args = [str(tool("helm")), "template", "x", str(CHART), "--kube-version", KUBE_VERSION]
    done = subprocess.run(
        [*args, "--set", "kafka.tls.secret=x"], capture_output=True, text=True, check=False
    )
    assert done.returncode != 0 and "Additional property secret is not allowed" in done.stderr
