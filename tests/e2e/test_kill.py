"""kill -9 of each service in turn, in the middle of a run, then a restart: nothing that was
acknowledged is lost, nothing is early, a KAFKA destination sees no duplicate (HTTP duplicates
are counted and reported: at-least-once)."""

from __future__ import annotations

import random
import threading
import time

import httpx
import pytest

from scheduler.clock import SystemClock
from tests.support.ledger import Ledger
from tests.support.workload import NotAccepted, produce, schedule_batch

from .conftest import World

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLOCK = SystemClock()
FEED_S = 6.0  # the run: schedule for this long
KILL_AT_S = 2.0  # into the run
DOWN_S = 1.0  # dead this long before the restart
AFTER_RESTART_S = 2.0  # scheduling goes on at least this long once the victim is back
PER_TICK = 10  # messages per app and tick (0.25 s)


def feed(
    w: World, ledger: Ledger, stop: threading.Event, rng: random.Random, errors: list[Exception]
) -> None:
    """Schedule through the HTTP API until stopped. A request without an answer (ingest dead)
    or refused with a 5xx (Kafka slow) is not acknowledged, so it is not in the ledger; anything
    else unexpected (a 4xx, a 200 with an item not accepted) is kept for the test to fail on."""
    while not stop.is_set():
        now = CLOCK.now_ms()
        for app in (w.rest, w.kafka_app):
            send_ats = [
                now + rng.choice((-2_000, 1_000, 3_000, 8_000, 12_000)) for _ in range(PER_TICK)
            ]
            send_ats = [t + rng.randint(0, 999) for t in send_ats]
            try:
                schedule_batch(app, ledger, send_ats, tag="feed")
            except httpx.HTTPError:
                pass  # no answer: a client would retry
            except NotAccepted as refused:
                if refused.status_code < 500:
                    errors.append(refused)
                    return
            except Exception as unexpected:
                errors.append(unexpected)
                return
        stop.wait(0.25)


@pytest.mark.parametrize("victim", ["ingest", "bucketer", "releaser", "dispatcher"])
def test_kill_9_mid_run_then_restart_loses_nothing(shared_world: World, victim: str) -> None:
    w = shared_world
    rng = random.Random(victim)
    ledger = Ledger()
    now = CLOCK.now_ms()
    # Kafka-native messages too, across horizons, before the kill.
    for app in (w.rest, w.kafka_app):
        produce(
            w.kafka,
            w.scheduling,
            app,
            ledger,
            [now + rng.randint(-1_000, 14_000) for _ in range(100)],
        )
    stop = threading.Event()
    errors: list[Exception] = []
    feeder = threading.Thread(target=feed, args=(w, ledger, stop, rng, errors), daemon=True)
    feeder.start()
    try:
        time.sleep(KILL_AT_S)
        w.system.kill9(victim)
        killed_at = CLOCK.now_ms()
        time.sleep(DOWN_S)
        w.system.restart(victim)
        ready_ms = CLOCK.now_ms()
        ready_after_s = (ready_ms - killed_at) / 1000
        # Feed on after the restart too, however slow it was (a loaded host: ingest once took
        # 10 s to come back, the run ended first and nothing was scheduled after the kill).
        time.sleep(max(AFTER_RESTART_S, FEED_S - KILL_AT_S - ready_after_s))
    finally:
        stop.set()
        feeder.join(30)
    assert not feeder.is_alive() and errors == [], errors
    last_due = max(p.send_at_ms for p in ledger.planned.values())
    report = w.wait_delivered(ledger, timeout_s=(last_due - CLOCK.now_ms()) / 1000 + 60)
    print(f"kill -9 {victim}: back after {ready_after_s:.1f} s; {report.summary()}")
    # The system took new messages once the victim was back (at least two ticks of both apps'
    # batches): the 200 Kafka-native messages and the feed before the kill can make more than
    # 300, so the total alone can be met by a restarted ingest that accepts nothing.
    after_restart = [p for p in ledger.planned.values() if p.scheduled_ms >= ready_ms]
    assert len(after_restart) >= 4 * PER_TICK, (len(after_restart), len(ledger))
    assert len(ledger) > 300
    assert report.lost == []
    assert report.early == []
    assert report.duplicates.get("kafka", 0) == 0, report.duplicates
