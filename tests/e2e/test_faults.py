"""Kafka and Cassandra faults under the running system, on a PRIVATE stack (ports 29092/29042,
state in .local/fault-stack) so that no other test sees them: a Kafka restart and a Cassandra
restart in the middle of a run lose nothing and deliver nothing early (no Kafka duplicate); an
ingest request in flight when Kafka dies gets a 503, and nothing is half-stored."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from scheduler.clock import SystemClock
from scheduler.domain.ids import derived_message_id
from scheduler.kafka.groups import GroupQueryFailed, describe_groups_in_child
from scheduler.settings import KafkaSettings
from scheduler.testing.servers import Servers
from tests.support.faultstack import PrivateStack
from tests.support.ledger import Ledger, Planned
from tests.support.processes import wait_for
from tests.support.workload import produce, schedule_batch

from .conftest import World, private_settings, world

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLOCK = SystemClock()
PRODUCE_TIMEOUT_MS = 3_000  # ingest's delivery timeout: a request waits this long, then 503


@pytest.fixture(scope="module")
def stack() -> Iterator[PrivateStack]:
    private = PrivateStack()
    private.up()
    try:
        yield private
    finally:
        private.down()


@pytest.fixture(scope="module")
def fault_world(stack: PrivateStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    servers = Servers(stack.kafka_bootstrap, ["127.0.0.1"], stack.cassandra_port, "fault-stack")
    kafka, cassandra = private_settings(servers)
    extra = {"SCHEDULER_INGEST_PRODUCE_TIMEOUT_MS": str(PRODUCE_TIMEOUT_MS)}
    with world(kafka, cassandra, tmp_path_factory.mktemp("faults"), extra) as w:
        yield w


def schedule_run(w: World, ledger: Ledger, rng: random.Random, n: int) -> None:
    """n messages per app and route, due from now to 15 s ahead (near-term and long-horizon)."""
    for app in (w.rest, w.kafka_app):
        now = CLOCK.now_ms()
        schedule_batch(app, ledger, [now + rng.randint(500, 15_000) for _ in range(n)])
        produce(
            w.kafka, w.scheduling, app, ledger, [now + rng.randint(500, 15_000) for _ in range(n)]
        )


def assert_still_running(w: World) -> None:
    """The services rode the fault out by themselves: none exited, all ready again."""
    for name, proc in w.system.procs.items():
        assert proc.poll() is None, f"{name} exited with {proc.returncode}\n{w.system.tail()}"
    wait_for(
        "every service ready again", lambda: all(w.system.ready(n) for n in w.system.procs), 90
    )


def restart_mid_run(w: World, stack: PrivateStack, server: str) -> None:
    """Schedule a run, stop `server` cleanly (SIGTERM) while it is under way, restart it: every
    acknowledged message arrives, none early, no Kafka duplicate, no service died."""
    ledger = Ledger()
    schedule_run(w, ledger, random.Random(server), 150)
    time.sleep(2.0)  # some delivered, some in the ring, some stored in Cassandra
    began = CLOCK.now_ms()
    stack.stop(server)
    time.sleep(3.0)
    stack.up()
    back_s = (CLOCK.now_ms() - began) / 1000
    report = w.wait_delivered(ledger, timeout_s=120)
    print(f"{server} restart (down {back_s:.1f} s): {report.summary()}")
    assert report.lost == []
    assert report.early == []
    assert report.duplicates.get("kafka", 0) == 0, report.duplicates
    assert_still_running(w)


def test_cassandra_restart_mid_run_loses_nothing(fault_world: World, stack: PrivateStack) -> None:
    restart_mid_run(fault_world, stack, "cassandra")


@dataclass
class Attempt:
    key: str
    started_ms: int
    answered_ms: int = 0
    status: int = 0  # 0: no answer (connection error)
    retry_after: str | None = None


@dataclass
class Attempts:
    items: list[Attempt] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def schedule_one(w: World, attempts: Attempts, key: str, send_at: int) -> None:
    attempt = Attempt(key, CLOCK.now_ms())
    body = {"payload": {"k": key}, "sendAt": send_at, "idempotencyKey": key}
    try:
        answer = w.rest.client.post("/messages", json=body)
        attempt.status = answer.status_code
        attempt.retry_after = answer.headers.get("Retry-After")
    except httpx.HTTPError:
        pass
    attempt.answered_ms = CLOCK.now_ms()
    with attempts.lock:
        attempts.items.append(attempt)


def keep_scheduling(
    w: World, attempts: Attempts, stop: threading.Event, worker: int, send_at: int
) -> None:
    n = 0
    while not stop.is_set():
        schedule_one(w, attempts, f"w{worker}-{n}", send_at)
        n += 1


def test_ingest_request_in_flight_when_kafka_dies_gets_503_and_nothing_is_half_stored(
    fault_world: World, stack: PrivateStack
) -> None:
    w = fault_world
    attempts = Attempts()
    stop = threading.Event()
    send_at = CLOCK.now_ms() + 20_000
    workers = [
        threading.Thread(target=keep_scheduling, args=(w, attempts, stop, i, send_at), daemon=True)
        for i in range(4)
    ]
    for t in workers:
        t.start()
    time.sleep(1.5)
    # Freeze the broker first, so that requests are surely in flight (sent, never acknowledged)
    # when it dies; then kill it.
    stack.freeze("kafka")
    frozen_ms = CLOCK.now_ms()  # every broker thread is stopped from here on
    # The looping workers may all be waiting on requests sent before the freeze: these start
    # after it, so they are surely in flight (never acknowledged) when the broker dies.
    in_flight_senders = [
        threading.Thread(target=schedule_one, args=(w, attempts, f"frozen-{i}", send_at))
        for i in range(4)
    ]
    for t in in_flight_senders:
        t.start()
    time.sleep(1.0)
    killed_ms = CLOCK.now_ms()
    stack.stop("kafka", signal.SIGKILL)
    time.sleep(PRODUCE_TIMEOUT_MS / 1000 + 2.0)
    ready = httpx.get(w.system.url("ingest", "/readyz"), timeout=10)
    assert ready.status_code == 503 and ready.json()["checks"]["kafka"] == "down", ready.text
    stop.set()
    for t in workers + in_flight_senders:
        t.join(30)
    stack.up()

    items = attempts.items
    before = [a for a in items if a.answered_ms < frozen_ms]
    in_flight = [a for a in items if frozen_ms < a.started_ms < killed_ms]
    after = [a for a in items if a.started_ms > killed_ms]
    unsure = [a for a in items if a.started_ms <= frozen_ms <= a.answered_ms]
    print(
        f"requests: {len(before)} answered before the freeze, {len(unsure)} straddling it"
        f" {[a.status for a in unsure]}, {len(in_flight)} in flight when Kafka died,"
        f" {len(after)} sent after"
    )
    assert before and all(a.status == 200 for a in before)
    assert in_flight and all(a.status == 503 and a.retry_after for a in in_flight), in_flight
    assert all(a.status == 503 and a.retry_after for a in after), after
    assert all(a.status in (200, 503) for a in unsure), unsure
    refused = [a for a in items if a.status == 503]

    # Acknowledged messages are delivered. A refused one is absent everywhere, or (only for a
    # request straddling the freeze: its record reached Kafka, the ack did not come back)
    # delivered in full: never a READY record that nothing will deliver.
    ledger = Ledger()
    for a in items:
        if a.status == 200:
            message_id = derived_message_id(w.rest.app_id, a.key)
            ledger.add(Planned(message_id, send_at, "rest", a.answered_ms))
    report = w.wait_delivered(ledger, timeout_s=(send_at - CLOCK.now_ms()) / 1000 + 90)
    assert report.lost == [] and report.early == [], report.summary()
    delivered = w.arrivals.ids()
    landed_anyway = 0
    for a in refused:
        message_id = derived_message_id(w.rest.app_id, a.key)
        record = w.rest.client.get(f"/messages/{message_id}")
        if record.status_code == 404:
            assert message_id not in delivered
        else:
            assert a in unsure, (a, record.json())
            landed_anyway += 1
            assert record.json()["status"] == "SENT", record.json()
            assert message_id in delivered
    print(f"{len(refused)} refused with 503; {landed_anyway} of them had reached Kafka anyway")
    assert_still_running(w)


def test_kafka_restart_mid_run_loses_nothing(fault_world: World, stack: PrivateStack) -> None:
    restart_mid_run(fault_world, stack, "kafka")


def test_group_queries_through_a_broker_kill_cost_queries_not_the_asker(
    stack: PrivateStack,
) -> None:
    """librdkafka aborts a process whose group-coordinator Admin request loses its connection
    (scheduler.kafka.groups); it killed the releaser during this file's Kafka restart. Four
    askers query the groups without pause while the broker is killed and restarted: queries
    fail during the outage, the asker (this process) lives, and queries answer again after."""
    kafka = KafkaSettings(bootstrap_servers=stack.kafka_bootstrap)
    groups = ["scheduler-bucketer", "scheduler.record-writer"]
    failures: list[str] = []
    answers = 0
    stop = threading.Event()

    def ask() -> None:
        nonlocal answers
        while not stop.is_set():
            try:
                describe_groups_in_child(kafka, groups, timeout_s=2.0)
                answers += 1
            except GroupQueryFailed as exc:
                failures.append(str(exc))

    askers = [threading.Thread(target=ask) for _ in range(4)]
    for asker in askers:
        asker.start()
    try:
        wait_for("a query answered before the kill", lambda: answers > 0, 60)
        stack.stop("kafka", signal.SIGKILL)
        time.sleep(3.0)
        stack.up()
        time.sleep(3.0)
    finally:
        stop.set()
        for asker in askers:
            asker.join(60)
    aborted = [f for f in failures if "exited with -6" in f]
    print(f"{answers} answered, {len(failures)} failed, {len(aborted)} of them aborted")
    assert failures, "no query met the outage"
    assert describe_groups_in_child(kafka, groups, timeout_s=10.0).keys() == set(groups)
