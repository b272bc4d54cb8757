"""Rate limits, quotas, JSON errors everywhere, health and metrics (fakes, ManualClock)."""

from __future__ import annotations

import asyncio

import pytest

from scheduler.store.usage import InMemoryUsageStore, UsageKind, usage_day
from scheduler_ingest.io import BlockingIo
from scheduler_ingest.settings import IngestSettings
from scheduler_ingest.usage import UsageCounter

from .harness import T0, Harness

pytestmark = pytest.mark.unit

BODY = {"payload": 1, "sendAt": "2026-01-01T00:05:00Z"}


def test_rate_limit_per_data_key_with_retry_after() -> None:
    h = Harness(settings=IngestSettings(rate_per_s=1, rate_burst=2))
    try:
        assert [h.schedule(BODY).status_code for _ in range(2)] == [200, 200]
        r = h.schedule(BODY)
        assert (r.status_code, r.json()["error"]) == (429, "rate_limited")
        assert r.headers["Retry-After"] == "1"
        assert h.schedule(BODY, h.bob).status_code == 200  # another key has its own bucket
        h.clock.advance(1_000)
        assert h.schedule(BODY).status_code == 200
        assert h.schedule(BODY).status_code == 429
        batch = {"messages": [BODY, BODY, BODY]}
        h.clock.advance(10_000)
        r = h.client.post("/messages/batch", json=batch, headers=h.alice.data)
        assert (r.status_code, r.json()["error"]) == (429, "rate_limited")  # 3 > burst
        assert len(h.published_requests()) == 4
    finally:
        h.close()


def test_daily_quota_per_app() -> None:
    h = Harness(settings=IngestSettings(daily_quota=2))
    try:
        assert [h.schedule(BODY).status_code for _ in range(2)] == [200, 200]
        r = h.schedule(BODY)
        assert (r.status_code, r.json()["error"]) == (429, "quota_exceeded")
        assert r.headers["Retry-After"] == "86400"
        h.clock.advance(86_400_000)
        assert h.schedule({**BODY, "sendAt": "2026-01-02T00:05:00Z"}).status_code == 200
    finally:
        h.close()


def test_refused_requests_do_not_use_the_quota() -> None:
    h = Harness(settings=IngestSettings(daily_quota=1))
    try:
        assert h.schedule({"payload": 1, "sendAt": "bad"}).status_code == 400
        assert h.schedule(BODY).status_code == 200
    finally:
        h.close()


def test_unknown_routes_and_methods_are_json(h: Harness) -> None:
    r = h.client.get("/nope")
    assert (r.status_code, r.json()["error"]) == (404, "not_found")
    r = h.client.delete("/messages", headers=h.alice.data)
    assert (r.status_code, r.json()["error"]) == (405, "method_not_allowed")


def test_unexpected_errors_are_500_json_without_a_trace(h: Harness) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("secret internal detail")

    h.messages.get = broken  # type: ignore[method-assign]
    r = h.client.get("/messages/01ARZ3NDEKTSV4RRFFQ69G5FAV", headers=h.alice.data)
    assert r.status_code == 500
    assert r.json() == {"error": "internal", "message": "internal error; it has been logged"}
    assert "secret internal detail" not in r.text and "Traceback" not in r.text


def test_the_public_port_does_not_serve_metrics(h: Harness) -> None:
    """/metrics carries app ids in its labels: it is served on the metrics port only."""
    h.schedule(BODY)
    assert h.client.get("/metrics").status_code == 404
    assert "scheduler_ingest_messages_scheduled_total" in h.metrics_text()


def test_health_ready_and_metrics(h: Harness) -> None:
    assert h.client.get("/healthz").json() == {"status": "ok"}
    r = h.client.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"] == {"kafka": "ok"}
    h.fake.is_ready = False
    r = h.client.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"] == {"kafka": "down"}
    h.schedule(BODY)
    h.schedule({"payload": 1})
    text = h.metrics_text()
    assert (
        'scheduler_ingest_requests_total{method="POST",route="/messages",status="200"} 1.0' in text
    )
    assert 'scheduler_ingest_rejects_total{reason="missing_sendAt"} 1.0' in text
    assert 'scheduler_ingest_messages_scheduled_total{source="single"} 1.0' in text
    assert "scheduler_ingest_request_seconds_bucket" in text


