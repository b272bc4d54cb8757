"""Where the record writer runs: a child process of the dispatcher (production) or a thread.

The record writer (results topic -> Cassandra records, `record_writer.py`) does a Cassandra
write per delivery. In the dispatcher's own interpreter those writes hold the GIL often enough
to delay the event loop that fires messages: at 1,000 msg/s to a local HTTP receiver, lateness
p50 was 19-30 ms with the writer as a thread and 1 ms without it (bench/dispatch_bench.py,
services/releaser/README.md). So `scheduler-dispatcher` runs it as a child process with its own
GIL, Kafka consumer and Cassandra session; it stays part of the dispatcher (same Deployment,
same settings), as docs/ARCHITECTURE.md keeps four entry points.

Both runners consume at least once (offsets committed after the writes returned) and report
how many results they applied through `written(outcome, n)`.

The child process: supervised by a thread of the parent, restarted after a crash (with a
pause), stopped on SIGTERM/SIGINT or when the parent asks, and it exits by itself when the
parent is gone (kill -9), so it never outlives its dispatcher.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Protocol, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException

from scheduler.codec import DecodeError
from scheduler.logs import configure_logging
from scheduler.records import DeliveryResult
from scheduler.settings import CassandraSettings, KafkaSettings
from scheduler.store.bucket_index import writer_client_id
from scheduler_releaser.codecs import Codecs

from .feeds import consumer_config
from .record_writer import RecordWriter

log = logging.getLogger(__name__)
IDLE_COMMIT_S = 1.0  # stored offsets are committed at least this often, results or not

T = TypeVar("T")
Written = Callable[[str, int], None]  # (outcome, count) of results applied
RESTART_PAUSE_S = 1.0
WRITER_NICENESS = 10
WRITER_SESSION_TIMEOUT_MS = 10_000  # an instance gone for good: its partitions move after this


class RecordWriterRunner(Protocol):
    def start(self) -> None: ...

    def stop(self, timeout_s: float = 10.0) -> None: ...


# -- the consuming loop (either runner) ------------------------------------------------------


def consume_results(
    kafka: KafkaSettings,
    results_topic: str,
    writer: RecordWriter,
    codecs: Codecs,
    *,
    written: Written,
    stop: threading.Event,
    should_stop: Callable[[], bool] = lambda: False,
    member: str | None = None,
) -> None:
    """Results -> records, at least once: offsets are committed after the writes returned.

    `member`: a static group membership id (`group.instance.id`). A writer restarted with the
    same id takes its partitions back at once, instead of after the dead member's session
    timeout (45 s by default: records lagged that long after a kill -9)."""
    # The offset store follows consumption; the commit below happens after the writes returned.
    extra: dict[str, object] = {
        "enable.auto.offset.store": True,
        # Tells a releaser that this version's dispatcher stores retries with index entries.
        "client.id": writer_client_id("record-writer"),
    }
    if member is not None:
        extra |= {"group.instance.id": member, "session.timeout.ms": WRITER_SESSION_TIMEOUT_MS}
    consumer = Consumer(consumer_config(kafka, f"{kafka.topic_prefix}record-writer", **extra))
    consumer.subscribe([results_topic])
    committed_at = time.monotonic()
    try:
        while not stop.is_set() and not should_stop():
            try:
                _write_batch(consumer, writer, codecs, written)
                if time.monotonic() - committed_at >= IDLE_COMMIT_S:
                    # The stored offsets also move past transaction markers, which carry no
                    # result: committed, they let the dispatcher see that every result is
                    # written (records_progress.py) while no new result comes.
                    committed_at = time.monotonic()
                    with contextlib.suppress(KafkaException):  # _NO_OFFSET: nothing new
                        consumer.commit(asynchronous=False)
            except Exception:
                # Nothing was committed for the failed batch: rejoin the group, which resumes
                # from the committed offsets, so the batch is consumed again.
                log.exception("record writer batch failed; resuming from the committed offsets")
                stop.wait(1.0)
                consumer.unsubscribe()
                consumer.subscribe([results_topic])
    finally:
        consumer.close()


def _write_batch(
    consumer: Consumer,
    writer: RecordWriter,
    codecs: Codecs,
    written: Written,
) -> None:
    messages = consumer.consume(num_messages=500, timeout=0.1)
    results: list[DeliveryResult] = []
    for msg in messages:
        error = msg.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("results consumer error: %s", error)
            continue
        try:
            results.append(codecs.result.decode(msg.value() or b""))
        except DecodeError:
            log.warning("undecodable result at offset %s", msg.offset())
    _with_retry(writer.write_many, lambda _: f"the records of {len(results)} results")(results)
    _with_retry(writer.count, lambda _: f"the usage counts of {len(results)} results")(results)
    counts: dict[str, int] = {}
    for result in results:
        counts[result.outcome.value] = counts.get(result.outcome.value, 0) + 1
    for outcome, n in counts.items():
        written(outcome, n)
    if results:
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            # Not fatal: the results are re-applied (idempotently) after a restart.
            log.warning("record writer commit failed: %s", exc)


def _with_retry(write: Callable[[T], None], what: Callable[[T], str]) -> Callable[[T], None]:
    """Retried until it succeeds: the offsets after it are committed only then."""

    def apply(item: T) -> None:
        while True:
            try:
                write(item)
                return
            except Exception:
                log.exception("writing %s failed; retrying", what(item))
                threading.Event().wait(0.5)

    return apply


# -- runners ---------------------------------------------------------------------------------


class ThreadRecordWriter:
    """In this process, on the given stores (integration tests; a single-process setup)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        results_topic: str,
        writer: RecordWriter,
        codecs: Codecs,
        written: Written,
    ) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=consume_results,
            args=(kafka, results_topic, writer, codecs),
            kwargs={"written": written, "stop": self._stop},
            name="record-writer",
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)


