"""Real-stack behaviour that needs more than the shared harness: Kafka down, readiness, two
replicas, secrets at rest."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from prometheus_client import CollectorRegistry

from scheduler.clock import SystemClock
from scheduler.domain.ids import derived_message_id
from scheduler.settings import KafkaSettings
from scheduler.store.cassandra_apps import CassandraAppStore
from scheduler.store.cassandra_messages import CassandraMessageStore
from scheduler.store.usage import CassandraUsageStore
from scheduler.topics import Topics
from scheduler_ingest.publisher import KafkaPublisher, PublishError, producer_config
from scheduler_ingest.settings import IngestSettings
from tests.unit.ingest.harness import SCHEDULING, Harness

from .conftest import LiveEnv, LiveHarness, live_harness, read_topic

pytestmark = pytest.mark.integration

SOON = "2026-01-01T00:05:00Z"


def test_kafka_unreachable_is_503_with_retry_after_and_nothing_stored(live_env: LiveEnv) -> None:
    dead = KafkaSettings(bootstrap_servers="127.0.0.1:1", topic_prefix=live_env.kafka.topic_prefix)
    publisher = KafkaPublisher(
        producer_config(dead, timeout_ms=1_000, linger_ms=0), SystemClock(), lambda *_: None
    )
    h = Harness(
        messages=CassandraMessageStore(live_env.session),
        apps=CassandraAppStore(live_env.session),
        usage=CassandraUsageStore(live_env.session),
        publisher=publisher,
        kafka=live_env.kafka,
        suffix="-dead",
    )
    try:
        r = h.schedule({"payload": 1, "sendAt": SOON, "idempotencyKey": "k1"})
        assert (r.status_code, r.json()["error"]) == (503, "unavailable")
        assert r.headers["Retry-After"] == "1"
        message_id = derived_message_id(h.alice.app_id, "k1")
        assert h.messages.get(h.alice.app_id, message_id) is None
        assert h.messages.list(h.alice.app_id, None, None, 10).items == []
        assert h.usage.read(h.alice.app_id, 0, 10**6) == []
        r = h.client.post(
            "/messages/batch",
            json={"messages": [{"payload": 1, "sendAt": SOON}]},
            headers=h.alice.data,
        )
        assert r.status_code == 503
        assert h.messages.list(h.alice.app_id, None, None, 10).items == []
        ready = h.client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["kafka"] == "down"
    finally:
        h.close()
        publisher.close(timeout_s=2)


def test_ready_when_kafka_and_cassandra_answer(live_env: LiveEnv, h: LiveHarness) -> None:
    assert h.client.get("/readyz").status_code == 200
    with_cassandra = Harness(
        messages=h.messages,
        apps=h.apps,
        usage=h.usage,
        publisher=live_env.publisher,
        kafka=live_env.kafka,
        suffix="-ready",
    )
    try:
        with_cassandra.app.state.gateway.probes = {
            **with_cassandra.app.state.gateway.probes,
            "cassandra": lambda: (
                live_env.session.execute("SELECT now() FROM system.local").one() is not None
            ),
        }
        r = with_cassandra.client.get("/readyz")
        assert r.status_code == 200
        assert r.json()["checks"] == {"kafka": "ok", "cassandra": "ok"}
    finally:
        with_cassandra.close()


def test_two_replicas_give_one_message_per_idempotency_key(live_env: LiveEnv) -> None:
    first = live_harness(live_env)
    # a second gateway process: its own app, caches and metrics, the same Cassandra and Kafka
    second = LiveHarness(
        messages=CassandraMessageStore(live_env.session),
        apps=first.apps,
        usage=first.usage,
        publisher=live_env.publisher,
        kafka=live_env.kafka,
        registry=CollectorRegistry(),
        suffix="-second",
    )
    try:
        body = {"payload": {"order": 7}, "sendAt": SOON, "idempotencyKey": "order-7"}
        a = first.schedule(body)
        b = second.client.post("/messages", json=body, headers=first.alice.data)
        assert a.status_code == b.status_code == 200
        assert a.json()["messageId"] == b.json()["messageId"]
        assert b.json()["duplicate"] is True
        assert len(first.published_requests()) == 1
    finally:
        first.close()
        second.close()


def test_secrets_are_not_stored_in_plain_text(live_env: LiveEnv, h: LiveHarness) -> None:
    control = h.client.post("/control-keys", headers=h.alice.control).json()
    data = h.client.post(f"/applications/{h.alice.app_id}/data-keys", headers=h.alice.control)
    secrets = [control["secret"], data.json()["secret"]]
    for table in ("control_keys", "control_keys_by_owner", "data_keys", "data_keys_by_app"):
        for row in live_env.session.execute(f"SELECT * FROM {table}"):
            text = repr(tuple(row))
            for secret in secrets:
                assert secret not in text and secret.encode() not in text.encode()


def test_payload_size_limit_on_the_real_stack(live_env: LiveEnv) -> None:
    h = live_harness(live_env, IngestSettings(max_body_bytes=4096))
    try:
        r = h.schedule({"payload": "x" * 5000, "sendAt": SOON})
        assert (r.status_code, r.json()["error"]) == (413, "body_too_large")
        assert h.published() == []
        assert h.messages.list(h.alice.app_id, None, None, 10).items == []
    finally:
        h.close()


def test_publish_many_settles_once_every_record_is_acknowledged(live_env: LiveEnv) -> None:
    # a topic of this module's set that no harness decodes (the records are not Avro)
    topic = Topics(live_env.kafka, SCHEDULING).dead_letter
    marker = uuid.uuid4().hex.encode()
    records = [(topic, marker, str(i).encode()) for i in range(300)]

    async def run() -> list[PublishError | None]:
        return await live_env.publisher.publish_many(records)

    assert asyncio.run(run()) == [None] * 300
    found = [r.value for r in read_topic(live_env.kafka, topic) if r.key == marker]
    assert found == [str(i).encode() for i in range(300)]  # one key: one partition, in order
    assert asyncio.run(live_env.publisher.publish_many([])) == []  # type: ignore[arg-type]


def test_a_payload_near_the_limit_is_recorded(h: LiveHarness) -> None:
    payload = "é" * 100_000  # 200,000 bytes of UTF-8: above Cassandra's batch limit
    r = h.schedule({"payload": payload, "sendAt": SOON})
    assert r.status_code == 200, r.text
    got = h.client.get(f"/messages/{r.json()['messageId']}", headers=h.alice.data)
    assert got.status_code == 200 and got.json()["payload"] == payload
    batch = h.client.post(
        "/messages/batch",
        json={"messages": [{"payload": payload, "sendAt": SOON}, {"payload": 1, "sendAt": SOON}]},
        headers=h.alice.data,
    ).json()
    assert batch["accepted"] == 2
    for item in batch["results"]:
        assert (
            h.client.get(f"/messages/{item['messageId']}", headers=h.alice.data).status_code == 200
        )
    assert "scheduler_ingest_record_write_failures_total 0.0" in h.metrics_text()


def test_a_failed_record_write_after_the_ack_still_answers_200(live_env: LiveEnv) -> None:
    class FailingWrites(CassandraMessageStore):
        def start_save_many(self, items: object, per_batch: int = 1) -> list[object]:
            # a real driver future that fails, as a Cassandra timeout or outage would
            return [live_env.session.execute_async("SELECT * FROM no_such_table")]

    h = LiveHarness(
        messages=FailingWrites(live_env.session),
        apps=CassandraAppStore(live_env.session),
        usage=CassandraUsageStore(live_env.session),
        publisher=live_env.publisher,
        kafka=live_env.kafka,
        settings=IngestSettings(usage_flush_ms=0),
        suffix="-" + uuid.uuid4().hex[:8],
    )
    try:
        r = h.schedule({"payload": 1, "sendAt": SOON})
        assert r.status_code == 200  # Kafka has it: the bucketer writes the record
        assert [p.message_id for p in h.published_requests()] == [r.json()["messageId"]]
        metrics = h.metrics_text()
        assert "scheduler_ingest_record_write_failures_total 1.0" in metrics
    finally:
        h.close()
