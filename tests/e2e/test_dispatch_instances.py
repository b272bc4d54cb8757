"""Changing the dispatcher instance count with real processes (ownership.py, runtime.py):

- a rolling update 1 -> 2 -> 3 -> 2 under steady load: each step starts the new count's
  instances while the old ones still run, waits until they are ready, then SIGTERMs the old
  ones. Every new instance fences the other owners of its ring partitions at its start, so an
  old one can no longer commit a delivery of a partition it lost: it stands down. Nothing is
  lost, nothing early, a KAFKA destination (read_committed) sees no duplicate;
- instance 0-of-1 kill -9'd with a transaction open on a KAFKA destination, then 0-of-2 and
  1-of-2 started: their fencing aborts that transaction at once, so read_committed consumers
  are held for seconds, not for the 60 s transaction timeout.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import pytest
from confluent_kafka import OFFSET_END, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from scheduler.clock import SystemClock
from scheduler.testing.servers import Servers
from scheduler.topics import Topics
from tests.support.faultstack import all_threads_stopped
from tests.support.ledger import Ledger
from tests.support.processes import System, wait_for
from tests.support.receiver import Arrival
from tests.support.workload import produce, schedule_batch

from .conftest import DEST_PREFIX, World, private_settings, world

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLOCK = SystemClock()
DUE_PARTITIONS = 6  # per ring topic: every instance of counts 1..3 owns two or more
FEED_TICK_S = 0.25
PER_TICK = 6  # messages per app and tick
STEADY_S = 2.0  # feeding between two steps
READY_TIMEOUT_S = 60.0
# what an old instance logs: fenced (then stood down), or a clean stop (SIGTERM)
FENCED_LINE = "standing down until stopped"
STOPPED_LINE = "stopping: "
FENCING_DONE = re.compile(r"^(\S+)Z INFO dispatcher \S+: fenced \d+ other possible owners", re.M)
# kill -9 with a transaction open: the broker would abort it after this
TRANSACTION_TIMEOUT_S = 60.0
# The bound from the kill: mostly the new processes' start (8-16 s measured on a busy 2-core
# host, 29 s at a load average of 23) plus a margin. Without fencing the killed transaction
# holds consumers until the broker aborts it, 60 s or more after the kill.
RESUME_BOUND_S = 45.0
# From the fence (logged once done) to consumers seeing past the killed transaction: the abort
# marker is written when init_transactions returns, so only the test's polling is measured.
AFTER_FENCE_S = 3.0


@dataclass
class Retired:
    name: str
    code: int
    fenced: bool  # logged that it stood down
    stopped: bool  # logged a clean stop
    unready_before_stop: bool  # its /readyz turned false while it still ran
    fenced_gauge: float | None  # its scheduler_dispatch_fenced just before SIGTERM


@dataclass
class Step:
    """One instance-count change: when it began, when every new instance was ready, when the
    last old one had exited (epoch ms), and the old ones."""

    change: str
    began_ms: int
    ready_ms: int
    ended_ms: int
    started: list[str]
    retired: list[Retired]


@dataclass
class Fleet:
    """The dispatcher processes of the current instance count. The world's own `dispatcher`
    process is instance 0 of 1; every later one is a replica named by count and step."""

    system: System
    current: list[str] = field(default_factory=lambda: ["dispatcher"])
    instances: int = 1
    step: int = 0

    def launch(self, instances: int) -> list[str]:
        """Start every instance of `instances` (not waiting): the new processes."""
        self.step += 1
        names = []
        for i in range(instances):
            name = f"dispatcher-{i}-of-{instances}-s{self.step}"
            self.system.add_replica("dispatcher", name)
            self.system.env_overrides[name].update(
                {
                    "SCHEDULER_DISPATCH_INSTANCE": str(i),
                    "SCHEDULER_DISPATCH_INSTANCES": str(instances),
                }
            )
            self.system.start(name, wait=False)
            names.append(name)
        return names

    def roll(self, instances: int) -> Step:
        """A rolling update to `instances`: new ones started next to the old ones, the old ones
        SIGTERMed once every new one is ready."""
        change = f"{self.instances} -> {instances}"
        began = CLOCK.now_ms()
        new = self.launch(instances)
        self.system.wait_ready(*new, timeout_s=READY_TIMEOUT_S)
        ready = CLOCK.now_ms()
        old, self.current, self.instances = self.current, new, instances
        retired = self.retire(old)
        return Step(change, began, ready, CLOCK.now_ms(), new, retired)

    def retire(self, names: list[str]) -> list[Retired]:
        """SIGTERM `names` (after a short look at /readyz: a fenced one stops being ready)."""
        unready = dict.fromkeys(names, False)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and not all(unready.values()):
            for name in names:
                with contextlib.suppress(httpx.HTTPError):
                    unready[name] = unready[name] or not self.system.ready(name)
            time.sleep(0.1)
        gauges = {name: self.fenced_gauge(name) for name in names}
        codes = self.system.stop(*names)
        out = []
        for name in names:
            text = self.system.log_text(name)
            out.append(
                Retired(
                    name,
                    codes[name],
                    FENCED_LINE in text,
                    STOPPED_LINE in text,
                    unready[name],
                    gauges[name],
                )
            )
        return out

    def fenced_gauge(self, name: str) -> float | None:
        try:
            text = httpx.get(self.system.url(name, "/metrics"), timeout=2).text
        except httpx.HTTPError:
            return None
        found = re.search(r"^scheduler_dispatch_fenced (\S+)$", text, re.M)
        return float(found[1]) if found else None


def fenced_at_ms(system: System, name: str) -> int | None:
    """When `name` logged that it had fenced the other owners of its partitions (epoch ms)."""
    found = FENCING_DONE.search(system.log_text(name))
    if found is None:
        return None
    at = datetime.strptime(found[1], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)
    return int(at.timestamp() * 1000)


def worst_lateness(ledger: Ledger, arrivals: list[Arrival], since_ms: int, until_ms: int) -> str:
    """The worst lateness of the first arrivals of messages due in [since, until], by
    destination (a past sendAt is due when acknowledged)."""
    first: dict[str, int] = {}
    for a in arrivals:
        if a.message_id in ledger.planned:
            first[a.message_id] = min(first.get(a.message_id, a.received_ms), a.received_ms)
    worst: dict[str, int] = {}
    for m, received in first.items():
        p = ledger.planned[m]
        due = max(p.send_at_ms, min(p.scheduled_ms, received))
        if since_ms <= due <= until_ms:
            worst[p.destination] = max(worst.get(p.destination, 0), received - due)
    return ", ".join(f"{d} {ms} ms" for d, ms in sorted(worst.items())) or "none due"


def feed(w: World, ledger: Ledger, stop: threading.Event, rng: random.Random) -> None:
    """Through the HTTP batch route until stopped, due now, within seconds (straight to the
    ring) and later (through Cassandra and the releaser); an unacknowledged batch is not in the
    ledger."""
    while not stop.is_set():
        now = CLOCK.now_ms()
        for app in (w.rest, w.kafka_app):
            send_ats = [
                now + rng.choice((-1_000, 500, 1_500, 3_000, 7_000)) + rng.randint(0, 999)
                for _ in range(PER_TICK)
            ]
            with contextlib.suppress(httpx.HTTPError, AssertionError):
                schedule_batch(app, ledger, send_ats, tag="instances")
        stop.wait(FEED_TICK_S)


@dataclass
class InstancesWorld:
    world: World
    fleet: Fleet


@pytest.fixture(scope="module")
def instances_world(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InstancesWorld]:
    kafka, cassandra = private_settings(servers)
    kafka = kafka.model_copy(update={"due_partitions": DUE_PARTITIONS})
    extra = {"SCHEDULER_DISPATCH_INSTANCE": "0", "SCHEDULER_DISPATCH_INSTANCES": "1"}
    with world(kafka, cassandra, tmp_path_factory.mktemp("dispatch-instances"), extra) as w:
        yield InstancesWorld(w, Fleet(w.system))


def ring_partitions(w: World) -> set[int]:
    """The partition counts of the ring topics, as setup created them."""
    metadata = AdminClient(w.kafka.client_config()).list_topics(timeout=10).topics
    ring = Topics(w.kafka, w.scheduling).ring.topics()
    return {len(metadata[topic].partitions) for topic in ring}


def test_rolling_instance_count_change_one_two_three_two(
    instances_world: InstancesWorld,
) -> None:
    w, fleet = instances_world.world, instances_world.fleet
    assert ring_partitions(w) == {DUE_PARTITIONS}
    if fleet.instances != 1:  # another test ran first: back to one instance
        fleet.roll(1)
    ledger = Ledger()
    rng = random.Random(2024)
    stop = threading.Event()
    feeder = threading.Thread(target=feed, args=(w, ledger, stop, rng), daemon=True)
    steps: list[Step] = []
    try:
        feeder.start()
        time.sleep(STEADY_S)
        for count in (2, 3, 2):
            steps.append(fleet.roll(count))
            time.sleep(STEADY_S)
    finally:
        stop.set()
        feeder.join(30)
    last_due = max(p.send_at_ms for p in ledger.planned.values())
    report = w.wait_delivered(ledger, timeout_s=(last_due - CLOCK.now_ms()) / 1000 + 60)

    arrivals = w.arrivals.snapshot()
    lines = []
    for step in steps:
        due = sum(
            1 for p in ledger.planned.values() if step.began_ms <= p.send_at_ms <= step.ended_ms
        )
        fences = [t for t in (fenced_at_ms(w.system, n) for n in step.started) if t is not None]
        fenced_s = (min(fences, default=step.began_ms) - step.began_ms) / 1000
        lines.append(
            f"{step.change}: first fence after {fenced_s:.1f} s,"
            f" new ones ready after {(step.ready_ms - step.began_ms) / 1000:.1f} s,"
            f" old ones gone after {(step.ended_ms - step.began_ms) / 1000:.1f} s; {due} due"
            " meanwhile, worst lateness of those due until ready:"
            f" {worst_lateness(ledger, arrivals, step.began_ms, step.ready_ms)}; "
            + ", ".join(
                f"{r.name} rc {r.code} fenced {r.fenced} stopped {r.stopped}"
                f" unready {r.unready_before_stop} gauge {r.fenced_gauge}"
                for r in step.retired
            )
        )
    print("\n".join([*lines, report.summary()]))
    assert report.lost == [], report.summary()
    assert report.early == [], report.early[:10]
    assert report.duplicates.get("kafka", 0) == 0, report.duplicates
    assert len(ledger) > 500
    assert [len(step.retired) for step in steps] == [1, 2, 3]
    for step in steps:  # messages came due during every overlap
        assert any(step.began_ms <= p.send_at_ms <= step.ended_ms for p in ledger.planned.values())
    retired = [r for step in steps for r in step.retired]
    for r in retired:
        assert r.code == 0, (r, w.system.log_text(r.name)[-3000:])
        assert r.fenced or r.stopped, (r, w.system.log_text(r.name)[-3000:])
        # a fenced instance is not ready any more (it stays alive until SIGTERM)
        assert not r.fenced or (r.unready_before_stop and r.fenced_gauge == 1), r
    # under steady load an old instance finds out at its next transaction: every one is fenced
    assert all(r.fenced for r in retired), retired


class Offsets:
    """The KAFKA destination partition's end as a read_committed reader sees it (the last
    stable offset: an open transaction holds it) and its high watermark."""

    def __init__(self, w: World, topic: str) -> None:
        base = {**w.kafka.client_config(), "group.id": f"{w.kafka.topic_prefix}lso-probe"}
        self._committed = Consumer({**base, "isolation.level": "read_committed"})
        self._uncommitted = Consumer({**base, "isolation.level": "read_uncommitted"})
        self._tp = TopicPartition(topic, 0, OFFSET_END)

    @staticmethod
    def _end(consumer: Consumer, tp: TopicPartition) -> int:
        [found] = consumer.offsets_for_times([TopicPartition(tp.topic, 0, OFFSET_END)], 10)
        return int(found.offset)

    def stable(self) -> int:
        return self._end(self._committed, self._tp)

    def high(self) -> int:
        return self._end(self._uncommitted, self._tp)

    def close(self) -> None:
        self._committed.close()
        self._uncommitted.close()


def kill9_with_open_transaction(system: System, name: str, offsets: Offsets) -> tuple[int, int]:
    """Freeze `name` until a moment it has a transaction open on the destination (its last
    stable offset below its high watermark), then kill -9 it. Returns (stable, high) then."""
    proc = system.procs[name]
    for _ in range(200):
        os.kill(proc.pid, signal.SIGSTOP)
        wait_for(f"{name} stopped", lambda: all_threads_stopped(proc.pid), 10, every_s=0.01)
        stable, high = offsets.stable(), offsets.high()
        if stable < high:
            system.kill9(name)
            return stable, high
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(random.uniform(0.01, 0.05))
    raise AssertionError(f"{name} never had a transaction open on the destination")


def test_kill_9_open_transaction_does_not_hold_consumers_for_the_timeout(
    instances_world: InstancesWorld,
) -> None:
    w, fleet = instances_world.world, instances_world.fleet
    if fleet.instances != 1:
        fleet.roll(1)
    [victim] = fleet.current
    dest_topic = f"{DEST_PREFIX}{w.kafka.topic_prefix}out"
    offsets = Offsets(w, dest_topic)
    ledger = Ledger()
    rng = random.Random(9)
    # A dense KAFKA load (about 400 a second) around the kill: transactions back to back.
    first_due = CLOCK.now_ms() + 2_500
    produce(
        w.kafka,
        w.scheduling,
        w.kafka_app,
        ledger,
        [first_due + rng.randint(0, 7_000) for _ in range(2_800)],
    )
    stop = threading.Event()
    feeder = threading.Thread(target=feed, args=(w, ledger, stop, rng), daemon=True)
    feeder.start()
    try:
        time.sleep(max(0.0, (first_due - CLOCK.now_ms()) / 1000) + 1.0)
        stable, high = kill9_with_open_transaction(w.system, victim, offsets)
        killed = time.monotonic()
        killed_ms = CLOCK.now_ms()
        new = fleet.launch(2)
        # The stuck transaction ends when the first new instance fences the killed one.
        wait_for(
            "the destination's last stable offset past the killed transaction",
            lambda: offsets.stable() >= high,
            TRANSACTION_TIMEOUT_S + 30,
            every_s=0.05,
        )
        unblocked_s = time.monotonic() - killed
        unblocked_ms = CLOCK.now_ms()
        # (one due after the kill: the victim cannot have committed it)
        wait_for(
            "a KAFKA delivery after the kill",
            lambda: any(
                a.destination == "kafka"
                and a.message_id in ledger.planned
                and ledger.planned[a.message_id].send_at_ms > killed_ms + 100
                for a in w.arrivals.snapshot()
            ),
            TRANSACTION_TIMEOUT_S + 30,
            every_s=0.05,
        )
        resumed_s = time.monotonic() - killed
        w.system.wait_ready(*new, timeout_s=READY_TIMEOUT_S)
        ready_s = time.monotonic() - killed
        fleet.current, fleet.instances = new, 2
        time.sleep(STEADY_S)
    finally:
        stop.set()
        feeder.join(30)
        offsets.close()
    last_due = max(p.send_at_ms for p in ledger.planned.values())
    report = w.wait_delivered(ledger, timeout_s=(last_due - CLOCK.now_ms()) / 1000 + 60)
    fences = [t for t in (fenced_at_ms(w.system, n) for n in new) if t is not None]
    fenced_ms = min(fences, default=unblocked_ms)
    print(
        f"kill -9 {victim} with a transaction open (stable offset {stable}, high {high}):"
        f" the first new instance logged its fences after {(fenced_ms - killed_ms) / 1000:.1f} s"
        " (process start included),"
        f" consumers unblocked after {unblocked_s:.1f} s, first KAFKA delivery after"
        f" {resumed_s:.1f} s, both new instances ready after {ready_s:.1f} s"
        f" (transaction timeout {TRANSACTION_TIMEOUT_S:.0f} s); {report.summary()}"
    )
    assert fences, "no new instance logged its fences"
    assert unblocked_ms <= fenced_ms + AFTER_FENCE_S * 1000  # the fence ended the transaction
    assert unblocked_s < RESUME_BOUND_S
    assert resumed_s < RESUME_BOUND_S
    assert report.lost == [], report.summary()
    assert report.early == [], report.early[:10]
    assert report.duplicates.get("kafka", 0) == 0, report.duplicates
