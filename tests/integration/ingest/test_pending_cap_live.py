"""The per-app cap on pending messages against the real Kafka and Cassandra.

Ingest publishes to Kafka and counts in Cassandra; a delivery is recorded by the dispatcher's
real record writer (scheduler_releaser.dispatcher.record_writer) on the same Cassandra stores,
which is where SENT and FAILED move the pending count in production. The gateway's clock is a
ManualClock, so the cache refresh interval passes without sleeping.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from httpx import Response

from scheduler.domain.status import Status
from scheduler.records import DeliveryOutcome, DeliveryResult
from scheduler_ingest.recount import main as recount_main
from scheduler_ingest.recount import recount_pending
from scheduler_ingest.settings import IngestSettings
from scheduler_releaser.dispatcher.record_writer import RecordWriter

from .conftest import LiveEnv, LiveHarness, live_harness

pytestmark = pytest.mark.integration

CAP = 3
REFRESH_MS = 5_000
BODY = {"payload": {"n": 1}, "sendAt": "2026-01-01T00:10:00Z"}


@pytest.fixture
def capped(live_env: LiveEnv) -> Iterator[LiveHarness]:
    harness = live_harness(
        live_env,
        IngestSettings(usage_flush_ms=0, max_pending_per_app=CAP, pending_refresh_ms=REFRESH_MS),
    )
    yield harness
    harness.close()


def stored_ids(h: LiveHarness) -> set[str]:
    page = h.messages.list(h.alice.app_id, None, None, 50)
    return {view.content.message_id for view in page.items}


def assert_refused(response: Response) -> None:
    body = response.json()
    assert (response.status_code, body["error"]) == (429, "pending_limit_exceeded"), body
    assert response.headers["Retry-After"] == "5"


def test_cap_refuses_at_the_limit_stores_nothing_and_frees_room_on_abort_and_delivery(
    capped: LiveHarness,
) -> None:
    h = capped
    ids = [h.schedule(BODY).json()["scheduledMessageId"] for _ in range(CAP)]
    assert len(set(ids)) == CAP
    assert h.usage.pending(h.alice.app_id) == CAP

    # At the cap: 429, nothing published to Kafka, nothing recorded in Cassandra.
    assert_refused(h.schedule(BODY))
    batch = {"messages": [BODY, BODY]}
    assert_refused(h.client.post("/messages/batch", json=batch, headers=h.alice.data))
    assert len(h.published_requests()) == CAP
    assert stored_ids(h) == set(ids)
    assert h.usage.pending(h.alice.app_id) == CAP

    # An abort frees one place at once (this replica wrote it).
    r = h.client.put(f"/messages/{ids[0]}/abort", headers=h.alice.data)
    assert (r.status_code, r.json()["status"]) == (200, "ABORTED")
    assert h.usage.pending(h.alice.app_id) == CAP - 1
    fourth = h.schedule(BODY)
    assert fourth.status_code == 200
    assert_refused(h.schedule(BODY))

    # A delivery recorded by the dispatcher's record writer frees one more, seen by the
    # gateway at its next read of the count.
    due = h.clock.now_ms() + 600_000
    RecordWriter(h.messages, h.usage).apply(
        DeliveryResult(
            message_id=ids[1],
            app_id=h.alice.app_id,
            generation=0,
            attempt=1,
            outcome=DeliveryOutcome.SENT,
            due_ms=due,
            finished_ms=due + 3,
            lateness_ms=3,
            http_status=200,
        )
    )
    view = h.messages.get(h.alice.app_id, ids[1])
    assert view is not None and view.state.status is Status.SENT
    assert h.usage.pending(h.alice.app_id) == CAP - 1
    assert_refused(h.schedule(BODY))  # the cached reading is still in use
    h.clock.advance(REFRESH_MS)
    fifth = h.schedule(BODY)
    assert fifth.status_code == 200
    assert_refused(h.schedule(BODY))

    accepted = {*ids, fourth.json()["scheduledMessageId"], fifth.json()["scheduledMessageId"]}
    assert len(h.published_requests()) == CAP + 2
    assert stored_ids(h) == accepted
    assert h.usage.pending(h.alice.app_id) == CAP
    # Bob's application has its own count.
    assert h.schedule(BODY, h.bob).status_code == 200

    # Drift (e.g. a delivery result replayed after a crash) is corrected from the records.
    h.usage.add_pending(h.alice.app_id, -2)
    r = recount_pending(h.messages, h.usage, h.alice.app_id, page_size=2)
    assert (r.counted, r.pending) == (CAP - 2, CAP)
    assert h.usage.pending(h.alice.app_id) == CAP


def test_recount_command_reports_and_corrects(
    capped: LiveHarness, live_env: LiveEnv, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    h = capped
    assert h.schedule(BODY).status_code == 200
    h.usage.add_pending(h.alice.app_id, 4)
    settings = live_env.cassandra
    monkeypatch.setenv("SCHEDULER_CASSANDRA_CONTACT_POINTS", json.dumps(settings.contact_points))
    monkeypatch.setenv("SCHEDULER_CASSANDRA_PORT", str(settings.port))
    monkeypatch.setenv("SCHEDULER_CASSANDRA_KEYSPACE", settings.keyspace)
    assert recount_main(["--app", h.alice.app_id, "--dry-run"]) == 0
    assert h.usage.pending(h.alice.app_id) == 5
    assert recount_main(["--app", h.alice.app_id]) == 0
    assert h.usage.pending(h.alice.app_id) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{h.alice.app_id}: counter 5, records pending 1: would correct by -4",
        f"{h.alice.app_id}: counter 5, records pending 1: corrected by -4",
    ]
