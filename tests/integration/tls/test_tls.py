"""The project's own settings reach a broker that requires mutual TLS and a Cassandra node that
requires TLS with a client certificate; clients without the right certificate or trust are
refused (issue #18)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cassandra.cluster import NoHostAvailable
from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from scheduler.kafka.producer import KafkaRecordProducer
from scheduler.settings import CassandraSettings
from scheduler.store.cassandra import connect
from scheduler.testing.stack import HOST
from tests.integration.tls.servers import (
    BROKER_NAME,
    TlsServers,
    cassandra_settings,
    kafka_settings,
)

pytestmark = pytest.mark.integration

TIMEOUT_S = 30.0
REFUSAL_TIMEOUT_S = 8.0


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def metadata_request(config: dict[str, Any]) -> tuple[bool, list[str]]:
    """(whether a metadata request succeeded, what librdkafka logged and reported meanwhile)."""
    collect = _Collect()
    logger = logging.getLogger(f"tls-test-{uuid.uuid4().hex}")
    logger.propagate = False
    logger.addHandler(collect)

    def on_error(error: KafkaError) -> None:
        collect.lines.append(error.str())

    # A refused client retries without end: slow it down, the first refusals say why.
    backoff = {"reconnect.backoff.ms": 500, "reconnect.backoff.max.ms": 1000}
    admin = AdminClient({**config, **backoff, "error_cb": on_error, "logger": logger})
    try:
        admin.list_topics(timeout=REFUSAL_TIMEOUT_S)
    except KafkaException as exc:
        admin.poll(0)  # serve the logs queued meanwhile
        return False, sorted({*collect.lines, str(exc)})
    return True, collect.lines


@pytest.fixture
def topic(tls: TlsServers) -> Iterator[str]:
    name = f"tls-{uuid.uuid4().hex[:12]}"
    admin = AdminClient(kafka_settings(tls.kafka_bootstrap, tls.pki).client_config())
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result(
        TIMEOUT_S
    )
    yield name
    admin.delete_topics([name])[name].result(TIMEOUT_S)


def test_a_record_round_trips_over_mutual_tls_with_the_project_settings(
    tls: TlsServers, topic: str
) -> None:
    kafka = kafka_settings(tls.kafka_bootstrap, tls.pki)
    producer = KafkaRecordProducer(kafka.client_config())
    producer.produce(topic, key=b"k", value=b"over mTLS")
    producer.flush(TIMEOUT_S)
    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": f"{topic}-reader",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic])
        message = consumer.poll(TIMEOUT_S)
        assert message is not None and message.error() is None, message and message.error()
        assert (message.key(), message.value()) == (b"k", b"over mTLS")
    finally:
        consumer.close()


def test_the_same_client_reaches_the_broker(tls: TlsServers) -> None:
    # The positive control of the refusals below: only the changed setting makes them fail.
    reached, errors = metadata_request(kafka_settings(tls.kafka_bootstrap, tls.pki).client_config())
    assert reached, errors


def test_hostname_verification_is_on_by_default_and_can_be_turned_off(tls: TlsServers) -> None:
    # The broker's certificate names localhost, not 127.0.0.1 (it advertises localhost, so
    # after the bootstrap connection the opted-out client uses the name the certificate has).
    by_address = tls.kafka_bootstrap.replace(BROKER_NAME, HOST)
    reached, errors = metadata_request(kafka_settings(by_address, tls.pki).client_config())
    assert not reached
    assert any("certificate verify failed" in error for error in errors), errors
    opted_out = kafka_settings(by_address, tls.pki, ssl_check_hostname=False)
    reached, errors = metadata_request(opted_out.client_config())
    assert reached, errors


def test_a_client_without_a_certificate_is_refused(tls: TlsServers) -> None:
    kafka = kafka_settings(
        tls.kafka_bootstrap, tls.pki, ssl_certificate_location=None, ssl_key_location=None
    )
    reached, errors = metadata_request(kafka.client_config())
    assert not reached
    assert any("alert" in error for error in errors), errors  # the broker's TLS alert


def test_a_client_trusting_another_ca_refuses_the_broker(tls: TlsServers) -> None:
    kafka = kafka_settings(tls.kafka_bootstrap, tls.pki, ssl_ca_location=str(tls.pki.other_ca))
    reached, errors = metadata_request(kafka.client_config())
    assert not reached
    assert any("certificate verify failed" in error for error in errors), errors


def test_a_client_certificate_from_another_ca_is_refused(tls: TlsServers) -> None:
    other = tls.pki.other_client
    kafka = kafka_settings(
        tls.kafka_bootstrap,
        tls.pki,
        ssl_certificate_location=str(other.cert),
        ssl_key_location=str(other.key),
    )
    reached, errors = metadata_request(kafka.client_config())
    assert not reached
    assert any("alert" in error for error in errors), errors


def test_the_project_session_runs_a_query_over_tls(tls: TlsServers) -> None:
    cluster, session = connect(cassandra_settings(tls.cassandra_port, tls.pki))
    try:
        row = session.execute("SELECT release_version FROM system.local").one()
        assert str(row.release_version).startswith("5.")
        # Every pooled connection of the session is a TLS one.
        connections = [c for pool in session.get_pools() for c in pool.get_connections()]
        assert connections
        assert all(connection.ssl_context is not None for connection in connections)
    finally:
        cluster.shutdown()


def test_a_plaintext_session_to_the_tls_node_fails(tls: TlsServers) -> None:
    plaintext = CassandraSettings(contact_points=[HOST], port=tls.cassandra_port)
    with pytest.raises(NoHostAvailable):
        connect(plaintext)


def test_a_session_trusting_another_ca_fails(tls: TlsServers) -> None:
    settings = cassandra_settings(
        tls.cassandra_port, tls.pki, ssl_ca_location=str(tls.pki.other_ca)
    )
    with pytest.raises(NoHostAvailable, match="CERTIFICATE_VERIFY_FAILED"):
        connect(settings)


def test_a_session_without_a_client_certificate_fails(tls: TlsServers) -> None:
    settings = cassandra_settings(
        tls.cassandra_port, tls.pki, ssl_certificate_location=None, ssl_key_location=None
    )
    with pytest.raises(NoHostAvailable):
        connect(settings)
