"""The failure notifier as a supervised child process of the dispatcher.

Why a process and not a task on the dispatcher's loop: that loop fires messages at their due
instant, and its latency is the product (ARCHITECTURE.md, "Lateness"). The notifier's work
comes in bursts exactly when things go wrong (an endpoint down for an hour ends thousands of
messages FAILED within seconds of each other): Avro decoding, JSON, HMAC signatures, Cassandra
reads of the apps, HTTP and Kafka round trips, all holding the GIL. The record writer showed
what sharing the interpreter costs (REST p50 lateness 1 ms -> 19-30 ms, writer_runner.py), so
the notifier gets its own interpreter, event loop, Kafka clients and Cassandra session, at a
lower CPU priority, as the record writer does.

Supervision (child_process.SupervisedChild, as for the record writer): restarted after a crash
(with a pause, counted), stopped on the dispatcher's SIGTERM with a bounded budget (SIGTERM to
the child, then SIGKILL), and the child exits by itself when the dispatcher is gone (kill -9),
so it never outlives it. Its counts come back through a pipe and are exported by the
dispatcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from multiprocessing.connection import Connection

from scheduler.clock import SystemClock
from scheduler.encryption import EncryptionSettings
from scheduler.settings import CassandraSettings, KafkaSettings
from scheduler_releaser.child_process import SupervisedChild, child_started
from scheduler_releaser.codecs import Codecs
from scheduler_releaser.settings import DispatchSettings, FailureNoticeSettings

from .notifier import NoticeEvents

log = logging.getLogger(__name__)
NICENESS = 10
EVENTS = frozenset({"sent", "retried", "dropped", "skipped", "pending", "lag"})


class ProcessFailureNotifier(SupervisedChild):
    def __init__(
        self,
        *,
        kafka: KafkaSettings,
        cassandra: CassandraSettings,
        encryption: EncryptionSettings,
        dispatch: DispatchSettings,
        settings: FailureNoticeSettings,
        dead_letter_topic: str,
        events: NoticeEvents,
        member: str,
        restarted: Callable[[], None] = lambda: None,
    ) -> None:
        """`member`: the static group membership id, one per dispatcher instance."""
        self._events = events
        self._stop_budget_s = settings.shutdown_timeout_ms / 1000 + 5
        super().__init__(
            "failure notifier",
            "failure-notifier",
            _child_main,
            (kafka, cassandra, encryption, dispatch, settings, dead_letter_topic, member),
            on_event=self._apply,
            restarted=restarted,
            term_budget_s=self._stop_budget_s,
            stop_timeout_s=self.stop_budget_s + 5,
            retry_failed_start=True,  # the dispatcher goes on without it meanwhile
            log=log,
        )

    @property
    def stop_budget_s(self) -> float:
        """How long `stop()` takes at most: the child's shutdown budget, then a kill."""
        return self._stop_budget_s + 5

    def _apply(self, event: tuple[str, tuple[object, ...]]) -> None:
        """An event reported by the child (`PipeEvents`), applied to `events`."""
        name, args = event
        if name in EVENTS:
            getattr(self._events, name)(*args)


class PipeEvents:
    """NoticeEvents sent to the dispatcher, which applies them to its metrics."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def _send(self, name: str, *args: object) -> None:
        with contextlib.suppress(OSError, ValueError):  # the parent is gone: the loop ends
            self._conn.send((name, args))

    def sent(self, destination: str) -> None:
        self._send("sent", destination)

    def retried(self, destination: str, reason: str) -> None:
        self._send("retried", destination, reason)

    def dropped(self, destination: str, reason: str) -> None:
        self._send("dropped", destination, reason)

    def skipped(self, reason: str) -> None:
        self._send("skipped", reason)

    def pending(self, count: int) -> None:
        self._send("pending", count)

    def lag(self, records: int) -> None:
        self._send("lag", records)


def _child_main(
    kafka: KafkaSettings,
    cassandra: CassandraSettings,
    encryption: EncryptionSettings,
    dispatch: DispatchSettings,
    settings: FailureNoticeSettings,
    dead_letter_topic: str,
    member: str,
    conn: Connection,
    parent_pid: int,
) -> None:
    # Imported here: the spawned interpreter needs them, the parent's import graph does not.
    from scheduler.store.cassandra import connect
    from scheduler.store.cassandra_apps import CassandraAppStore

    from .runtime import run_notifier

    # Notices follow failures asynchronously: on a shared host, the dispatcher's timing comes
    # first.
    stop = child_started("dispatcher-failure-notifier", dispatch.log_level, NICENESS, parent_pid)
    cluster, session = connect(cassandra, cassandra.keyspace)
    try:
        apps = CassandraAppStore(session, encryption.cipher())
        asyncio.run(
            run_notifier(
                kafka=kafka,
                dead_letter_topic=dead_letter_topic,
                codec=Codecs.build(kafka).dead_letter,
                dispatch=dispatch,
                settings=settings,
                apps=apps,
                clock=SystemClock(),
                events=PipeEvents(conn),
                should_stop=stop,  # asked, or orphaned (the dispatcher was killed)
                member=member,
            )
        )
    finally:
        cluster.shutdown()
        conn.close()
