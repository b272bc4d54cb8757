"""Recurring schedules through the whole system: the routes, the releaser's occurrence runner,
the bucketer, the dispatcher. Occurrences arrive once each, never early, as messages with their
derived ids; a pause stops them (aborting what was created ahead), a resume starts them again
(bringing back what the pause aborted, so a short pause leaves no gap), a delete stops them for
good. Shrunk settings: a tick of 200 ms, a look-ahead of 3 s."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from scheduler.clock import SystemClock
from scheduler.domain.ids import occurrence_message_id
from scheduler.domain.sendat import parse_rfc3339_ms
from tests.support.ledger import Ledger, Planned
from tests.support.processes import wait_for
from tests.support.workload import App

from .conftest import World

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLOCK = SystemClock()
LOOKAHEAD_MS = 3_000  # SCHEDULER_RELEASE_SCHEDULE_LOOKAHEAD_MS of the test processes


def create(app: App, body: dict[str, object]) -> str:
    answer = app.client.post("/schedules", json=body)
    assert answer.status_code == 200, answer.text
    schedule_id: str = answer.json()["scheduleId"]
    return schedule_id


def occurrences(app: App, schedule_id: str, start: int, every_ms: int, n: int) -> dict[str, int]:
    """message id -> instant of the first n occurrences."""
    return {
        occurrence_message_id(app.app_id, schedule_id, start + k * every_ms): start + k * every_ms
        for k in range(n)
    }


def every_second(w: World, app: App) -> tuple[str, dict[str, int], Callable[[], dict[str, int]]]:
    """A rate(1 second) schedule starting in a second: its id, its first 600 occurrences (id ->
    instant) and what has arrived of them (id -> received)."""
    start = CLOCK.now_ms() + 1_000
    schedule_id = create(app, {"expression": "rate(1 second)", "start": start, "payload": {}})
    instants = occurrences(app, schedule_id, start, 1_000, 600)

    def arrived() -> dict[str, int]:
        return {
            a.message_id: a.received_ms for a in w.arrivals.snapshot() if a.message_id in instants
        }

    return schedule_id, instants, arrived


def test_occurrences_are_delivered_once_each_never_early(shared_world: World) -> None:
    w = shared_world
    now = CLOCK.now_ms()
    start = now + 2_000
    ledger = Ledger()
    for app, every in ((w.rest, 1), (w.kafka_app, 2)):
        body = {
            "expression": f"rate({every} second{'s' if every > 1 else ''})",
            "start": start,
            "end": start + 6_000,
            "payload": {"report": app.destination},
        }
        schedule_id = create(app, body)
        for message_id, instant in occurrences(app, schedule_id, start, every * 1_000, 7).items():
            if instant <= start + 6_000:
                ledger.add(Planned(message_id, instant, app.destination, now))
    assert len(ledger) == 7 + 4
    report = w.wait_delivered(ledger, timeout_s=(start + 6_000 - CLOCK.now_ms()) / 1000 + 30)
    print(report.summary())
    assert report.lost == [] and report.early == [] and report.duplicates == {}
    some = next(m for m, p in ledger.planned.items() if p.destination == "rest")
    record = w.rest.client.get(f"/messages/{some}").json()
    assert record["status"] in ("QUEUED", "SENT") and record["source"].startswith("schedule:")


def test_a_pause_stops_the_occurrences_a_resume_restarts_them_a_delete_ends_them(
    shared_world: World,
) -> None:
    w, app = shared_world, shared_world.rest
    schedule_id, instants, arrived = every_second(w, app)

    wait_for("two occurrences", lambda: len(arrived()) >= 2, 30)
    asked = CLOCK.now_ms()
    paused = app.client.put(f"/schedules/{schedule_id}/pause")
    assert paused.status_code == 200, paused.text
    created_until = parse_rfc3339_ms(paused.json()["createdUntil"])
    assert created_until is not None and created_until > asked + w.scheduling.cancel_guard_ms
    time.sleep((LOOKAHEAD_MS + 2_000) / 1000)
    after_pause = {m: instants[m] for m in arrived() if instants[m] > asked + 1_000}
    # Only what was due within the guard of the pause may still fire (plus the clock step).
    assert after_pause == {}, after_pause
    aborted = [m for m, t in instants.items() if asked + 1_000 < t <= created_until]
    assert aborted, "the runner had created nothing ahead: the test proves nothing"
    for message_id in aborted:
        record = app.client.get(f"/messages/{message_id}").json()
        assert record["status"] == "ABORTED", record

    resumed_at = CLOCK.now_ms()
    assert app.client.put(f"/schedules/{schedule_id}/resume").status_code == 200
    wait_for(
        "occurrences after the resume",
        lambda: sum(1 for m in arrived() if instants[m] > resumed_at) >= 2,
        30,
    )
    early = {m: r for m, r in arrived().items() if r < instants[m]}
    assert early == {}, early

    deleted_at = CLOCK.now_ms()
    assert app.client.delete(f"/schedules/{schedule_id}").status_code in (200, 204)
    time.sleep((LOOKAHEAD_MS + 2_000) / 1000)
    late = {m for m in arrived() if instants[m] > deleted_at + 1_000}
    assert late == set(), late
    assert app.client.get(f"/schedules/{schedule_id}").status_code == 404


def test_a_short_pause_leaves_no_gap_after_the_resume(shared_world: World) -> None:
    """Paused for half a second, under the look-ahead: the occurrences the pause aborted ahead
    are brought back by the resume, and every one due after it (and its cancel guard) arrives,
    once, never early."""
    w, app = shared_world, shared_world.rest
    schedule_id, instants, arrived = every_second(w, app)

    wait_for("two occurrences", lambda: len(arrived()) >= 2, 30)
    paused = app.client.put(f"/schedules/{schedule_id}/pause")
    assert paused.status_code == 200, paused.text
    created_until = parse_rfc3339_ms(paused.json()["createdUntil"])
    assert created_until is not None
    time.sleep(0.5)
    resumed_at = CLOCK.now_ms()
    assert app.client.put(f"/schedules/{schedule_id}/resume").status_code == 200
    after = resumed_at + w.scheduling.cancel_guard_ms + 100  # the resume's own clock is later
    expected = {m for m, t in instants.items() if after < t <= resumed_at + 6_000}
    revived = sorted(m for m in expected if instants[m] <= created_until)
    assert revived, f"nothing aborted ahead of the resume (created until {created_until - after})"
    wait_for("every occurrence after the resume", lambda: expected <= set(arrived()), 30)
    early = {m: r for m, r in arrived().items() if r < instants[m]}
    assert early == {}, early
    record = app.client.get(f"/messages/{revived[0]}").json()
    assert (record["status"], record["generation"]) == ("SENT", 1), record
    duplicates = [a.message_id for a in w.arrivals.snapshot() if a.message_id in expected]
    assert len(duplicates) == len(expected), "an occurrence arrived twice"
    assert app.client.delete(f"/schedules/{schedule_id}").status_code in (200, 204)