def test_openapi_describes_every_route(h: Harness) -> None:
    spec = h.client.get("/openapi.json").json()
    paths = spec["paths"]
    expected = {
        "/messages": {"get", "post"},
        "/message": {"post"},
        "/messages/batch": {"post"},
        "/messages/{messageId}": {"get"},
        "/messages/{messageId}/logs": {"get"},
        "/messages/{messageId}/abort": {"put"},
        "/messages/{messageId}/redrive": {"put"},
        "/messages/{messageId}/reschedule": {"put"},
        "/messages/abort": {"post"},
        "/messages/redrive": {"post"},
        "/applications": {"get", "post"},
        "/applications/{appId}": {"get", "put", "delete"},
        "/applications/{appId}/data-keys": {"get", "post"},
        "/applications/{appId}/data-keys/{dataKeyId}/deactivate": {"put"},
        "/control-keys": {"get", "post"},
        "/control-keys/{controlKeyId}/deactivate": {"put"},
        "/applications/{appId}/messages": {"get"},
        "/applications/{appId}/messages/{messageId}": {"get"},
        "/applications/{appId}/messages/{messageId}/logs": {"get"},
        "/applications/{appId}/messages/{messageId}/abort": {"put"},
        "/applications/{appId}/messages/{messageId}/redrive": {"put"},
        "/applications/{appId}/messages/{messageId}/reschedule": {"put"},
        "/applications/{appId}/messages/abort": {"post"},
        "/applications/{appId}/messages/redrive": {"post"},
        "/applications/{appId}/signing-secret/rotate": {"post"},
        "/applications/{appId}/usage": {"get"},
        "/applications/{appId}/pause": {"put"},
        "/applications/{appId}/resume": {"put"},
        "/schedules": {"get", "post"},
        "/schedules/{scheduleId}": {"get", "put", "delete"},
        "/schedules/{scheduleId}/pause": {"put"},
        "/schedules/{scheduleId}/resume": {"put"},
        "/applications/{appId}/schedules": {"get", "post"},
        "/applications/{appId}/schedules/{scheduleId}": {"get", "put", "delete"},
        "/applications/{appId}/schedules/{scheduleId}/pause": {"put"},
        "/applications/{appId}/schedules/{scheduleId}/resume": {"put"},
        "/healthz": {"get"},
        "/readyz": {"get"},
    }
    assert {p: set(ops) for p, ops in paths.items()} == expected
    schedule = paths["/messages"]["post"]
    assert schedule["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "payload",
        "sendAt",
    ]
    assert schedule["security"] == [{"DataKey": []}]
    create = paths["/schedules"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["expression", "payload"] and "paused" in body["properties"]
    update = paths["/schedules/{scheduleId}"]["put"]["requestBody"]["content"]
    assert "paused" not in update["application/json"]["schema"]["properties"]
    assert create["security"] == [{"DataKey": []}]
    assert paths["/applications/{appId}/schedules"]["post"]["security"] == [{"ControlKey": []}]
    assert paths["/schedules/{scheduleId}"]["get"]["tags"] == ["schedules"]
    assert paths["/applications/{appId}/schedules"]["get"]["tags"] == ["dashboard"]
    out = spec["components"]["schemas"]["ScheduleOut"]["properties"]
    assert {"scheduleId", "createdUntil", "nextOccurrence"} <= set(out)
    assert paths["/applications"]["get"]["security"] == [{"ControlKey": []}]


def test_buffered_usage_is_written_at_shutdown_in_one_counter_write() -> None:
    h = Harness(settings=IngestSettings(usage_flush_ms=3_600_000))
    writes: list[tuple[str, int, int]] = []
    real_add = h.usage.add

    def counting_add(app_id: str, day: int, kind: UsageKind, n: int = 1) -> None:
        writes.append((app_id, day, n))
        real_add(app_id, day, kind, n)

    h.usage.add = counting_add  # type: ignore[method-assign]
    for _ in range(3):
        assert h.schedule(BODY).status_code == 200
    assert writes == []  # counted in memory only
    h.close()  # application shutdown flushes
    assert writes == [(h.alice.app_id, usage_day(T0), 3)]
    assert h.usage.read(h.alice.app_id, 0, 10**6)[0].ingested == 3


def test_a_failed_usage_flush_is_kept_for_the_next_one() -> None:
    store = InMemoryUsageStore()
    counter = UsageCounter(store, BlockingIo(1), flush_interval_ms=1_000)
    asyncio.run(counter.count("app", 5, 2))
    real_add, calls = store.add, []

    def failing(*args: object) -> None:
        calls.append(args)
        raise RuntimeError("cassandra down")

    store.add = failing  # type: ignore[method-assign]
    counter.flush()
    assert len(calls) == 1 and store.read("app", 0, 10) == []
    store.add = real_add  # type: ignore[method-assign]
    asyncio.run(counter.count("app", 5, 1))
    counter.flush()
    assert store.read("app", 0, 10)[0].ingested == 3
