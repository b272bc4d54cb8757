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

The child process (child_process.SupervisedChild, as for the failure notifier): supervised by
a thread of the parent, restarted after a crash (with a pause), stopped on SIGTERM/SIGINT or
when the parent asks, and it exits by itself when the parent is gone (kill -9), so it never
outlives its dispatcher.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Protocol, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException

from scheduler.codec import DecodeError
from scheduler.records import DeliveryResult
from scheduler.settings import CassandraSettings, KafkaSettings
from scheduler.store.bucket_index import writer_client_id
from scheduler_releaser.child_process import SupervisedChild, child_started
from scheduler_releaser.codecs import Codecs

from .feeds import consumer_config
from .record_writer import RecordWriter

log = logging.getLogger(__name__)
IDLE_COMMIT_S = 1.0  # stored offsets are committed at least this often, results or not

T = TypeVar("T")
Written = Callable[[str, int], None]  # (outcome, count) of results applied
WRITER_NICENESS = 10
WRITER_STOP_BUDGET_S = 10.0  # after SIGTERM, before the child is killed
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
    messages = consumer.consume(num_messages=500, timeout=0.5)
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


class ProcessRecordWriter(SupervisedChild):
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
        self._written = written
        super().__init__(
            "record writer",
            "record-writer",
            _child_main,
            (kafka, cassandra, results_topic, member, log_level),
            on_event=self._apply,
            restarted=restarted,
            term_budget_s=WRITER_STOP_BUDGET_S,
            stop_timeout_s=10.0,
            retry_failed_start=False,  # start() raises
            log=log,
        )

    def _apply(self, event: tuple[str, int]) -> None:
        """Counts reported by the child (`_reporter`)."""
        outcome, n = event
        self._written(outcome, n)


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

    # Records follow deliveries asynchronously: on a shared host, the dispatcher's timing
    # comes first (a hotspot of 100,000 was ~1 s later at the same priority).
    stop = child_started("dispatcher-record-writer", log_level, WRITER_NICENESS, parent_pid)
    cluster, session = connect(cassandra, cassandra.keyspace)
    try:
        writer = RecordWriter(CassandraMessageStore(session), CassandraUsageStore(session))
        consume_results(
            kafka,
            results_topic,
            writer,
            Codecs.build(kafka),
            written=_reporter(conn),
            stop=stop.asked,
            should_stop=stop.orphaned,
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
