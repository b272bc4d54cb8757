"""The dispatcher's Kafka inputs under outages and changes, with the four services as processes
(feeds.py: the ring and the commands view):

1. kill -9 of the dispatcher in the middle of a run, restarted more than one ring cycle later:
   every message due during the outage arrives after the restart, none early, no KAFKA
   duplicate;
2. the dispatcher frozen (SIGSTOP) for one ring cycle while messages fall due in every slot:
   after SIGCONT the overdue ones arrive within seconds, including those left in slots that were
   paused (future) when it froze - not when their slot comes round again;
3. ring records written two cycles ago, read by a dispatcher group with no committed offsets:
   it starts at the first retained record, so they are delivered (not skipped);
4. partitions added to the ring topics and to the commands topic while the dispatcher runs:
   records in the new ring partitions are delivered within the metadata refresh plus a margin,
   and an abort in the new commands partition is honoured.

Each test asserts 0 lost, 0 early and no duplicate to the KAFKA destination (HTTP duplicates
are reported: at-least-once), for its own messages and for every message of the module so far
(a ring read again from its start must not deliver an earlier test's message again).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewPartitions

from scheduler.clock import SystemClock
from scheduler.domain.ids import new_message_id
from scheduler.records import Command, CommandKind, DueMessage
from scheduler.testing.servers import Servers
from scheduler.topics import Topics
from scheduler_releaser.codecs import Codecs
from tests.support.faultstack import all_threads_stopped
from tests.support.ledger import Ledger, Planned, Report
from tests.support.processes import wait_for
from tests.support.workload import App, produce, schedule_batch, schedule_one

from .conftest import World, private_settings, world

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLOCK = SystemClock()
METADATA_REFRESH_MS = 2_000  # SCHEDULER_DISPATCH_METADATA_REFRESH_MS of this module
EVERYTHING = Ledger()  # every message of this module's tests so far


@pytest.fixture(scope="module")
def inputs_world(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A system of its own: these tests delete the dispatcher's group offsets and add
    partitions, which no other module should see."""
    kafka, cassandra = private_settings(servers)
    extra = {"SCHEDULER_DISPATCH_METADATA_REFRESH_MS": str(METADATA_REFRESH_MS)}
    with world(kafka, cassandra, tmp_path_factory.mktemp("dispatch-inputs"), extra) as w:
        yield w


def check(w: World, ledger: Ledger, report: Report, what: str) -> None:
    """0 lost, 0 early, no KAFKA duplicate: for this test, and for the whole module so far."""
    EVERYTHING.planned.update(ledger.planned)
    overall = EVERYTHING.report(w.arrivals.snapshot())
    print(f"{what}: {report.summary()}; module so far: {overall.summary()}")
    assert report.lost == []
    assert report.early == []
    assert report.duplicates.get("kafka", 0) == 0, report.duplicates
    assert overall.early == []
    assert overall.duplicates.get("kafka", 0) == 0, overall.duplicates


def first_arrivals(w: World) -> dict[str, int]:
    """Each message's first receipt time."""
    first: dict[str, int] = {}
    for a in w.arrivals.snapshot():
        first[a.message_id] = min(a.received_ms, first.get(a.message_id, a.received_ms))
    return first


def schedule_both(w: World, ledger: Ledger, send_ats: list[int], tag: str) -> None:
    """The same due times through the HTTP batch route and the Kafka-native producer, for each
    app (500 at most per batch)."""
    for app in (w.rest, w.kafka_app):
        for start in range(0, len(send_ats), 500):
            schedule_batch(app, ledger, send_ats[start : start + 500], tag=tag)
        produce(w.kafka, w.scheduling, app, ledger, send_ats)


def spread(first_ms: int, last_ms: int, n: int) -> list[int]:
    """`n` due times evenly from `first_ms` to `last_ms`."""
    step = (last_ms - first_ms) / max(1, n - 1)
    return [first_ms + round(i * step) for i in range(n)]


def due_record(app: App, due_ms: int, now_ms: int) -> DueMessage:
    """A first attempt as the bucketer or the releaser writes it, of a message whose record is
    not (yet) in Cassandra: fire_check fires it (verdict.py: no abort can have won without the
    record), so the ring record alone decides whether it is delivered."""
    message_id = new_message_id(now_ms)
    return DueMessage(
        message_id=message_id,
        app_id=app.app_id,
        generation=0,
        attempt=1,
        due_ms=due_ms,
        send_at_ms=due_ms,
        created_ms=now_ms,
        payload_json=f'{{"id": "{message_id}"}}',
    )


