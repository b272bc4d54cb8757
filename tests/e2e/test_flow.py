"""The whole system as four processes: 2,000 messages across horizons (past, near-term, and
long-horizon through Cassandra and the releaser), to both destination types, through the HTTP
API and the Kafka-native producer. Every one is delivered once, none early, every record ends
SENT with the right log."""

from __future__ import annotations

import random

import pytest

from scheduler.clock import SystemClock
from scheduler.domain.sendat import parse_rfc3339_ms
from tests.support.ledger import Ledger
from tests.support.processes import wait_for
from tests.support.workload import App, produce, schedule_batch

from .conftest import World

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLOCK = SystemClock()
BATCH = 200


def spread(now: int, rng: random.Random, n: int) -> dict[str, list[int]]:
    """n due times per horizon: past (deliver now), near (within the look-ahead: straight into
    the ring), long (beyond look-ahead + margin: stored in Cassandra, released later)."""
    return {
        "past": [now - rng.randint(1_000, 60_000) for _ in range(n // 10)],
        "near": [now + rng.randint(500, 3_500) for _ in range(n * 4 // 10)],
        "long": [now + rng.randint(7_000, 18_000) for _ in range(n - n // 10 - n * 4 // 10)],
    }


def listed(app: App, status: str) -> set[str]:
    """Every message id of the app with this status, through the paged list route."""
    ids: set[str] = set()
    cursor = None
    while True:
        params = {"status": status, "limit": 500, **({"startFrom": cursor} if cursor else {})}
        page = app.client.get("/messages", params=params)
        assert page.status_code == 200, page.text
        ids |= {m["messageId"] for m in page.json()["messages"]}
        cursor = page.json()["next"]
        if not cursor:
            return ids


def test_two_thousand_messages_delivered_once_never_early_and_recorded(
    shared_world: World,
) -> None:
    w = shared_world
    rng = random.Random(6)
    ledger = Ledger()
    horizon: dict[str, str] = {}  # message id -> past / near / long
    now = CLOCK.now_ms()
    plans = [
        (w.rest, "http", 800),
        (w.kafka_app, "http", 600),
        (w.rest, "producer", 300),
        (w.kafka_app, "producer", 300),
    ]
    for app, route, n in plans:
        for kind, send_ats in spread(now, rng, n).items():
            for i in range(0, len(send_ats), BATCH):
                chunk = send_ats[i : i + BATCH]
                if route == "http":
                    ids = schedule_batch(app, ledger, chunk, tag=kind)
                else:
                    ids = produce(w.kafka, w.scheduling, app, ledger, chunk)
                horizon.update(dict.fromkeys(ids, kind))
    assert len(ledger) == 2_000
    scheduled_in_s = (CLOCK.now_ms() - now) / 1000
    last_due = max(p.send_at_ms for p in ledger.planned.values())

    report = w.wait_delivered(ledger, timeout_s=(last_due - CLOCK.now_ms()) / 1000 + 60)
    print(f"scheduled 2,000 in {scheduled_in_s:.1f} s; {report.summary()}")
    assert report.lost == []
    assert report.early == []
    assert report.duplicates == {}, report.duplicates

    # Every record ends SENT (the record writer applies the results asynchronously).
    for app in (w.rest, w.kafka_app):
        mine = {m for m, p in ledger.planned.items() if p.destination == app.destination}
        wait_for(
            f"{app.destination} records SENT", lambda a=app, m=mine: m <= listed(a, "SENT"), 60
        )

    # The record and the log of a sample of each horizon and destination.
    by_app = {"rest": w.rest, "kafka": w.kafka_app}
    for kind in ("past", "near", "long"):
        for dest, app in by_app.items():
            sample = [
                m for m, k in horizon.items() if k == kind and ledger.planned[m].destination == dest
            ]
            for message_id in rng.sample(sample, 5):
                record = app.client.get(f"/messages/{message_id}").json()
                assert record["status"] == "SENT", record
                assert record["attempt"] == 1 and record["generation"] == 0, record
                # never early, on the raw instants (latenessMs is clamped at 0, so it cannot
                # show an early delivery): SENT at (`updated`) is not before `dueAt`, and the
                # lateness is exactly that difference
                sent_at, due_at = (
                    parse_rfc3339_ms(record["updated"]),
                    parse_rfc3339_ms(record["dueAt"]),
                )
                assert sent_at >= due_at, record
                assert record["latenessMs"] == sent_at - due_at, record
                logs = app.client.get(f"/messages/{message_id}/logs").json()["logs"]
                statuses = [entry["status"] for entry in logs]
                assert statuses[-1] == "SENT" and statuses.count("SENT") == 1, logs
                assert "READY" in statuses or "QUEUED" in statuses, logs
                if kind == "long":  # stored, then released by the releaser
                    assert "READY" in statuses and "QUEUED" in statuses, logs
                sent = logs[-1]["data"]  # rendered in the API's vocabulary (log_view.py)
                assert sent["latenessMs"] == record["latenessMs"], logs
                assert 0 <= record["dispatchDelayMs"] <= record["latenessMs"], record
