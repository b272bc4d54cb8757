"""An application's delivery policy through the whole system (real processes): a rate limit
spreads a burst and drops nothing while another app is not held; a paused app's due messages
wait and are delivered after the resume."""

from __future__ import annotations

import contextlib
import time

import httpx
import pytest

from scheduler.clock import SystemClock
from tests.support.ledger import Ledger
from tests.support.processes import wait_for
from tests.support.workload import App, create_app, schedule_batch

from .conftest import World

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLOCK = SystemClock()


def app_with(w: World, changes: dict[str, object]) -> App:
    app = create_app(w.system.ingest, w.control_key, "REST", w.receiver_url)
    answer = httpx.put(
        f"{w.system.ingest}/applications/{app.app_id}",
        headers={"Authorization": f"Token {w.control_key}"},
        json=changes,
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return app


def arrived(w: World, ids: set[str]) -> dict[str, int]:
    return {a.message_id: a.received_ms for a in w.arrivals.snapshot() if a.message_id in ids}


def test_a_rate_limit_spreads_a_burst_and_another_app_is_not_held(shared_world: World) -> None:
    w = shared_world
    rate = 20
    # closed even when an assertion fails: a socket left to the collector fails a later test
    with contextlib.closing(
        app_with(w, {"deliveryPolicy": {"ratePerSecond": rate, "rateBurst": 1}})
    ) as limited:
        time.sleep(1.5)  # the dispatcher's app cache (1 s) sees the policy before anything is due
        due = CLOCK.now_ms() + 3_000
        ledger = Ledger()
        limited_ids = set(schedule_batch(limited, ledger, [due] * 100, "limited"))
        free_ids = set(schedule_batch(w.rest, ledger, [due] * 50, "free"))
        report = w.wait_delivered(ledger, timeout_s=60)
        assert report.lost == [] and report.early == []
        limited_at = sorted(arrived(w, limited_ids).values())
        free_at = sorted(arrived(w, free_ids).values())
        # 100 at 20/s: the last about 4.95 s after the first; the free app all within a second
        assert limited_at[-1] - limited_at[0] >= 4_500, limited_at[-1] - limited_at[0]
        assert free_at[-1] - due < 1_000, free_at[-1] - due
        busiest = max(
            sum(1 for t in limited_at if start <= t < start + 2_000) for start in limited_at
        )
        assert busiest <= 2 * rate + 2, busiest  # two seconds' worth, the burst, a timing slack


def test_a_paused_apps_due_messages_wait_and_arrive_after_the_resume(
    shared_world: World,
) -> None:
    w = shared_world
    with contextlib.closing(app_with(w, {"description": "paused during an outage"})) as app:
        w.control(app, "pause")
        time.sleep(1.5)  # seen by the dispatcher
        due = CLOCK.now_ms() + 2_000
        ledger = Ledger()
        ids = set(schedule_batch(app, ledger, [due] * 20, "paused"))
        time.sleep(5)
        assert arrived(w, ids) == {}, "delivered while paused"
        states = {app.client.get(f"/messages/{m}").json()["status"] for m in ids}
        assert states <= {"READY", "QUEUED"}, states  # waiting, not failed
        resumed = CLOCK.now_ms()
        w.control(app, "resume")
        wait_for("the paused messages", lambda: set(arrived(w, ids)) == ids, 30)
        assert min(arrived(w, ids).values()) >= resumed
        assert ledger.report(w.arrivals.snapshot()).duplicates == {}