class Writer:
    """Records written straight to a topic and partition; each must be acknowledged (a record
    refused, e.g. for a partition the producer does not know yet, fails the test)."""

    def __init__(self, w: World) -> None:
        self._producer = Producer({**w.kafka.client_config(), "acks": "all", "linger.ms": 1})
        self.errors: list[str] = []

    def write(
        self, topic: str, key: str, value: bytes, partition: int = -1, timestamp: int = 0
    ) -> None:
        """`partition` -1: the partitioner's choice; `timestamp` 0: now."""
        self._producer.produce(
            topic,
            key=key.encode(),
            value=value,
            partition=partition,
            timestamp=timestamp,
            on_delivery=self._done,
        )

    def _done(self, error: KafkaError | None, msg: Message) -> None:
        if error is not None:
            self.errors.append(f"{msg.topic()}/{msg.partition()}: {error}")

    def flush(self) -> None:
        assert self._producer.flush(30) == 0, "records not acknowledged"
        assert self.errors == [], self.errors


# --- 1. kill -9, restarted more than one cycle later ---------------------------------------------


def test_kill_9_then_restart_more_than_a_cycle_later_delivers_what_fell_due(
    inputs_world: World,
) -> None:
    """Killed while deliveries are under way, down for more than a cycle while messages keep
    falling due in every slot (some scheduled during the outage): the restart reads every ring
    partition from its committed offset, drains the slots that are future by then before
    pausing them, and reloads the results its commit metadata names, so every message arrives
    once (KAFKA), none early. (A regression guard: the code before the change passed it too.)"""
    w = inputs_world
    cycle_ms = w.scheduling.ring_size * w.scheduling.ring_slot_ms
    down_ms = cycle_ms + 4_000
    ledger = Ledger()
    now = CLOCK.now_ms()
    kill_at = now + 3_000
    restart_at = kill_at + down_ms
    # Due from now (some in flight at the kill) through the outage, and past the restart.
    schedule_both(w, ledger, spread(now + 500, restart_at + 6_000, 60), tag="kill-before")
    time.sleep(max(0.0, (kill_at - CLOCK.now_ms()) / 1000))
    w.system.kill9("dispatcher")
    killed_at = CLOCK.now_ms()
    time.sleep(4.0)
    # Scheduled while it is down: stored, released and written to the ring meanwhile.
    now = CLOCK.now_ms()
    schedule_both(w, ledger, spread(now + 500, restart_at + 4_000, 40), tag="kill-during")
    time.sleep(max(0.0, (killed_at + down_ms - CLOCK.now_ms()) / 1000))
    w.system.restart("dispatcher")
    restarted_at = CLOCK.now_ms()
    now = CLOCK.now_ms()
    schedule_both(w, ledger, spread(now - 1_000, now + 5_000, 20), tag="kill-after")

    last_due = max(p.send_at_ms for p in ledger.planned.values())
    report = w.wait_delivered(ledger, timeout_s=(last_due - CLOCK.now_ms()) / 1000 + 60)
    during = [p for p in ledger.planned.values() if killed_at < p.send_at_ms < restarted_at]
    down_s = (restarted_at - killed_at) / 1000
    check(w, ledger, report, f"kill -9 dispatcher, back {down_s:.1f} s later")
    assert restarted_at - killed_at > cycle_ms
    assert len(during) > 300, len(during)


# --- 2. frozen for one cycle ---------------------------------------------------------------------

FREEZE_MS = 16_000  # one ring cycle of the conftest ring (8 x 2 s)
FREEZE_PHASE_MS = 300  # frozen this far into a slot: it thaws in the same slot a cycle later
PROMPT_MS = 3_000  # overdue messages arrive within this of SIGCONT


def freeze(pid: int) -> None:
    os.kill(pid, signal.SIGSTOP)
    wait_for("the dispatcher stopped", lambda: all_threads_stopped(pid), 10, every_s=0.01)


