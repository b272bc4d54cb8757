"""TLS settings (issue #18): what every Kafka client and Cassandra session is configured with."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from confluent_kafka import KafkaException, Producer
from pydantic import ValidationError

from scheduler.settings import CassandraSettings, KafkaSettings
from scheduler.tls import cassandra_ssl_context
from tests.support.certs import Pki, make_pki

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_plaintext_configuration_is_what_it_was() -> None:
    assert KafkaSettings(bootstrap_servers="k:9092").client_config() == {
        "bootstrap.servers": "k:9092",
        "security.protocol": "PLAINTEXT",
    }


def test_mutual_tls_passes_the_ca_the_client_certificate_and_its_key() -> None:
    config = KafkaSettings(
        security_protocol="SSL",
        ssl_ca_location="/certs/ca.crt",
        ssl_certificate_location="/certs/tls.crt",
        ssl_key_location="/certs/tls.key",
        ssl_key_password="pw",  # type: ignore[arg-type]
    ).client_config()
    assert config["security.protocol"] == "SSL"
    assert config["ssl.ca.location"] == "/certs/ca.crt"
    assert config["ssl.certificate.location"] == "/certs/tls.crt"
    assert config["ssl.key.location"] == "/certs/tls.key"
    assert config["ssl.key.password"] == "pw"
    assert config["ssl.endpoint.identification.algorithm"] == "https"


def test_sasl_ssl_keeps_sasl_and_adds_the_client_certificate() -> None:
    config = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="scheduler",
        sasl_password="secret",  # type: ignore[arg-type]
        ssl_certificate_location="/certs/tls.crt",
        ssl_key_location="/certs/tls.key",
    ).client_config()
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["sasl.password"] == "secret"
    assert config["ssl.certificate.location"] == "/certs/tls.crt"
    assert config["ssl.endpoint.identification.algorithm"] == "https"


def test_hostname_verification_is_on_unless_opted_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDULER_KAFKA_SECURITY_PROTOCOL", "ssl")
    assert KafkaSettings().client_config()["ssl.endpoint.identification.algorithm"] == "https"
    monkeypatch.setenv("SCHEDULER_KAFKA_SSL_CHECK_HOSTNAME", "false")
    assert KafkaSettings().client_config()["ssl.endpoint.identification.algorithm"] == "none"


def test_the_key_password_is_read_from_the_environment_and_kept_out_of_reprs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCHEDULER_KAFKA_SSL_KEY_PASSWORD", "kafka-key-pw")
    monkeypatch.setenv("SCHEDULER_CASSANDRA_SSL_ENABLED", "true")
    monkeypatch.setenv("SCHEDULER_CASSANDRA_SSL_KEY_PASSWORD", "cassandra-key-pw")
    kafka, cassandra = KafkaSettings(), CassandraSettings()
    assert "kafka-key-pw" not in repr(kafka) and "cassandra-key-pw" not in repr(cassandra)
    assert kafka.ssl_key_password is not None
    assert kafka.ssl_key_password.get_secret_value() == "kafka-key-pw"


@pytest.mark.parametrize("settings_class", [KafkaSettings, CassandraSettings])
@pytest.mark.parametrize("given", ["ssl_certificate_location", "ssl_key_location"])
def test_a_client_certificate_needs_its_key(settings_class: type, given: str) -> None:
    with pytest.raises(ValidationError, match="go together"):
        settings_class(ssl_enabled=True, security_protocol="SSL", **{given: "/certs/x.pem"})


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT"])
def test_a_kafka_client_certificate_without_tls_is_refused(protocol: str) -> None:
    with pytest.raises(ValidationError, match="security_protocol is"):
        KafkaSettings(
            security_protocol=protocol,
            ssl_certificate_location="/certs/tls.crt",
            ssl_key_location="/certs/tls.key",
        )


def test_cassandra_tls_files_without_tls_enabled_are_refused() -> None:
    with pytest.raises(ValidationError, match="ssl_enabled is false"):
        CassandraSettings(ssl_ca_location="/certs/ca.crt")


def test_no_cassandra_tls_unless_enabled() -> None:
    assert cassandra_ssl_context(CassandraSettings()) is None


def test_the_cassandra_context_verifies_the_nodes_and_presents_the_client_certificate(
    pki: Pki,
) -> None:
    context = cassandra_ssl_context(
        CassandraSettings(
            ssl_enabled=True,
            ssl_ca_location=str(pki.ca),
            ssl_certificate_location=str(pki.client.cert),
            ssl_key_location=str(pki.client.key),
            ssl_key_password=pki.client.password,  # type: ignore[arg-type]
        )
    )
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    subjects = [dict(x[0] for x in ca["subject"]) for ca in context.get_ca_certs()]
    assert subjects == [{"commonName": "scheduler test CA"}]


def test_the_hostname_opt_out_still_verifies_the_chain(pki: Pki) -> None:
    context = cassandra_ssl_context(
        CassandraSettings(ssl_enabled=True, ssl_ca_location=str(pki.ca), ssl_check_hostname=False)
    )
    assert context is not None
    assert not context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED


def test_a_wrong_key_password_fails_at_start(pki: Pki) -> None:
    settings = CassandraSettings(
        ssl_enabled=True,
        ssl_certificate_location=str(pki.client.cert),
        ssl_key_location=str(pki.client.key),
        ssl_key_password="wrong",  # type: ignore[arg-type]
    )
    with pytest.raises(ssl.SSLError):
        cassandra_ssl_context(settings)


def test_a_missing_ca_file_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        cassandra_ssl_context(
            CassandraSettings(ssl_enabled=True, ssl_ca_location=str(tmp_path / "none.crt"))
        )


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"ssl_key_password": "wrong"}, "ssl.key.location failed"),
        ({"ssl_ca_location": "/nonexistent/ca.crt"}, "ssl.ca.location failed"),
    ],
)
def test_a_kafka_client_with_an_unusable_tls_file_fails_when_it_is_built(
    pki: Pki, change: dict[str, str], complaint: str
) -> None:
    settings = {
        "bootstrap_servers": "127.0.0.1:1",  # never contacted: the client fails before
        "security_protocol": "SSL",
        "ssl_ca_location": str(pki.ca),
        "ssl_certificate_location": str(pki.client.cert),
        "ssl_key_location": str(pki.client.key),
        "ssl_key_password": pki.client.password,
    }
    kafka = KafkaSettings(**{**settings, **change})
    with pytest.raises(KafkaException, match=complaint):
        Producer({**kafka.client_config(), "log_level": 0})