class ProcessRecordWriter:
    """A supervised child process with its own Cassandra session (`scheduler-dispatcher`)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        cassandra: CassandraSettings,
        results_topic: str,
        written: Written,
        *,
        member: str,
        restarted: Callable[[], None] = lambda: None,
        log_level: str = "INFO",
    ) -> None:
        """`member`: the static group membership id, one per dispatcher instance."""
        self._args = (kafka, cassandra, results_topic, member, log_level)
        self._written = written
        self._restarted = restarted
        self._context = multiprocessing.get_context("spawn")  # never fork a threaded process
        self._stopping = threading.Event()
        self._child: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._supervisor = threading.Thread(
            target=self._supervise, name="record-writer-supervisor", daemon=True
        )

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    def start(self) -> None:
        self._spawn()
        self._supervisor.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping.set()
        if self._supervisor.is_alive():
            self._supervisor.join(timeout_s)

    def _spawn(self) -> None:
        parent_conn, child_conn = self._context.Pipe(duplex=False)
        child = self._context.Process(
            target=_child_main,
            args=(*self._args, child_conn, os.getpid()),
            name="record-writer",
            daemon=False,  # it owns a Kafka consumer: stopped gracefully, not killed
        )
        child.start()
        child_conn.close()  # the child's end, held by the child only (EOF when it exits)
        self._child, self._conn = child, parent_conn
        log.info("record writer started as process %s", child.pid)

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            self._drain(0.5)
            child = self._child
            if child is not None and not child.is_alive() and not self._stopping.is_set():
                log.error(
                    "record writer process %s exited with %s; restarting it in %.0f s",
                    child.pid,
                    child.exitcode,
                    RESTART_PAUSE_S,
                )
                self._restarted()
                if self._stopping.wait(RESTART_PAUSE_S):
                    break
                try:
                    self._spawn()
                except Exception:  # e.g. out of processes: try again after the pause
                    log.exception("starting the record writer process failed")
        self._shut_down_child()

    def _drain(self, wait_s: float) -> None:
        """Counts reported by the child since the last call (waits up to `wait_s` for one)."""
        conn = self._conn
        if conn is None:
            self._stopping.wait(wait_s)
            return
        try:
            while conn.poll(wait_s):
                outcome, n = conn.recv()
                self._written(outcome, n)
                wait_s = 0
        except (EOFError, OSError):
            self._conn = None  # the child exited; the supervisor notices and restarts it

    def _shut_down_child(self) -> None:
        child = self._child
        if child is None or child.pid is None:
            return
        if child.is_alive():
            os.kill(child.pid, signal.SIGTERM)
            child.join(10)
            if child.is_alive():
                log.error("record writer process %s did not stop; killing it", child.pid)
                child.kill()
                child.join(5)
        self._drain(0)
        log.info("record writer process %s stopped (exit code %s)", child.pid, child.exitcode)


def _child_main(
    kafka: KafkaSettings,
    cassandra: CassandraSettings,
    results_topic: str,
    member: str,
    log_level: str,
    conn: Connection,
    parent_pid: int,
) -> None:
    # Imported here: the spawned interpreter needs them, the parent's import graph does not.
    from scheduler.store.cassandra import connect
    from scheduler.store.cassandra_messages import CassandraMessageStore
    from scheduler.store.usage import CassandraUsageStore

    configure_logging("dispatcher-record-writer", log_level)
    # Records follow deliveries asynchronously: on a shared host, the dispatcher's timing
    # comes first (a hotspot of 100,000 was ~1 s later at the same priority).
    os.nice(WRITER_NICENESS)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    cluster, session = connect(cassandra, cassandra.keyspace)
    try:
        writer = RecordWriter(CassandraMessageStore(session), CassandraUsageStore(session))
        consume_results(
            kafka,
            results_topic,
            writer,
            Codecs.build(kafka),
            written=_reporter(conn),
            stop=stop,
            # Orphaned (the dispatcher was killed): stop rather than outlive it.
            should_stop=lambda: os.getppid() != parent_pid,
            member=member,
        )
    finally:
        cluster.shutdown()
        conn.close()


def _reporter(conn: Connection) -> Written:
    def report(outcome: str, n: int) -> None:
        with contextlib.suppress(OSError):  # the parent is gone: should_stop ends the loop
            conn.send((outcome, n))

    return report