def test_frozen_for_a_cycle_delivers_the_overdue_at_once(inputs_world: World) -> None:
    """Frozen at the start of a slot for exactly one cycle, the dispatcher thaws in the slot it
    froze in, with no slot change to react to: the slots that were future (paused) then are
    future again, and hold records that fell due during the freeze (written there by the
    releaser while it was frozen). Only re-checking every future slot after the time jump
    delivers them at once; otherwise the last of them would wait until their slot is next again,
    about 6 s (the paused slots are 2 to 4 ahead)."""
    w = inputs_world
    ring = w.scheduling.ring(w.kafka)
    ledger = Ledger()
    now = CLOCK.now_ms()
    frozen_at = ring.slot_start(now + 6_000) + ring.slot_ms + FREEZE_PHASE_MS
    thaw_at = frozen_at + FREEZE_MS
    # Due throughout the freeze (every slot), and after it.
    send_ats = spread(frozen_at + 200, thaw_at - 200, 48) + spread(
        thaw_at + 500, thaw_at + 5_000, 8
    )
    schedule_both(w, ledger, send_ats, tag="freeze")
    assert CLOCK.now_ms() < frozen_at - 200, "scheduling took too long"
    assert {ring.slot_of(t) for t in send_ats} == set(range(ring.size))
    pid = w.system.procs["dispatcher"].pid
    time.sleep(max(0.0, (frozen_at - CLOCK.now_ms()) / 1000))
    freeze(pid)
    stopped_at = CLOCK.now_ms()
    try:
        time.sleep(max(0.0, (thaw_at - CLOCK.now_ms()) / 1000))
    finally:
        os.kill(pid, signal.SIGCONT)
    thawed_at = CLOCK.now_ms()

    last_due = max(send_ats)
    report = w.wait_delivered(ledger, timeout_s=(last_due - CLOCK.now_ms()) / 1000 + 60)
    first = first_arrivals(w)
    overdue = {m: p for m, p in ledger.planned.items() if p.send_at_ms < thawed_at}
    delays = {m: first[m] - thawed_at for m in overdue}
    slow = sorted((d, ring.slot_of(overdue[m].send_at_ms), m) for m, d in delays.items())
    slow = [s for s in slow if s[0] > PROMPT_MS]
    current = ring.slot_of(thawed_at)
    by_slot: dict[int, int] = {}
    for m, d in delays.items():
        ahead = (ring.slot_of(overdue[m].send_at_ms) - current) % ring.size
        by_slot[ahead] = max(by_slot.get(ahead, 0), d)
    check(
        w,
        ledger,
        report,
        f"frozen {(thawed_at - stopped_at) / 1000:.1f} s (slot {ring.slot_of(stopped_at)} ->"
        f" {current}); {len(overdue)} overdue at SIGCONT, latest arrival"
        f" {max(delays.values())} ms after it; by slot ahead of the current one:"
        f" {dict(sorted(by_slot.items()))}",
    )
    assert thawed_at - stopped_at >= FREEZE_MS - 500
    assert len(overdue) >= 150, len(overdue)
    assert slow == [], (
        f"{len(slow)} overdue messages arrived > {PROMPT_MS} ms after SIGCONT: {slow[:5]}"
    )


# --- 3. two-cycle-old ring records, a group with no committed offsets ----------------------------

OLD_PER_SLOT = 10  # records per app and ring slot


def forget_dispatcher_offsets(w: World) -> None:
    """Delete the dispatcher's consumer group (it is stopped): its ring offsets are gone, as for
    a group that never ran or whose offsets expired."""
    admin = AdminClient(w.kafka.client_config())
    group = f"{w.kafka.topic_prefix}dispatcher"

    deadline = time.monotonic() + 30
    while True:
        try:
            for future in admin.delete_consumer_groups([group], request_timeout=10).values():
                future.result()
            break
        except KafkaException:  # the coordinator still sees the stopped member: again
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)
    ring = Topics(w.kafka, w.scheduling).ring.topics()
    metadata = admin.list_topics(timeout=10).topics
    reader = Consumer({**w.kafka.client_config(), "group.id": group, "enable.auto.commit": False})
    try:
        tps = [TopicPartition(t, p) for t in ring for p in metadata[t].partitions]
        committed = reader.committed(tps, timeout=10)
    finally:
        reader.close()
    assert all(tp.offset < 0 for tp in committed), committed


