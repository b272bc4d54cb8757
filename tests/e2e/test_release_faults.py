"""The claim-based release under faults, with the four services as processes:

- the bucketer's Cassandra writes slowed down past the placement margin plus a bucket while the
  releaser claims and releases the buckets they go to: the re-check after each durable store
  sends the message directly, so nothing is lost and nothing is early (no KAFKA duplicate);
- two releaser replicas, the leader frozen (SIGSTOP) with buckets still to release: the other
  takes the lease within the session timeout, fences the frozen one (shared transactional id)
  and finishes; the old leader, resumed, commits nothing to the ring; every KAFKA message is
  delivered exactly once, none early.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from scheduler.clock import SystemClock
from scheduler.testing.proxy import CuttableProxy
from scheduler.testing.servers import Servers
from scheduler.topics import Topics
from tests.support.faultstack import all_threads_stopped
from tests.support.ledger import Ledger
from tests.support.processes import System, wait_for
from tests.support.workload import produce, schedule_batch

from .conftest import EXTRA_ENV, World, private_settings, world

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLOCK = SystemClock()
SESSION_TIMEOUT_S = int(EXTRA_ENV["SCHEDULER_RELEASE_SESSION_TIMEOUT_MS"]) / 1000


@pytest.fixture(scope="module")
def release_world(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    kafka, cassandra = private_settings(servers)
    with world(kafka, cassandra, tmp_path_factory.mktemp("release-faults")) as w:
        yield w


def samples(system: System, name: str, metric_name: str) -> dict[str, float]:
    """A metric's samples in a process's /metrics, by label set ("" without labels)."""
    text = httpx.get(system.url(name, "/metrics"), timeout=2).text
    pattern = re.compile(rf"^{re.escape(metric_name)}(?:{{([^}}]*)}})? (\S+)$", re.M)
    return {labels: float(value) for labels, value in pattern.findall(text)}


def metric(system: System, name: str, metric_name: str) -> float:
    """The sum of a metric's samples (every label set)."""
    return sum(samples(system, name, metric_name).values())


# --- a. the bucketer's Cassandra traffic delayed past the margin ---------------------------------

FEED_TICK_S = 0.25
PER_TICK = 5  # messages per app and tick
BEFORE_S = 3.0  # feeding before the delay
DELAYED_S = 8.0  # feeding while the bucketer's Cassandra requests are held
AFTER_S = 2.0  # feeding after
DIRECT = "scheduler_bucketer_routed_direct_total"


def feed(w: World, ledger: Ledger, stop: threading.Event, rng: random.Random) -> None:
    """Messages due 6-9 s ahead (beyond the look-ahead plus the margin: stored in Cassandra,
    unless the bucketer gets to them late) through the HTTP batch route, until stopped; an
    unacknowledged batch is not in the ledger."""
    while not stop.is_set():
        now = CLOCK.now_ms()
        for app in (w.rest, w.kafka_app):
            send_ats = [now + rng.randint(6_000, 9_000) for _ in range(PER_TICK)]
            with contextlib.suppress(httpx.HTTPError, AssertionError):
                schedule_batch(app, ledger, send_ats, tag="delayed-store")
        stop.wait(FEED_TICK_S)


