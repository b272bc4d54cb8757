"""Idempotency keys under a real race: two ingest gateways (two apps with their own services,
caches and metrics, as two replicas) and a Kafka-native producer send requests with the same
keys at the same instant, with equal and with different bodies, against the real Kafka and
Cassandra, with a real bucketer consuming meanwhile.

Whoever wins a key, afterwards: exactly one message per key (one record, one stored row, both
with the winner's body); every HTTP request with another body got 409 `idempotency_conflict`;
every HTTP request with the winner's body got 200 with the winner's id, and at most one of them
`duplicate: false`; the producer's request with another body is in `scheduler.rejected` with
reason `idempotency_conflict`, with the winner's body it is not; ingest never published another
body under a key.

Uses only what the previous release already had (no import of the claim code), so the same
file runs against it: there it fails (both gateways answer 200 `duplicate: false`, and the
bucketer stores two rows with different due times for one message id)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from cassandra.cluster import Session
from prometheus_client import CollectorRegistry

from scheduler.clock import ManualClock, SystemClock
from scheduler.domain.ids import derived_message_id
from scheduler.producer import SchedulerProducer
from scheduler.settings import CassandraSettings, KafkaSettings, SchedulingSettings
from scheduler.store.cassandra_apps import CassandraAppStore
from scheduler.store.cassandra_messages import CassandraMessageStore
from scheduler.store.usage import CassandraUsageStore
from scheduler_ingest.publisher import KafkaPublisher, producer_config
from scheduler_ingest.settings import IngestSettings
from tests.integration.bucketer.support import REJECTED, REQUESTS, make_stack, wait_until
from tests.unit.ingest.harness import Harness

pytestmark = pytest.mark.integration

KEYS = 24
CONFLICT = "idempotency_conflict"


def body(key: int, variant: str, base_ms: int) -> dict[str, Any]:
    """Variant X, Y or Z of the request for key `key`: another payload and sendAt each."""
    shift = {"X": 0, "Y": 500, "Z": 700}[variant]
    return {
        "payload": {"key": key, "variant": variant},
        "sendAt": base_ms + key * 1_000 + shift,
        "idempotencyKey": f"race-{key}",
    }


def variants(key: int) -> tuple[str, str, str]:
    """(gateway A, gateway B, producer): every mix of equal and different bodies."""
    return {0: ("X", "X", "X"), 1: ("X", "Y", "X"), 2: ("X", "X", "Z"), 3: ("X", "Y", "Z")}[key % 4]


def http_delay_s(key: int) -> float:
    """The gateways start at once with the producer for half the keys; for the other half they
    wait up to 0.6 s, by which time the bucketer may have claimed the producer's request."""
    return 0.0 if key % 2 == 0 else 0.1 * (key % 7)


def canonical(payload_json: str, send_at_ms: int) -> tuple[str, int]:
    return json.dumps(json.loads(payload_json), sort_keys=True), send_at_ms


