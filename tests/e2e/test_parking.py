"""A long application pause through real processes, with the park bound shrunk to 2 s
(SCHEDULER_DISPATCH_PARK_AFTER_MS): the held messages go back into the ring again and again,
each time committing their ring offsets, survive a kill -9 of the dispatcher in the middle of
the pause, and arrive once each after the resume, with no duplicate at the KAFKA destination."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest

from scheduler.clock import SystemClock
from scheduler.testing.servers import Servers
from tests.support.ledger import Ledger
from tests.support.processes import wait_for
from tests.support.workload import schedule_batch

from .conftest import World, private_settings, world

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLOCK = SystemClock()
PARK_AFTER_MS = 2_000


@pytest.fixture(scope="module")
def parking_world(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    kafka, cassandra = private_settings(servers)
    extra = {"SCHEDULER_DISPATCH_PARK_AFTER_MS": str(PARK_AFTER_MS)}
    with world(kafka, cassandra, tmp_path_factory.mktemp("parking"), extra) as w:
        yield w


def parked(w: World) -> float:
    """The dispatcher's scheduler_dispatch_parked_total (0 while it restarts)."""
    try:
        text = httpx.get(w.system.url("dispatcher", "/metrics"), timeout=5).text
    except httpx.HTTPError:
        return 0.0
    found = re.search(r"^scheduler_dispatch_parked_total (\S+)$", text, re.MULTILINE)
    return float(found[1]) if found else 0.0


def test_held_messages_park_survive_a_kill_9_and_arrive_once_after_the_resume(
    parking_world: World,
) -> None:
    w = parking_world
    app = w.kafka_app
    w.control(app, "pause")
    time.sleep(1.5)  # seen by the dispatcher (its app cache: 1 s)
    ledger = Ledger()
    due = CLOCK.now_ms() + 2_000
    ids = set(schedule_batch(app, ledger, [due] * 20, "parked"))
    wait_for("every held message parked once", lambda: parked(w) >= 20, 30)

    w.system.kill9("dispatcher")
    w.system.restart("dispatcher")
    # read again from the committed offsets (the parked copies), held, and parked again
    wait_for("the parked copies parked again after the restart", lambda: parked(w) >= 20, 30)
    assert not ids & w.arrivals.ids(), "delivered while paused"
    states = {app.client.get(f"/messages/{m}").json()["status"] for m in ids}
    assert states <= {"READY", "QUEUED"}, states  # waiting, not failed

    resumed = CLOCK.now_ms()
    w.control(app, "resume")
    report = w.wait_delivered(ledger, timeout_s=30)
    assert report.lost == [] and report.early == [] and report.duplicates == {}
    assert min(a.received_ms for a in w.arrivals.snapshot() if a.message_id in ids) >= resumed