def test_bucketer_writes_delayed_past_the_margin_lose_nothing(release_world: World) -> None:
    w = release_world
    s = w.scheduling
    delay_s = (s.placement_margin_ms + s.bucket_width_ms) / 1000 + 1.0
    proxy = CuttableProxy(w.cassandra.contact_points[0], w.cassandra.port)
    ledger = Ledger()
    stop = threading.Event()
    try:
        # Only the bucketer talks to Cassandra through the proxy.
        w.system.stop("bucketer")
        w.system.env_overrides["bucketer"] = {"SCHEDULER_CASSANDRA_PORT": str(proxy.port)}
        w.system.start("bucketer")
        stored_before = metric(w.system, "bucketer", "scheduler_bucketer_stored_total")
        direct_before = samples(w.system, "bucketer", DIRECT)
        released_before = metric(w.system, "releaser", "scheduler_release_messages_total")

        feeder = threading.Thread(
            target=feed, args=(w, ledger, stop, random.Random(7)), daemon=True
        )
        feeder.start()
        time.sleep(BEFORE_S)
        proxy.delay(delay_s)
        delayed_at = CLOCK.now_ms()
        time.sleep(DELAYED_S)
        proxy.undelay()
        time.sleep(AFTER_S)
        stop.set()
        feeder.join(30)
        last_due = max(p.send_at_ms for p in ledger.planned.values())
        report = w.wait_delivered(ledger, timeout_s=(last_due - CLOCK.now_ms()) / 1000 + 60)
        direct = {
            re.sub(r'cause="([^"]*)"', r"\1", labels): value - direct_before.get(labels, 0)
            for labels, value in samples(w.system, "bucketer", DIRECT).items()
        }
        stored = metric(w.system, "bucketer", "scheduler_bucketer_stored_total") - stored_before
        released = (
            metric(w.system, "releaser", "scheduler_release_messages_total") - released_before
        )
        during = [
            m
            for m, p in ledger.planned.items()
            if delayed_at <= p.scheduled_ms <= delayed_at + DELAYED_S * 1000
        ]
        worst = report.lateness_ms[-1] if report.lateness_ms else 0
        print(
            f"bucketer's Cassandra requests held {delay_s:.1f} s for {DELAYED_S:.0f} s"
            f" ({len(during)} messages scheduled meanwhile): worst lateness {worst} ms;"
            f" {report.summary()}; stored {stored:.0f}, released by the releaser"
            f" {released:.0f}, routed direct by cause {direct}"
        )
        assert report.lost == []
        assert report.early == []
        assert report.duplicates.get("kafka", 0) == 0, report.duplicates
        assert len(ledger) > 200 and during
        assert stored > 0 and released > 0  # the stored path was taken, and released from
        # the race under test: stored while the releaser claimed (and listed) the bucket
        assert direct.get("released_meanwhile", 0) > 0, direct
    finally:
        stop.set()
        proxy.undelay()
        # Back to the direct connection, so the next test starts from the usual system.
        w.system.stop("bucketer")
        w.system.env_overrides.pop("bucketer", None)
        w.system.start("bucketer")
        proxy.close()


# --- b. two releasers, the leader frozen with buckets to go --------------------------------------

BACKLOG = 4_000  # KAFKA messages stored while no releaser runs
SPAN_MS = 20_000  # their due times, over this many 1 s buckets
# The releasers start when this much of the span is within the look-ahead: the leader's first
# tick catches up on those buckets, the rest enter the look-ahead one a second afterwards. (A
# leader catches up on thousands in a fraction of a second: were every bucket claimable at its
# first tick, it would be done before anyone could freeze it.)
CAUGHT_UP_MS = 4_000
STORE_AHEAD_MS = 10_000  # the first due time, ahead of scheduling: beyond claim + margin
CONSUMED = "scheduler_bucketer_consumed_total"
FREEZE_AFTER = 600  # messages released by the leader before it is frozen
TAKEOVER_SLACK_S = 5.0
STAGGER_S = 1.0
# what a resumed ex-leader logs: its commit was fenced, or the group took the lease away
STOOD_BY = ("another releaser leads", "lost the release lease")


def freeze(system: System, name: str) -> None:
    pid = system.procs[name].pid
    os.kill(pid, signal.SIGSTOP)
    wait_for(f"{name} stopped", lambda: all_threads_stopped(pid), 10, every_s=0.01)


def thaw(system: System, name: str) -> None:
    proc = system.procs[name]
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)