def test_two_gateways_and_a_producer_racing_on_keys_make_one_message_per_key(
    kafka_settings: KafkaSettings,
    cassandra_settings: CassandraSettings,
    scheduling_settings: SchedulingSettings,
    cassandra_session: Session,
) -> None:
    stack = make_stack(kafka_settings, cassandra_settings, scheduling_settings, cassandra_session)
    now = SystemClock().now_ms()
    base = now + 600_000  # stored in buckets (no releaser runs): one row per stored message
    publisher = KafkaPublisher(
        producer_config(kafka_settings, timeout_ms=10_000, linger_ms=1.0),
        SystemClock(),
        lambda *_: None,
    )
    session = cassandra_session

    def gateway(suffix: str, apps: CassandraAppStore | None = None) -> Harness:
        return Harness(
            settings=IngestSettings(usage_flush_ms=0),
            clock=ManualClock(now),
            messages=CassandraMessageStore(session),
            apps=apps or CassandraAppStore(session),
            usage=CassandraUsageStore(session),
            publisher=publisher,
            registry=CollectorRegistry(),
            kafka=kafka_settings,
            suffix=suffix,
        )

    first = gateway("-" + uuid.uuid4().hex[:6])
    second = gateway("-" + uuid.uuid4().hex[:6], apps=first.apps)  # the other replica
    app_id, headers = first.alice.app_id, first.alice.data
    producer = SchedulerProducer(kafka_settings, scheduling_settings)
    barrier = threading.Barrier(3)
    answers: dict[tuple[int, str], tuple[str, Any]] = {}  # (key, racer) -> (variant, response)

    def over_http(harness: Harness, racer: str) -> None:
        for key in range(KEYS):
            variant = variants(key)[0 if racer == "A" else 1]
            barrier.wait(timeout=60)
            time.sleep(http_delay_s(key))
            response = harness.client.post(
                "/messages", json=body(key, variant, base), headers=headers
            )
            answers[(key, racer)] = (variant, response)

    def over_kafka() -> None:
        for key in range(KEYS):
            b = body(key, variants(key)[2], base)
            barrier.wait(timeout=60)
            producer.schedule(
                app_id, b["payload"], b["sendAt"], idempotency_key=b["idempotencyKey"]
            )
            producer.flush()

    try:
        with stack.bucketer_thread():
            with ThreadPoolExecutor(3) as pool:
                futures = [
                    pool.submit(over_http, first, "A"),
                    pool.submit(over_http, second, "B"),
                    pool.submit(over_kafka),
                ]
                for future in futures:
                    future.result(timeout=300)
            wait_until(stack.committed_everything, 90, "the bucketer to consume every request")
    finally:
        producer.close()
        first.close()
        second.close()
        publisher.close()

    messages = CassandraMessageStore(session)
    rows: dict[str, list[int]] = {}
    for row in session.execute("SELECT message_id, due_ms FROM due_by_bucket"):
        rows.setdefault(row.message_id, []).append(row.due_ms)
    rejected: dict[str, list[str]] = {}
    for value in stack.read_topics([stack.topics.rejected], expected=0, timeout_s=5):
        rejection = REJECTED.decode(value)
        rejected.setdefault(rejection.message_id or "", []).append(rejection.reason)
    published_by_ingest: dict[str, set[tuple[str, int]]] = {}
    for value in stack.read_topics([stack.topics.requests], expected=3 * KEYS, timeout_s=30):
        request = REQUESTS.decode(value)
        if request.source == "http":
            published_by_ingest.setdefault(request.message_id, set()).add(
                canonical(request.payload_json, request.send_at_ms)
            )

    problems: list[str] = []
    sources: dict[str, int] = {}
    for key in range(KEYS):
        message_id = derived_message_id(app_id, f"race-{key}")
        view = messages.get(app_id, message_id)
        if view is None:
            problems.append(f"key {key}: no record")
            continue
        winner = canonical(view.content.payload_json, view.content.send_at_ms)
        sources[view.content.source] = sources.get(view.content.source, 0) + 1

        def is_winner(variant: str, key: int = key, winner: tuple[str, int] = winner) -> bool:
            b = body(key, variant, base)
            return canonical(json.dumps(b["payload"]), b["sendAt"]) == winner

        if rows.get(message_id) != [view.content.send_at_ms]:
            problems.append(f"key {key}: stored rows {rows.get(message_id)}, one message expected")
        fresh = 0
        for racer in ("A", "B"):
            variant, response = answers[(key, racer)]
            got = (response.status_code, response.json())
            if is_winner(variant):
                if got[0] != 200 or got[1].get("messageId") != message_id:
                    problems.append(f"key {key} {racer} ({variant}, the winner's body): {got}")
                fresh += got[0] == 200 and got[1].get("duplicate") is False
            elif got[0] != 409 or got[1].get("error") != CONFLICT:
                problems.append(f"key {key} {racer} ({variant}, another body): {got}, 409 expected")
        if fresh > 1:
            problems.append(f"key {key}: {fresh} answers said duplicate=false")
        producer_variant = variants(key)[2]
        expected_rejections = [] if is_winner(producer_variant) else [CONFLICT]
        if rejected.get(message_id, []) != expected_rejections:
            problems.append(
                f"key {key}: producer ({producer_variant}) rejections {rejected.get(message_id)},"
                f" expected {expected_rejections}"
            )
        if published_by_ingest.get(message_id, {winner}) != {winner}:
            problems.append(f"key {key}: ingest published {published_by_ingest[message_id]}")
    print(f"winning records by source: {sources}; producer requests rejected: {len(rejected)}")
    assert not problems, "\n".join(problems)
