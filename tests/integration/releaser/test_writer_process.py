"""The record writer as a supervised child process (writer_runner.ProcessRecordWriter) against
the real Kafka and Cassandra: results -> records and usage, restart after kill -9, a clean stop,
and no orphan when the dispatcher itself is killed."""

from __future__ import annotations

import asyncio
import base64
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from scheduler.domain.ids import new_message_id
from scheduler.domain.status import Status
from scheduler.records import DeliveryOutcome, DeliveryResult
from scheduler.store.ports import LogEntry, MessageContent, StatusUpdate
from scheduler.store.usage import UsageDay, usage_day
from scheduler_releaser.dispatcher.writer_runner import ProcessRecordWriter

from .conftest import CLOCK, Env, eventually

pytestmark = pytest.mark.integration


def until(check: Callable[[], object], timeout_s: float = 30.0) -> None:
    asyncio.run(eventually(check, timeout_s=timeout_s))


class Written:
    """The `written(outcome, n)` callback (called from the supervisor thread): totals."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: Counter[str] = Counter()

    def __call__(self, outcome: str, n: int) -> None:
        with self._lock:
            self._totals[outcome] += n

    def totals(self) -> dict[str, int]:
        with self._lock:
            return dict(self._totals)


def deliver(env: Env, app_id: str, outcomes: list[DeliveryOutcome]) -> list[DeliveryResult]:
    """QUEUED records in Cassandra, then the dispatcher's results for them on the results
    topic (encoded as the dispatcher does)."""
    now = CLOCK.now_ms()
    results = []
    for outcome in outcomes:
        message_id = new_message_id(now)
        env.stores.messages.save(
            MessageContent(
                app_id=app_id,
                message_id=message_id,
                payload_json="{}",
                send_at_ms=now,
                created_ms=now,
            ),
            StatusUpdate(Status.QUEUED, 0, 1, now, now),
            LogEntry(now, "0:1:released", Status.QUEUED),
        )
        result = DeliveryResult(
            message_id=message_id,
            app_id=app_id,
            generation=0,
            attempt=1,
            outcome=outcome,
            due_ms=now,
            finished_ms=now + 3,
            lateness_ms=3,
            http_status=200 if outcome is DeliveryOutcome.SENT else 500,
            error=None if outcome is DeliveryOutcome.SENT else "http 500",
        )
        env.producer.produce(
            env.topics.results, key=message_id.encode(), value=env.codecs.result.encode(result)
        )
        results.append(result)
    env.flush()
    return results


def statuses(env: Env, results: list[DeliveryResult]) -> list[Status | None]:
    views = [env.stores.messages.get(r.app_id, r.message_id) for r in results]
    return [v.state.status if v is not None else None for v in views]


def today(env: Env, app_id: str) -> UsageDay | None:
    day = usage_day(CLOCK.now_ms())
    days = env.stores.usage.read(app_id, day - 1, day + 1)
    return days[0] if days else None


def committed_offsets(env: Env) -> int:
    """Offsets the writer's group committed on the results topic (a consumer that does not
    join the group: it only reads them)."""
    consumer = Consumer(
        {**env.kafka.client_config(), "group.id": f"{env.kafka.topic_prefix}record-writer"}
    )
    try:
        partitions = range(env.kafka.results_partitions)
        tps = consumer.committed(
            [TopicPartition(env.topics.results, p) for p in partitions], timeout=10
        )
        return sum(max(tp.offset, 0) for tp in tps)
    finally:
        consumer.close()


def alive(pid: int) -> bool:
    """Running (a zombie left for a parent to reap counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def writer(env: Env) -> Iterator[tuple[ProcessRecordWriter, Written, list[int]]]:
    written = Written()
    restarts: list[int] = []
    w = ProcessRecordWriter(
        env.kafka,
        env.cassandra,
        env.topics.results,
        written,
        member=f"{env.kafka.topic_prefix}record-writer-0-of-1",
        restarted=lambda: restarts.append(1),
        log_level="WARNING",
    )
    w.start()
    try:
        yield w, written, restarts
    finally:
        w.stop(15)


def test_results_become_records_and_usage_and_the_written_totals_match(
    env: Env, writer: tuple[ProcessRecordWriter, Written, list[int]]
) -> None:
    w, written, restarts = writer
    assert w.pid is not None and w.pid != os.getpid()
    sent = deliver(env, "app-a", [DeliveryOutcome.SENT] * 6)
    failed = deliver(env, "app-a", [DeliveryOutcome.FAILED] * 2)
    until(lambda: statuses(env, sent) == [Status.SENT] * 6)
    until(lambda: statuses(env, failed) == [Status.FAILED] * 2)
    until(lambda: written.totals() == {"SENT": 6, "FAILED": 2})
    until(lambda: committed_offsets(env) == 8)  # after the writes: nothing is applied again
    usage = today(env, "app-a")
    assert usage is not None and (usage.sent, usage.failed) == (6, 2)
    assert env.stores.usage.pending("app-a") == -8  # nothing ingested: SENT/FAILED lower it
    view = env.stores.messages.get("app-a", sent[0].message_id)
    assert view is not None and view.state.lateness_ms == 3
    assert restarts == []


def test_a_killed_writer_process_is_restarted_and_keeps_writing(
    env: Env, writer: tuple[ProcessRecordWriter, Written, list[int]]
) -> None:
    w, written, restarts = writer
    first = deliver(env, "app-k", [DeliveryOutcome.SENT] * 5)
    until(lambda: statuses(env, first) == [Status.SENT] * 5)
    until(lambda: written.totals() == {"SENT": 5})
    until(lambda: committed_offsets(env) == 5)  # so the exact totals below hold
    old = w.pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    until(lambda: restarts == [1], timeout_s=10)
    until(lambda: (pid := w.pid) is not None and pid != old and alive(pid), timeout_s=10)
    assert not alive(old)  # reaped by the supervisor
    second = deliver(env, "app-k", [DeliveryOutcome.SENT] * 5)
    # Static membership: the new child rejoins with the killed one's group.instance.id and gets
    # its partitions back at once (a dynamic member waited out the dead one's 45 s session).
    until(lambda: statuses(env, second) == [Status.SENT] * 5, timeout_s=15)
    until(lambda: today(env, "app-k") == UsageDay(usage_day(CLOCK.now_ms()), 0, 10, 0))
    # at least once, but from the committed offsets: the first five were not applied again
    assert written.totals() == {"SENT": 10}
    assert restarts == [1]


def test_stop_ends_the_writer_process_with_exit_code_0_within_seconds(
    env: Env, writer: tuple[ProcessRecordWriter, Written, list[int]]
) -> None:
    w, written, restarts = writer
    results = deliver(env, "app-s", [DeliveryOutcome.SENT])
    until(lambda: statuses(env, results) == [Status.SENT])  # the child is consuming
    pid = w.pid
    assert pid is not None
    started = CLOCK.monotonic_ms()
    w.stop(15)
    took_s = (CLOCK.monotonic_ms() - started) / 1000
    assert not alive(pid)
    child = w._child  # the process object: its exit code is not exposed otherwise
    assert child is not None and child.exitcode == 0
    assert took_s < 5, f"stop took {took_s:.1f} s"
    assert restarts == []  # a stop is not a crash
    assert written.totals() == {"SENT": 1}


PARENT = """
import base64, pickle, sys, threading
from scheduler_releaser.dispatcher.writer_runner import ProcessRecordWriter

if __name__ == "__main__":
    kafka, cassandra, topic = pickle.loads(base64.b64decode(sys.argv[1]))
    writer = ProcessRecordWriter(
        kafka, cassandra, topic, lambda outcome, n: print("written", outcome, n, flush=True),
        member=kafka.topic_prefix + "record-writer-orphan",
        log_level="WARNING",
    )
    writer.start()
    print("child", writer.pid, flush=True)
    threading.Event().wait()
"""


def test_a_parent_killed_with_sigkill_leaves_no_orphan_writer(env: Env, tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    settings = base64.b64encode(pickle.dumps((env.kafka, env.cassandra, env.topics.results)))
    with subprocess.Popen(
        [sys.executable, str(script), settings.decode()], stdout=subprocess.PIPE, text=True
    ) as parent:
        lines: queue.Queue[str] = queue.Queue()

        def read() -> None:
            assert parent.stdout is not None
            for line in parent.stdout:
                lines.put(line.strip())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        child: int | None = None
        try:
            first = lines.get(timeout=30)
            assert first.startswith("child "), first
            child = pid = int(first.split()[1])
            assert alive(pid)
            deliver(env, "app-o", [DeliveryOutcome.SENT])
            # the child is in its consume loop (where it watches its parent)
            assert lines.get(timeout=30) == "written SENT 1"
            parent.kill()
            parent.wait(10)
            killed = CLOCK.monotonic_ms()
            until(lambda: not alive(pid), timeout_s=10)
            gone_after_s = (CLOCK.monotonic_ms() - killed) / 1000
            assert gone_after_s < 5, f"the orphan lived {gone_after_s:.1f} s"
        finally:
            if parent.poll() is None:
                parent.kill()
                parent.wait(10)
            if child is not None and alive(child):
                os.kill(child, signal.SIGKILL)
            reader.join(10)  # EOF: every writer of the pipe is gone
