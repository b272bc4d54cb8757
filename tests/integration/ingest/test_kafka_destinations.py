"""A KAFKA app's topic is checked against the real broker's metadata: an existing topic is
accepted, a missing one refused (400 unknown_topic) and not created by the check."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import AdminClient

from scheduler.testing.isolation import delete_topic
from scheduler_ingest.settings import IngestSettings
from tests.support.workload import create_topic

from .conftest import LiveEnv, LiveHarness, live_harness

pytestmark = pytest.mark.integration

PREFIX = "it-dest."


@pytest.fixture
def h(live_env: LiveEnv) -> Iterator[LiveHarness]:
    harness = live_harness(
        live_env, IngestSettings(usage_flush_ms=0, kafka_endpoint_prefixes=[PREFIX])
    )
    yield harness
    harness.close()


@pytest.fixture
def topic(live_env: LiveEnv) -> Iterator[str]:
    name = f"{PREFIX}{uuid.uuid4().hex[:10]}"
    create_topic(live_env.kafka, name)
    yield name
    delete_topic(live_env.kafka, name)


def test_an_existing_topic_is_accepted(h: LiveHarness, topic: str) -> None:
    body = {"name": "k", "type": "KAFKA", "endpoint": topic}
    r = h.client.post("/applications", json=body, headers=h.alice.control)
    assert r.status_code == 200, r.text
    assert r.json()["warnings"] == []


def test_a_missing_topic_is_refused_and_not_created(h: LiveHarness, live_env: LiveEnv) -> None:
    missing = f"{PREFIX}missing-{uuid.uuid4().hex[:10]}"
    body = {"name": "k", "type": "KAFKA", "endpoint": missing}
    r = h.client.post("/applications", json=body, headers=h.alice.control)
    assert (r.status_code, r.json()["error"]) == (400, "unknown_topic"), r.text
    topics = AdminClient(live_env.kafka.client_config()).list_topics(timeout=10).topics
    assert missing not in topics


def test_an_update_to_a_missing_topic_is_refused(h: LiveHarness, topic: str) -> None:
    body = {"name": "k", "type": "KAFKA", "endpoint": topic}
    app_id = h.client.post("/applications", json=body, headers=h.alice.control).json()["id"]
    r = h.client.put(
        f"/applications/{app_id}",
        json={"endpoint": f"{PREFIX}missing-{uuid.uuid4().hex[:10]}"},
        headers=h.alice.control,
    )
    assert (r.status_code, r.json()["error"]) == (400, "unknown_topic"), r.text
