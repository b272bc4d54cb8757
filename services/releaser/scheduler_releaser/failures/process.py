"""The failure notifier as a supervised child process of the dispatcher.

Why a process and not a task on the dispatcher's loop: that loop fires messages at their due
instant, and its latency is the product (ARCHITECTURE.md, "Lateness"). The notifier's work
comes in bursts exactly when things go wrong (an endpoint down for an hour ends thousands of
messages FAILED within seconds of each other): Avro decoding, JSON, HMAC signatures, Cassandra
reads of the apps, HTTP and Kafka round trips, all holding the GIL. The record writer showed
what sharing the interpreter costs (REST p50 lateness 1 ms -> 19-30 ms, writer_runner.py), so
the notifier gets its own interpreter, event loop, Kafka clients and Cassandra session, at a
lower CPU priority, as the record writer does.

Supervision (as writer_runner.ProcessRecordWriter): restarted after a crash (with a pause,
counted), stopped on the dispatcher's SIGTERM with a bounded budget (SIGTERM to the child, then
SIGKILL), and the child exits by itself when the dispatcher is gone (kill -9), so it never
outlives it. Its counts come back through a pipe and are exported by the dispatcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection

from scheduler.clock import SystemClock
from scheduler.encryption import EncryptionSettings
from scheduler.logs import configure_logging
from scheduler.settings import CassandraSettings, KafkaSettings
from scheduler_releaser.codecs import Codecs
from scheduler_releaser.settings import DispatchSettings, FailureNoticeSettings

from .notifier import NoticeEvents

log = logging.getLogger(__name__)
RESTART_PAUSE_S = 1.0
NICENESS = 10
EVENTS = frozenset({"sent", "retried", "dropped", "skipped", "pending", "lag"})


class ProcessFailureNotifier:
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
        self._args = (kafka, cassandra, encryption, dispatch, settings, dead_letter_topic, member)
        self._events = events
        self._restarted = restarted
        self._stop_budget_s = settings.shutdown_timeout_ms / 1000 + 5
        self._context = multiprocessing.get_context("spawn")  # never fork a threaded process
        self._stopping = threading.Event()
        self._child: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._supervisor = threading.Thread(
            target=self._supervise, name="failure-notifier-supervisor", daemon=True
        )

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    @property
    def stop_budget_s(self) -> float:
        """How long `stop()` takes at most: the child's shutdown budget, then a kill."""
        return self._stop_budget_s + 5

    def start(self) -> None:
        try:
            self._spawn()
        except Exception:  # the dispatcher goes on; the supervisor tries again
            log.exception("starting the failure notifier process failed")
        self._supervisor.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._supervisor.is_alive():
            self._supervisor.join(self.stop_budget_s + 5)

    def _spawn(self) -> None:
        parent_conn, child_conn = self._context.Pipe(duplex=False)
        child = self._context.Process(
            target=_child_main,
            args=(*self._args, child_conn, os.getpid()),
            name="failure-notifier",
            daemon=False,  # it owns a Kafka consumer: stopped gracefully, not killed
        )
        child.start()
        child_conn.close()  # the child's end, held by the child only (EOF when it exits)
        self._child, self._conn = child, parent_conn
        log.info("failure notifier started as process %s", child.pid)

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            self._drain(0.5)
            child = self._child
            if (child is None or not child.is_alive()) and not self._stopping.is_set():
                log.error(
                    "failure notifier process %s exited with %s; restarting it in %.0f s",
                    child.pid if child is not None else "(none)",
                    child.exitcode if child is not None else "no start",
                    RESTART_PAUSE_S,
                )
                self._restarted()
                if self._stopping.wait(RESTART_PAUSE_S):
                    break
                try:
                    self._spawn()
                except Exception:  # e.g. out of processes: try again after the pause
                    log.exception("starting the failure notifier process failed")
        self._shut_down_child()

    def _drain(self, wait_s: float) -> None:
        """Apply the events the child reported (waits up to `wait_s` for the first)."""
        conn = self._conn
        if conn is None:
            self._stopping.wait(wait_s)
            return
        try:
            while conn.poll(wait_s):
                name, args = conn.recv()
                if name in EVENTS:
                    getattr(self._events, name)(*args)
                wait_s = 0
        except (EOFError, OSError):
            self._conn = None  # the child exited; the supervisor notices and restarts it

    def _shut_down_child(self) -> None:
        child = self._child
        if child is None or child.pid is None:
            return
        if child.is_alive():
            os.kill(child.pid, signal.SIGTERM)
            child.join(self._stop_budget_s)
            if child.is_alive():
                log.error("failure notifier process %s did not stop; killing it", child.pid)
                child.kill()
                child.join(5)
        self._drain(0)
        log.info("failure notifier process %s stopped (exit code %s)", child.pid, child.exitcode)


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

    configure_logging("dispatcher-failure-notifier", dispatch.log_level)
    # Notices follow failures asynchronously: on a shared host, the dispatcher's timing comes
    # first.
    os.nice(NICENESS)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
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
                # Orphaned (the dispatcher was killed): stop rather than outlive it.
                should_stop=lambda: stop.is_set() or os.getppid() != parent_pid,
                member=member,
            )
        )
    finally:
        cluster.shutdown()
        conn.close()