def wait_leader(system: System, names: tuple[str, ...], timeout_s: float) -> str:
    """The one process of `names` whose scheduler_release_leader is 1."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        leading = []
        for name in names:
            with contextlib.suppress(httpx.HTTPError):
                if metric(system, name, "scheduler_release_leader") == 1:
                    leading.append(name)
        if len(leading) == 1:
            return leading[0]
        time.sleep(0.05)
    raise AssertionError(f"no single leader among {names} after {timeout_s} s")


class RingWatch:
    """A read_committed reader of every ring topic from its current end: what commits to the
    ring from now on."""

    def __init__(self, w: World) -> None:
        config = w.kafka.client_config()
        ring = Topics(w.kafka, w.scheduling).ring.topics()
        metadata = AdminClient(config).list_topics(timeout=10).topics
        self._consumer = Consumer(
            {
                **config,
                "group.id": f"{w.kafka.topic_prefix}ring-watch",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
        partitions = []
        for topic in ring:
            for p in metadata[topic].partitions:
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=10, cached=False
                )
                partitions.append(TopicPartition(topic, p, high))
        self._consumer.assign(partitions)

    def records(self, until: Callable[[], bool], timeout_s: float, then_s: float) -> list[str]:
        """The keys (message ids) of the records committed since, read until `until()` holds
        (at most `timeout_s`), then `then_s` longer."""
        keys = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = self._consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                keys.append((msg.key() or b"").decode())
            if until():
                deadline = min(deadline, time.monotonic() + then_s)
        return keys

    def close(self) -> None:
        self._consumer.close()


def test_frozen_leader_is_fenced_and_the_other_releaser_finishes(release_world: World) -> None:
    w = release_world
    system = w.system
    names = ("releaser", "releaser-2")
    if "releaser-2" not in system.replicas:
        system.add_replica("releaser", "releaser-2")
    ledger = Ledger()
    rng = random.Random(11)
    frozen: str | None = None
    try:
        # A backlog: no releaser runs while thousands of messages are stored over many buckets.
        system.stop(*names)
        consumed_before = metric(system, "bucketer", CONSUMED)
        first_due = CLOCK.now_ms() + STORE_AHEAD_MS
        send_ats = [first_due + rng.randint(0, SPAN_MS) for _ in range(BACKLOG)]
        produce(w.kafka, w.scheduling, w.kafka_app, ledger, send_ats)
        # (the last few consumed may be due within the look-ahead by then: sent directly)
        wait_for(
            f"{BACKLOG} messages stored",
            lambda: metric(system, "bucketer", CONSUMED) - consumed_before >= BACKLOG,
            60,
        )
        # Start both once the first CAUGHT_UP_MS of buckets are within the look-ahead: the
        # leader's first tick claims those and releases them bucket by bucket, oldest first;
        # later ticks claim the rest as they come within reach.
        wait_s = (first_due + CAUGHT_UP_MS - w.scheduling.lookahead_ms - CLOCK.now_ms()) / 1000
        time.sleep(max(0.0, wait_s))
        # One a little before the other, so that it most likely leads; the other joins while
        # it catches up. (A leader is not ready before its first tick is done: the metrics
        # tell who leads, not /readyz.)
        system.start(names[0], wait=False)
        time.sleep(STAGGER_S)
        system.start(names[1], wait=False)
        wait_for(
            "both releasers serving /metrics",
            lambda: all(
                httpx.get(system.url(n, "/metrics"), timeout=2).status_code == 200 for n in names
            ),
            60,
        )
        # Freeze whichever leads once it has released some of the backlog.
        released = 0.0
        deadline = time.monotonic() + 60
        while True:
            leader = wait_leader(system, names, timeout_s=30)
            released = metric(system, leader, "scheduler_release_messages_total")
            if released >= FREEZE_AFTER or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        freeze(system, leader)
        frozen = leader
        frozen_at = time.monotonic()
        other = next(n for n in names if n != leader)
        assert released < BACKLOG, f"{leader} released all {released:.0f} before the freeze"
        assert metric(system, other, "scheduler_release_leader") == 0, f"{other} led already"

        wait_for(
            f"{other} takes the lease",
            lambda: metric(system, other, "scheduler_release_leader") == 1,
            SESSION_TIMEOUT_S + 30,
            every_s=0.05,
        )
        takeover_s = time.monotonic() - frozen_at
        report = w.wait_delivered(ledger, timeout_s=90)
        taken_over = metric(system, other, "scheduler_release_messages_total")

        # The old leader resumes after the other finished: nothing it does commits to the ring.
        watch = RingWatch(w)
        log_from = len(system.log_text(leader))
        thaw(system, leader)
        frozen = None
        try:
            late_records = watch.records(
                until=lambda: any(line in system.log_text(leader)[log_from:] for line in STOOD_BY),
                timeout_s=30,
                then_s=3.0,
            )
        finally:
            watch.close()
        resumed_log = system.log_text(leader)[log_from:]
        fenced = metric(system, leader, "scheduler_release_fenced_total")
        after = ledger.report(w.arrivals.snapshot())
        print(
            f"leader {leader} frozen after releasing {released:.0f} of {BACKLOG}; {other} took"
            f" the lease {takeover_s:.1f} s later (session timeout {SESSION_TIMEOUT_S:.0f} s) and"
            f" released {taken_over:.0f}; {report.summary()}; after the old leader resumed:"
            f" fenced_total {fenced:.0f}, {len(late_records)} ring records committed,"
            f" duplicates {after.duplicates or 0}"
        )
        print(f"--- {leader} after SIGCONT ---\n{resumed_log}")
        assert takeover_s <= SESSION_TIMEOUT_S + TAKEOVER_SLACK_S
        assert taken_over > 0  # the leader was frozen with buckets to go: the other did them
        assert report.lost == [] and after.lost == []
        assert report.early == [] and after.early == []
        assert after.duplicates == {}, after.duplicates
        assert after.delivered == BACKLOG
        assert late_records == [], late_records[:10]
        assert any(line in resumed_log for line in STOOD_BY), resumed_log
    finally:
        if frozen is not None:
            thaw(system, frozen)
