"""A KAFKA app's topic must exist when the app is created or its endpoint changed (the
dispatcher creates no topic: its first message would fail at once), unless the operator allows
missing topics: then the app is saved and the answer carries a warning."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scheduler_ingest.destinations import FakeTopicDirectory
from scheduler_ingest.settings import IngestSettings

from .harness import Harness

pytestmark = pytest.mark.unit

KAFKA_APP = {"name": "k", "type": "KAFKA", "endpoint": "tenant.orders"}


def harness(allow: bool = False, existing: tuple[str, ...] = ()) -> Harness:
    return Harness(
        settings=IngestSettings(
            kafka_endpoint_prefixes=["tenant."], allow_missing_kafka_topics=allow
        ),
        destinations=FakeTopicDirectory(existing),
    )


@pytest.fixture
def strict() -> Iterator[Harness]:
    h = harness(existing=("tenant.orders",))
    yield h
    h.close()


def test_an_existing_topic_is_accepted_without_warnings(strict: Harness) -> None:
    r = strict.client.post("/applications", json=KAFKA_APP, headers=strict.alice.control)
    assert r.status_code == 200, r.text
    assert r.json()["warnings"] == []
    assert strict.destinations.asked == ["tenant.orders"]  # type: ignore[attr-defined]


def test_a_missing_topic_is_refused_and_nothing_is_saved(strict: Harness) -> None:
    body = {**KAFKA_APP, "endpoint": "tenant.missing"}
    r = strict.client.post("/applications", json=body, headers=strict.alice.control)
    assert (r.status_code, r.json()["error"]) == (400, "unknown_topic"), r.text
    assert "'tenant.missing' does not exist" in r.json()["message"]
    assert [a.app_id for a in strict.apps.apps(strict.alice.owner)] == [strict.alice.app_id]


def test_an_update_to_a_missing_topic_is_refused(strict: Harness) -> None:
    app = strict.client.post("/applications", json=KAFKA_APP, headers=strict.alice.control).json()
    r = strict.client.put(
        f"/applications/{app['id']}",
        json={"endpoint": "tenant.missing"},
        headers=strict.alice.control,
    )
    assert (r.status_code, r.json()["error"]) == (400, "unknown_topic"), r.text
    assert strict.apps.get_app(app["id"]).endpoint == "tenant.orders"  # type: ignore[union-attr]
    # an update that leaves the endpoint alone does not ask Kafka
    asked = len(strict.destinations.asked)  # type: ignore[attr-defined]
    r = strict.client.put(
        f"/applications/{app['id']}", json={"name": "n"}, headers=strict.alice.control
    )
    assert r.status_code == 200 and r.json()["warnings"] == []
    assert len(strict.destinations.asked) == asked  # type: ignore[attr-defined]


def test_rest_apps_never_ask_kafka(strict: Harness) -> None:
    body = {"name": "r", "type": "REST", "endpoint": "https://example.com/hook"}
    assert strict.client.post("/applications", json=body, headers=strict.alice.control).is_success
    assert strict.destinations.asked == []  # type: ignore[attr-defined]


def test_kafka_not_answering_is_a_503_that_saves_nothing(strict: Harness) -> None:
    strict.destinations.down = True  # type: ignore[attr-defined]
    r = strict.client.post("/applications", json=KAFKA_APP, headers=strict.alice.control)
    assert (r.status_code, r.json()["error"]) == (503, "unavailable"), r.text
    assert r.headers["Retry-After"] == "1"
    assert [a.app_id for a in strict.apps.apps(strict.alice.owner)] == [strict.alice.app_id]


def test_the_operator_may_allow_missing_topics_with_a_warning() -> None:
    h = harness(allow=True)
    try:
        r = h.client.post("/applications", json=KAFKA_APP, headers=h.alice.control)
        assert r.status_code == 200, r.text
        [warning] = r.json()["warnings"]
        assert "'tenant.orders' does not exist" in warning
        assert "SCHEDULER_INGEST_ALLOW_MISSING_KAFKA_TOPICS" in warning
        assert h.apps.get_app(r.json()["id"]) is not None
        h.destinations.down = True  # type: ignore[attr-defined]
        r = h.client.put(
            f"/applications/{r.json()['id']}",
            json={"endpoint": "tenant.other"},
            headers=h.alice.control,
        )
        assert r.status_code == 200 and "could not be checked" in r.json()["warnings"][0]
    finally:
        h.close()
