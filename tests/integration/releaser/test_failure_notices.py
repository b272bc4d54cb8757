"""The failure notifier against the real Kafka and Cassandra (failures/runtime.py): dead letters
committed in a transaction, as the dispatcher writes them, become signed notices at a local HTTP
receiver and records on a Kafka topic; a failure URL that answers 500 is retried and dropped
without holding the others back; the offsets are committed, so a restarted notifier sends
nothing again, and the lag reads 0 once every notice is finished. And the notifier as the
child process the dispatcher runs (failures/process.py): restarted after a kill -9, stopped
cleanly, and gone when the dispatcher is killed."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import CollectorRegistry

from scheduler.domain.ids import new_message_id
from scheduler.encryption import EncryptionSettings
from scheduler.records import DeadLetter
from scheduler.store.ports import Application
from scheduler_releaser.dispatcher.signing import verify
from scheduler_releaser.failures.notifier import MetricsEvents
from scheduler_releaser.failures.process import ProcessFailureNotifier
from scheduler_releaser.failures.runtime import run_notifier
from scheduler_releaser.metrics import FailureNoticeMetrics
from scheduler_releaser.settings import FailureNoticeSettings

from .conftest import CLOCK, Env, Receiver, eventually
from .test_dispatch import SETTINGS as DISPATCH
from .test_dispatch import create_topic, delete_topic, read_all, rest_app
from .test_writer_process import alive

pytestmark = pytest.mark.integration

NOTICES = FailureNoticeSettings(
    max_attempts=3,
    backoff_base_ms=200,
    backoff_max_delay_ms=1_000,
    timeout_ms=2_000,
    commit_interval_ms=200,
)


def with_failure(app: Application, kind: str, endpoint: str) -> Application:
    return replace(app, failure_type=kind, failure_endpoint=endpoint)


def dead_letter(app_id: str, n: int) -> DeadLetter:
    now = CLOCK.now_ms()
    return DeadLetter(
        message_id=new_message_id(now),
        app_id=app_id,
        generation=0,
        attempts=3,
        due_ms=now - 2_000,
        failed_ms=now,
        payload_json=json.dumps({"n": n}),
        last_error="http 500",
        last_http_status=500,
        body_excerpt='{"status": 500}',
    )


def produce_in_a_transaction(env: Env, letters: list[DeadLetter]) -> None:
    """As the dispatcher does: in its transaction (read_committed readers see them at the
    commit; the commit's marker follows them in the partition)."""
    producer = Producer(
        {**env.kafka.client_config(), "transactional.id": f"{env.kafka.topic_prefix}dlq-test"}
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for letter in letters:
        producer.produce(
            env.topics.dead_letter,
            key=letter.message_id.encode(),
            value=env.codecs.dead_letter.encode(letter),
        )
    producer.commit_transaction(30)


def committed(env: Env) -> int:
    consumer = Consumer(
        {**env.kafka.client_config(), "group.id": f"{env.kafka.topic_prefix}failure-notifier"}
    )
    try:
        [tp] = consumer.committed([TopicPartition(env.topics.dead_letter, 0)], timeout=10)
        _, high = consumer.get_watermark_offsets(tp, timeout=10)
        return int(tp.offset) if tp.offset == high else -1
    finally:
        consumer.close()


class Notifier:
    """run_notifier as a task of the test's loop, stopped like the child process is."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.registry = CollectorRegistry()
        self.metrics = FailureNoticeMetrics(self.registry)
        self.stopped = False
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Notifier:
        self.task = asyncio.create_task(
            run_notifier(
                kafka=self.env.kafka,
                dead_letter_topic=self.env.topics.dead_letter,
                codec=self.env.codecs.dead_letter,
                dispatch=DISPATCH,
                settings=NOTICES,
                apps=self.env.stores.apps,
                clock=CLOCK,
                events=MetricsEvents(self.metrics),
                should_stop=lambda: self.stopped,
                member=f"{self.env.kafka.topic_prefix}failure-notifier-0",
            )
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stopped = True
        assert self.task is not None
        await asyncio.wait_for(self.task, 30)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.registry.get_sample_value(name, labels or {}) or 0.0


def test_dead_letters_become_notices_at_a_url_and_on_a_topic_once(
    env: Env, receiver: Receiver
) -> None:
    topic = f"notices-{uuid.uuid4().hex[:8]}"  # not under the scheduler's prefix
    create_topic(env, topic)
    apps = {
        "hook": with_failure(rest_app("hook", receiver.url("/ok")), "REST", receiver.url("/f")),
        "topic": with_failure(rest_app("topic", receiver.url("/ok")), "KAFKA", topic),
        "down": with_failure(
            rest_app("down", receiver.url("/ok")), "REST", receiver.url("/always")
        ),
        "none": rest_app("none", receiver.url("/ok")),
    }
    for app in apps.values():
        env.add_app(app)
    # the dead URL's notices come first in the partition
    letters = [dead_letter("down", 0)] + [
        dead_letter(app_id, n) for n in range(3) for app_id in ("hook", "topic", "none")
    ]
    later = dead_letter("hook", 9)
    try:

        async def scenario() -> None:
            async with Notifier(env) as notifier:
                started = CLOCK.now_ms()
                await asyncio.to_thread(produce_in_a_transaction, env, letters)
                # the others are not held back by the dead URL's retries
                await eventually(lambda: len(receiver.ids("/f")) == 3, timeout_s=30)
                assert len(receiver.ids("/always")) < NOTICES.max_attempts
                assert CLOCK.now_ms() - started < 10_000
                await eventually(
                    lambda: (
                        notifier.metric(
                            "scheduler_failure_notices_dropped_total",
                            {"destination": "REST", "reason": "attempts"},
                        )
                        == 1
                    ),
                    timeout_s=30,
                )
                await eventually(lambda: committed(env) >= 0, timeout_s=20)
                await eventually(
                    lambda: (
                        notifier.metric("scheduler_failure_notifier_lag_records") == 0
                        and notifier.metric("scheduler_failure_notices_pending") == 0
                    ),
                    timeout_s=10,
                )
                assert (
                    notifier.metric("scheduler_failure_notices_sent_total", {"destination": "REST"})
                    == 3
                )
                assert (
                    notifier.metric(
                        "scheduler_failure_notices_sent_total", {"destination": "KAFKA"}
                    )
                    == 3
                )
                assert (
                    notifier.metric(
                        "scheduler_failure_notices_skipped_total", {"reason": "no_destination"}
                    )
                    == 3
                )
            # a new incarnation reads from the committed offsets: only what came since
            await asyncio.to_thread(produce_in_a_transaction, env, [later])
            async with Notifier(env):
                await eventually(lambda: later.message_id in receiver.ids("/f"), timeout_s=30)
                await asyncio.sleep(1)

        asyncio.run(scenario())
        hook_ids = {letter.message_id for letter in letters if letter.app_id == "hook"}
        with receiver.lock:
            at_hook = [r for r in receiver.received if r.path == "/f"]
            at_down = [r for r in receiver.received if r.path == "/always"]
        assert {r.headers["x-scheduler-message-id"] for r in at_hook} == hook_ids | {
            later.message_id
        }
        assert len(at_hook) == 4, "sent again after the restart"
        for r in at_hook:
            assert r.headers["x-scheduler-event"] == "message.failed"
            assert verify(
                "secret",
                int(r.headers["x-scheduler-timestamp"]),
                r.body,
                r.headers["x-scheduler-signature"],
            )
            body = json.loads(r.body)
            assert body["appId"] == "hook" and body["lastHttpStatus"] == 500
            assert body["payload"] in ({"n": 0}, {"n": 1}, {"n": 2}, {"n": 9})
        assert [r.headers["x-scheduler-attempt"] for r in at_down] == ["1", "2", "3"]
        records = read_all(env, topic, 3)
        topic_ids = {letter.message_id for letter in letters if letter.app_id == "topic"}
        assert {m.key().decode() for m in records} == topic_ids
        assert len(records) == 3
        for m in records:
            assert dict(m.headers())["X-Scheduler-Event"] == b"message.failed"
            assert json.loads(m.value())["messageId"] == m.key().decode()
    finally:
        delete_topic(env, topic)


def test_the_notifier_process_sends_reports_its_counts_restarts_and_stops(
    env: Env, receiver: Receiver
) -> None:
    """The child process the dispatcher runs (failures/process.py): notices sent from it, its
    counts applied to the dispatcher's metrics through the pipe, a kill -9 answered with a
    restart (counted), and a stop that ends it with exit code 0 within its budget."""
    env.add_app(with_failure(rest_app("proc", receiver.url("/ok")), "REST", receiver.url("/p")))
    registry = CollectorRegistry()
    metrics = FailureNoticeMetrics(registry)

    def sent() -> float:
        value = registry.get_sample_value(
            "scheduler_failure_notices_sent_total", {"destination": "REST"}
        )
        return value or 0.0

    notifier = ProcessFailureNotifier(
        kafka=env.kafka,
        cassandra=env.cassandra,
        encryption=EncryptionSettings(),
        dispatch=DISPATCH,
        settings=NOTICES,
        dead_letter_topic=env.topics.dead_letter,
        events=MetricsEvents(metrics),
        member=f"{env.kafka.topic_prefix}failure-notifier-0-of-1",
        restarted=metrics.restarts.inc,
    )
    notifier.start()
    try:
        first = [dead_letter("proc", n) for n in range(2)]
        produce_in_a_transaction(env, first)
        asyncio.run(eventually(lambda: len(receiver.ids("/p")) == 2, timeout_s=60))
        asyncio.run(eventually(lambda: sent() == 2, timeout_s=10))
        asyncio.run(eventually(lambda: committed(env) >= 0, timeout_s=20))
        old = notifier.pid
        assert old is not None and old != os.getpid()
        os.kill(old, signal.SIGKILL)
        asyncio.run(
            eventually(
                lambda: (
                    notifier.pid not in (None, old)
                    and registry.get_sample_value("scheduler_failure_notifier_restarts_total") == 1
                ),
                timeout_s=20,
            )
        )
        later = dead_letter("proc", 9)
        produce_in_a_transaction(env, [later])
        asyncio.run(eventually(lambda: later.message_id in receiver.ids("/p"), timeout_s=60))
        # from the committed offsets: the first two were not sent again
        assert sorted(receiver.ids("/p")) == sorted(
            [letter.message_id for letter in first] + [later.message_id]
        )
    finally:
        pid = notifier.pid
        started = CLOCK.monotonic_ms()
        notifier.stop()
        took_s = (CLOCK.monotonic_ms() - started) / 1000
    child = notifier._child  # the process object: its exit code is not exposed otherwise
    assert child is not None and child.exitcode == 0, child
    assert pid is not None and took_s < NOTICES.shutdown_timeout_ms / 1000
    assert registry.get_sample_value("scheduler_failure_notifier_restarts_total") == 1


PARENT = """
import base64, pickle, sys, threading
from scheduler.encryption import EncryptionSettings
from scheduler_releaser.failures.process import ProcessFailureNotifier


class Printed:
    def __getattr__(self, name):
        return lambda *args: print(name, *args, flush=True)


if __name__ == "__main__":
    kafka, cassandra, dispatch, notices, topic = pickle.loads(base64.b64decode(sys.argv[1]))
    notifier = ProcessFailureNotifier(
        kafka=kafka, cassandra=cassandra, encryption=EncryptionSettings(), dispatch=dispatch,
        settings=notices, dead_letter_topic=topic, events=Printed(),
        member=kafka.topic_prefix + "failure-notifier-orphan",
    )
    notifier.start()
    print("child", notifier.pid, flush=True)
    threading.Event().wait()
"""


def test_a_dispatcher_killed_with_sigkill_leaves_no_orphan_notifier(
    env: Env, receiver: Receiver, tmp_path: Path
) -> None:
    env.add_app(with_failure(rest_app("orph", receiver.url("/ok")), "REST", receiver.url("/o")))
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    settings = base64.b64encode(
        pickle.dumps((env.kafka, env.cassandra, DISPATCH, NOTICES, env.topics.dead_letter))
    )
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
            produce_in_a_transaction(env, [dead_letter("orph", 0)])
            # the child sent it and reported it: it is in its loop (where it watches its parent)
            deadline = CLOCK.monotonic_ms() + 60_000
            while (line := lines.get(timeout=60)) != "sent REST":
                assert CLOCK.monotonic_ms() < deadline, line
            parent.kill()
            parent.wait(10)
            killed = CLOCK.monotonic_ms()
            asyncio.run(eventually(lambda: not alive(pid), timeout_s=10))
            gone_after_s = (CLOCK.monotonic_ms() - killed) / 1000
            assert gone_after_s < 5, f"the orphan lived {gone_after_s:.1f} s"
        finally:
            if parent.poll() is None:
                parent.kill()
                parent.wait(10)
            if child is not None and alive(child):
                os.kill(child, signal.SIGKILL)
            reader.join(10)  # EOF: every writer of the pipe is gone