def test_two_cycle_old_ring_records_reach_a_group_without_offsets(inputs_world: World) -> None:
    """The dispatcher is stopped and its group deleted, then records are written to every ring
    topic with a Kafka timestamp two cycles old (their due times in the past), then it starts:
    with no committed offset, a ring partition is read from its first retained record, so they
    are all delivered (a start at "now less one cycle" would skip them). The ring's earlier
    records (the previous tests') are read again too: their records are SENT, so none is
    delivered again (checked over the whole module)."""
    w = inputs_world
    ring = w.scheduling.ring(w.kafka)
    codecs = Codecs.build(w.kafka)
    ledger = Ledger()
    w.system.stop("dispatcher")
    forget_dispatcher_offsets(w)
    now = CLOCK.now_ms()
    written_ms = ring.slot_start(now) - 2 * ring.cycle_ms
    writer = Writer(w)
    slots = set()
    for k in range(ring.size):
        # due in each slot in turn, between two cycles and one cycle ago
        base = written_ms + ring.slot_ms * k + 100
        for app in (w.rest, w.kafka_app):
            for i in range(OLD_PER_SLOT):
                due = due_record(app, base + i * (ring.slot_ms - 200) // OLD_PER_SLOT, now)
                slots.add(ring.slot_of(due.due_ms))
                writer.write(
                    ring.topic_for(due.due_ms),
                    due.message_id,
                    codecs.due.encode(due),
                    timestamp=written_ms,
                )
                ledger.add(Planned(due.message_id, due.due_ms, app.destination, now))
    writer.flush()
    assert slots == set(range(ring.size))
    w.system.start("dispatcher")
    report = w.wait_delivered(ledger, timeout_s=60)
    check(w, ledger, report, "ring records two cycles old, group offsets deleted")
    assert report.delivered == 2 * OLD_PER_SLOT * ring.size


# --- 4. partitions added while running -----------------------------------------------------------

ADDED_MARGIN_MS = 4_000  # beyond the metadata refresh: listing, assignment, fetch, delivery
ABORT_AHEAD_MS = 8_000  # the aborted messages (and their controls) are due this far ahead


def add_partition(w: World, topics: list[str]) -> dict[str, int]:
    """One partition more in each of `topics`, while everything runs; returns each topic's
    index of the new partition (its count before), once the metadata shows them."""
    admin = AdminClient(w.kafka.client_config())

    def counts() -> dict[str, int]:
        metadata = admin.list_topics(timeout=10).topics
        return {t: len(metadata[t].partitions) for t in topics}

    before = counts()
    futures = admin.create_partitions(
        [NewPartitions(t, n + 1) for t, n in before.items()], operation_timeout=30
    )
    for future in futures.values():
        future.result(timeout=30)
    wait_for(
        "the new partitions in the metadata",
        lambda: counts() == {t: n + 1 for t, n in before.items()},
        30,
        every_s=0.2,
    )
    return before


def message_json(app: App, message_id: str) -> dict[str, object]:
    """GET /messages/{id}, once the bucketer has written the record."""
    wait_for(
        f"the record of {message_id}",
        lambda: app.client.get(f"/messages/{message_id}").status_code == 200,
        30,
        every_s=0.1,
    )
    body: dict[str, object] = app.client.get(f"/messages/{message_id}").json()
    return body


def has_status(app: App, message_id: str, status: str) -> Callable[[], bool]:
    return lambda: message_json(app, message_id)["status"] == status


def test_ring_partitions_added_while_running_are_read(inputs_world: World) -> None:
    """One partition more in every ring topic while the dispatcher runs. Records written
    straight into the new partitions (some overdue, some due over the next slots, future and
    paused ones among them) are all delivered, the overdue ones within the metadata refresh plus
    a margin, none early."""
    w = inputs_world
    ring = w.scheduling.ring(w.kafka)
    codecs = Codecs.build(w.kafka)
    new_partition = add_partition(w, ring.topics())
    added_at = CLOCK.now_ms()
    ledger = Ledger()
    overdue: list[str] = []
    writer = Writer(w)
    now = CLOCK.now_ms()
    for app in (w.rest, w.kafka_app):
        for due_ms in [now - 500] * 10 + spread(now + 1_000, now + 10_000, 20):
            due = due_record(app, due_ms, now)
            topic = ring.topic_for_send(due_ms, now)
            writer.write(
                topic, due.message_id, codecs.due.encode(due), partition=new_partition[topic]
            )
            ledger.add(Planned(due.message_id, due_ms, app.destination, now))
            if due_ms < now:
                overdue.append(due.message_id)
    writer.flush()

    last_due = max(p.send_at_ms for p in ledger.planned.values())
    report = w.wait_delivered(ledger, timeout_s=(last_due - CLOCK.now_ms()) / 1000 + 60)
    first = first_arrivals(w)
    latest = max(first[m] - added_at for m in overdue)
    check(
        w,
        ledger,
        report,
        f"ring partitions added: the overdue records in them arrived at most {latest} ms"
        f" later (refresh {METADATA_REFRESH_MS} ms)",
    )
    assert latest <= METADATA_REFRESH_MS + ADDED_MARGIN_MS, latest
    assert "ring partitions added while running" in w.system.log_text("dispatcher")


def test_an_abort_in_a_commands_partition_added_while_running_is_honoured(
    inputs_world: World,
) -> None:
    """One partition more in the commands topic while the dispatcher runs, and an ABORT Command
    written straight into it, for a message of each app scheduled through the API and due a few
    seconds later.

    The real abort route is not used: it sets the Cassandra record ABORTED first (which the
    dispatcher's record check would honour whatever it reads from Kafka), and ingest's
    partitioner, not the test, would choose the partition. Here the record is left QUEUED and
    the bucketer is stopped once the messages are in the ring (it would write ABORTED again
    from the command, for a record restored from an older snapshot), so nothing but the
    dispatcher's view of the command can stop the fire. The aborted messages are therefore
    delivered unless the dispatcher reads the new partition; the skip then ends their records
    ABORTED ("abort command"). A control message of each app, due at the same instant, is
    delivered."""
    w = inputs_world
    commands = Topics(w.kafka, w.scheduling).commands
    codecs = Codecs.build(w.kafka)
    ledger = Ledger()
    victims: dict[str, App] = {}
    # Added before the messages: between their release and the instant the abort must be
    # written there is only the look-ahead minus the refresh, and adding the partition there
    # too made a loaded CI host miss it ("written too late"). Still added while running.
    new_partition = add_partition(w, [commands])[commands]
    due_at = CLOCK.now_ms() + ABORT_AHEAD_MS + 4_000  # the bucketer's stop takes some too
    for app in (w.rest, w.kafka_app):
        victim = Ledger()
        assert schedule_one(app, victim, due_at).status_code == 200
        [victim_id] = victim.planned
        victims[victim_id] = app
        assert schedule_one(app, ledger, due_at).status_code == 200
    for victim_id, app in victims.items():
        wait_for(f"{victim_id} in the ring", has_status(app, victim_id, "QUEUED"), 10, 0.1)
    w.system.stop("bucketer")
    writer = Writer(w)
    for victim_id, app in victims.items():
        generation = message_json(app, victim_id)["generation"]
        assert isinstance(generation, int)
        command = Command(
            message_id=victim_id,
            app_id=app.app_id,
            kind=CommandKind.ABORT,
            generation=generation,
            issued_ms=CLOCK.now_ms(),
        )
        writer.write(commands, victim_id, codecs.command.encode(command), partition=new_partition)
    writer.flush()
    assert CLOCK.now_ms() < due_at - 2_000, "the abort was written too late to test anything"

    report = w.wait_delivered(ledger, timeout_s=(due_at - CLOCK.now_ms()) / 1000 + 60)
    assert CLOCK.now_ms() > due_at + 1_000  # the controls arrived, GRACE_S ago at least
    delivered = sorted(set(victims) & w.arrivals.ids())
    states = {m: message_json(app, m)["status"] for m, app in victims.items()}
    check(
        w,
        ledger,
        report,
        f"commands partition added: aborted messages delivered {delivered}, records {states}",
    )
    assert delivered == []
    assert "commands partitions added while running" in w.system.log_text("dispatcher")
    w.system.start("bucketer")
    for victim_id, app in victims.items():  # the dispatcher's skip, not the bucketer, ended it
        wait_for(f"{victim_id} ABORTED", has_status(app, victim_id, "ABORTED"), 30, 0.1)
        logs = app.client.get(f"/messages/{victim_id}/logs").json()["logs"]
        reasons = [e["data"] for e in logs if e["status"] == "ABORTED"]
        assert reasons == [{"reason": "abort command"}], (states, reasons)
