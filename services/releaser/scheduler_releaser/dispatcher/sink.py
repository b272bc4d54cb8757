"""The dispatcher's transactional sink (decision 6).

Everything one settled attempt leaves behind (destination record of a KAFKA app, delivery
result, retry, dead letter) and the offsets of the settled ring records are produced in one
Kafka transaction, committed on a short interval. A crash therefore either keeps all of an
attempt's effects or none of them, and a KAFKA destination record is never duplicated.

The producer is only touched by one worker thread, one transaction at a time; `emit` merely
queues (it runs on the event loop).

One tenant's destination cannot hold a transaction hostage (refusals.py): every record's
delivery report is read before the commit; a destination record refused on its own is taken
out, its attempt is handed back to the core through `on_refused` (which settles it as failed or
retried, with the same ring offset), and the rest is produced again and committed. A refused
attempt's ring offset is only committed with its own settlement: offsets are computed for the
transaction that commits, never before.

A transaction that failed because a topic is gone, or stalled with nothing acknowledged, also
costs its producer: after such a failure librdkafka was seen to leave the producer unable to
send, even when its abort succeeded. The replacement (same transactional.id) names a deleted
topic's record.

Other abortable errors (the scheduler's own topics failing) retry the whole transaction with a
backoff. Once `close()` was called (SIGTERM), a failed transaction is not retried: `flush`
raises `SinkStopped` and the attempts stay unsettled (read again after the restart).

The records of a *gathered* topic (the results) all go to one partition per transaction, a
different one each time, not to the partition of their key: every partition a transaction
writes costs the brokers a commit marker, and a transaction of a few results keyed by message
id touched several. Their readers do not need one message's results in one partition (they
write by precedence, collect attempt keys, or read every partition).

A stuck transaction is recovered in process. After a broker restart, librdkafka can block in
`send_offsets_to_transaction` forever, ignoring its timeout (confluentinc/librdkafka#5456,
#5511: a stale cached group coordinator). When a transaction has not reached its commit after
`recover_after_ms`, the sink abandons it: a new producer with the same transactional.id runs
`init_transactions`, which fences the stuck one and aborts its open transaction, and the same
records and offsets are committed through the new producer. The stuck thread is told it was
abandoned, so even if it wakes up it never commits. A transaction stuck inside its commit is
not abandoned (whether it committed cannot be known from here): the liveness watch of the
runtime restarts the process instead, and a closing sink gives up on it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from scheduler.clock import Clock
from scheduler.kafka.transactions import init_transactions
from scheduler_releaser.metrics import DispatchMetrics

from .offsets import OffsetTracker
from .ports import OnCommitted, OnRefused, OutRecord
from .refusals import (
    TOPIC_GONE,
    Refusal,
    names_a_topic,
    refusal_of,
    timed_out,
    unexplained,
)
from .timers import Position

log = logging.getLogger(__name__)
WATCH_S = 0.1  # how often a transaction in flight is checked for being stuck
REPLACE_RETRY_S = 1.0  # between attempts to start a replacement producer (Kafka still down)
WAIT_STEP_MS = 1  # re-read the clock this often while a commit waits for its due instant
REPORTS_STEP_S = 0.05  # delivery reports are awaited in steps of this
RETRY_MIN_S, RETRY_MAX_S = 0.01, 1.0  # backoff between whole-transaction retries
ABORT_TIMEOUT_S = 5.0  # an abort not done by then: the producer is replaced
UNASSIGNED = -1  # librdkafka's RD_KAFKA_PARTITION_UA: the partitioner picks (by key)


@dataclass
class _Emitted:
    records: list[OutRecord]
    settled: Position | None
    on_committed: OnCommitted | None
    not_before_ms: int | None
    on_refused: OnRefused | None


class FatalSinkError(RuntimeError):
    """The producer was fenced or failed fatally: the process must stop (and restart)."""


class FencedError(FatalSinkError):
    """Another producer took this transactional id: a newer incarnation of this instance, or
    an instance of a new instance count that owns some of these partitions (ownership.py)."""


class SinkStopped(RuntimeError):
    """A transaction failed after `close()`: what it held is left unsettled."""


FENCED = frozenset(
    {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
)


def fatal(error: KafkaError) -> FatalSinkError:
    if error.code() in FENCED:
        return FencedError(str(error))
    return FatalSinkError(str(error))


class _Abandoned(Exception):
    """Raised in a stuck worker thread that woke up after its transaction was abandoned."""


class _RetryWhole(Exception):
    """The transaction was aborted for a reason no single destination record explains."""

    def __init__(self, message: str, error: KafkaError | None = None) -> None:
        super().__init__(message)
        self.error = error


@dataclass
class _Attempt:
    """One run of a transaction on one producer; decides, under a lock, commit vs abandon."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    committing: bool = False
    abandoned: bool = False

    def enter_commit(self) -> None:
        with self.lock:
            if self.abandoned:
                raise _Abandoned
            self.committing = True

    def leave_commit(self) -> None:
        with self.lock:
            self.committing = False

    def abandon(self, force: bool = False) -> bool:
        with self.lock:
            if force or not self.committing:
                self.abandoned = True
            return self.abandoned


class _Reports:
    """Delivery reports of one transaction's records (filled by librdkafka callbacks, which run
    in the worker thread inside flush/poll)."""

    def __init__(self) -> None:
        self.outstanding: dict[int, int] = {}  # emit index -> destination records unreported
        self.refused: dict[int, Refusal] = {}  # emit index -> its destination's refusal
        self.internal_outstanding = 0
        self.internal_error: KafkaError | None = None
        self.fatal_error: KafkaError | None = None

    def expect(self, index: int | None) -> Callable[[KafkaError | None, Any], None]:
        if index is None:
            self.internal_outstanding += 1
            return self._internal
        self.outstanding[index] = self.outstanding.get(index, 0) + 1

        def report(error: KafkaError | None, _message: Any) -> None:
            # A callback must never raise: librdkafka would hand the pending exception to an
            # unrelated later call (seen as a SystemError in the producer's flush at exit).
            try:
                left = self.outstanding.get(index, 0) - 1
                if left > 0:
                    self.outstanding[index] = left
                else:
                    self.outstanding.pop(index, None)
                if error is not None:
                    self._failed(index, error)
            except Exception:
                log.exception("delivery report of a destination record not handled")

        return report

    def _internal(self, error: KafkaError | None, _message: Any) -> None:
        try:
            self.internal_outstanding -= 1
            if error is not None and refusal_of(error) is not None:
                self._check_fatal(error)
                self.internal_error = self.internal_error or error
        except Exception:
            log.exception("delivery report of a scheduler record not handled")

    def _failed(self, index: int, error: KafkaError) -> None:
        self._check_fatal(error)
        refusal = refusal_of(error)
        if refusal is not None:
            self.refused.setdefault(index, refusal)

    def _check_fatal(self, error: KafkaError) -> None:
        if error.fatal() or error.code() in FENCED:
            self.fatal_error = self.fatal_error or error

    @property
    def pending(self) -> bool:
        return bool(self.outstanding) or self.internal_outstanding > 0


class _Worker:
    """A daemon thread running one job at a time. Daemon: a thread stuck in librdkafka must not
    keep the process from exiting."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        threading.Thread(target=self._run, name="transactions", daemon=True).start()

    def submit(self, job: Callable[[], Any]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self._loop.create_future()
        self._jobs.put((job, future))
        return future

    def retire(self) -> None:
        self._jobs.put(None)

    def _run(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, future = item
            try:
                result = job()
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                self._settle(future, None, exc)
            else:
                self._settle(future, result, None)

    def _settle(self, future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
        def settle() -> None:
            if future.done():  # cancelled: an abandoned attempt
                return
            if exc is None:
                future.set_result(result)
            else:
                future.set_exception(exc)

        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(settle)


def _in_daemon_thread(fn: Callable[[], Producer]) -> concurrent.futures.Future[Producer]:
    """Not the loop's default executor: its threads are joined at exit, a daemon one is not."""
    future: concurrent.futures.Future[Producer] = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting coroutine
            future.set_exception(exc)

    threading.Thread(target=run, name="producer-init", daemon=True).start()
    return future


class TransactionalSink:
    def __init__(
        self,
        new_producer: Callable[[], Producer],
        group_metadata: object,
        tracker: OffsetTracker,
        clock: Clock,
        metrics: DispatchMetrics,
        max_batch: int = 2_000,
        recover_after_ms: int = 10_000,
        offsets_interval_ms: int = 0,
        offsets_refresh_ms: int = 60_000,
        destination_timeout_ms: int = 5_000,
        gathered: Mapping[str, int] | None = None,
    ) -> None:
        """`new_producer` returns a transactional producer after `init_transactions` (blocking;
        raises KafkaException when Kafka cannot be reached). `group_metadata`: the ring
        consumer's group metadata, taken once: the consumer is assigned by hand (ownership.py),
        never subscribed, so it has no generation or member id that a rebalance could change.
        `destination_timeout_ms`: a destination record unacknowledged this long is refused
        (transient), so a slow tenant topic delays the others' commits by at most that.
        `gathered`: topic -> its partition count, for the topics whose records of one
        transaction go to one partition, taking turns (see the module's docstring)."""
        self._new_producer = new_producer
        self._group_metadata = group_metadata
        self._max_batch = max_batch
        self._recover_after_ms = recover_after_ms
        self._offsets_interval_ms = offsets_interval_ms
        self._offsets_sent_ms = float("-inf")
        self._offsets_refresh_ms = offsets_refresh_ms
        self._refreshed_ms = float("-inf")
        self._destination_timeout_ms = destination_timeout_ms
        self._gathered = dict(gathered or {})
        self._turn = 0  # counts transaction runs: the gathered topics' partition
        self._tracker = tracker
        self._clock = clock
        self._metrics = metrics
        self._pending: list[_Emitted] = []
        # Emits of destination records taken out of a transaction that failed without naming a
        # record: each is tried alone next (refused if it fails alone).
        self._suspects: list[_Emitted] = []
        self._emitted = asyncio.Event()  # set by emit(): wakes an idle committer
        self._urgent_emitted = asyncio.Event()  # set by an emit that must not wait for company
        self._producer: Producer | None = None
        self._worker: _Worker | None = None
        self._broken = False  # an abort failed: replace the producer
        self._closing = threading.Event()

    async def start(self) -> None:
        self._producer = await asyncio.to_thread(self._new_producer)
        self._worker = _Worker(asyncio.get_running_loop())

    @property
    def producer(self) -> Producer:
        assert self._producer is not None, "start() first"
        return self._producer

    def emit(
        self,
        records: list[OutRecord],
        settled: Position | None,
        on_committed: OnCommitted | None = None,
        not_before_ms: int | None = None,
        on_refused: OnRefused | None = None,
    ) -> None:
        self._pending.append(_Emitted(records, settled, on_committed, not_before_ms, on_refused))
        self._emitted.set()
        if not_before_ms is not None or len(self._pending) >= self._max_batch:
            self._urgent_emitted.set()

    async def wait_for_urgent(self) -> None:
        """Return once an emit is pending whose commit someone waits for: a Kafka delivery
        (it is visible only once committed), a transaction's worth of emits, or wake(). The
        results of REST deliveries, skips and retries can wait for company: their commit
        only makes them durable."""
        if self._urgent():
            return
        self._urgent_emitted.clear()
        await self._urgent_emitted.wait()

    def _urgent(self) -> bool:
        if self._suspects or len(self._pending) >= self._max_batch:
            return True
        return any(e.not_before_ms is not None for e in self._pending)

    async def wait_for_emits(self, timeout_s: float) -> None:
        """Return once something is pending (at once if it is), or after `timeout_s`."""
        if self.pending:
            return
        self._emitted.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._emitted.wait(), timeout_s)

    def wake(self) -> None:
        """End a `wait_for_emits` or `wait_for_urgent` now (shutdown)."""
        self._emitted.set()
        self._urgent_emitted.set()

    def close(self) -> None:
        """Shutdown: from now on a failed or stuck transaction is given up, not retried."""
        self._closing.set()
        self.wake()

    @property
    def pending(self) -> int:
        return len(self._pending) + len(self._suspects)

    async def flush(self) -> int:
        """Commit what was emitted so far in one transaction (none when there is neither a
        record nor an offset to commit). Returns the number of emits settled or refused."""
        # Bounded transactions: under a hotspot, deliveries become visible batch after batch
        # instead of all at once at the end of one huge transaction.
        if self._suspects:  # one per transaction, until each committed or was refused
            batch = [self._suspects.pop(0)]
        else:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
        taken = len(batch)
        mono = self._clock.monotonic_ms()
        backoff_s = RETRY_MIN_S
        while True:
            records = [(i, r) for i, item in enumerate(batch) for r in item.records]
            settling = [item.settled for item in batch if item.settled is not None]
            # Offsets ride along only every `offsets_interval_ms`: they double a transaction's
            # round trips (AddOffsetsToTxn, TxnOffsetCommit). Committing them later is safe: the
            # records re-read after a crash are the ones settled since, whose results the
            # restart reloads (the commit metadata below), so none is fired twice.
            due = not records or mono - self._offsets_sent_ms >= self._offsets_interval_ms
            # Every partition's offset, idle ones too, is committed again now and then: the
            # offsets never expire (a group that only assigns keeps them
            # `offsets.retention.minutes` after their last commit) and their metadata stays
            # recent, which bounds a restart's reload.
            every = due and mono - self._refreshed_ms >= self._offsets_refresh_ms
            commits = (
                self._tracker.take_commits(self._clock.now_ms(), every, settling) if due else {}
            )
            if not records and not commits:
                break
            # Commit metadata: after a restart, the results written since then are the ones
            # that can concern the records it reads again (offsets.py, take_commits).
            offsets = [
                TopicPartition(t, p, o, metadata=str(since))
                for (t, p), (o, since) in commits.items()
            ]
            not_before = max((i.not_before_ms or 0 for i in batch), default=0)
            metadata = self._group_metadata if offsets else None
            try:
                try:
                    refused = await self._commit(records, offsets, metadata, not_before)
                finally:
                    if self._broken:
                        await self._replace_producer()
            except _RetryWhole as exc:
                if self._closing.is_set():
                    self._pending[:0] = batch
                    raise SinkStopped(f"transaction failed while stopping: {exc}") from exc
                destinations = [item for item in batch if item.on_refused is not None]
                if not names_a_topic(exc.error):
                    # The scheduler's own trouble, or nothing acknowledged at all (a broker
                    # restarting looks the same as a stalled transaction): retried whole, below.
                    destinations = []
                if len(batch) == 1 and destinations:
                    # Alone in its transaction (after its batch failed without it), or alone
                    # from the start: its destination is the likeliest cause.
                    refusal = refusal_of(exc.error) if exc.error is not None else None
                    batch = self._hand_back_refused(batch, {0: refusal or unexplained(exc)})
                    continue
                if destinations:
                    # Some failures name no record (a topic deleted since it was produced to
                    # fails the transaction's AddPartitionsToTxn, and its record is purged):
                    # the destination records are tried alone, the rest goes on without them.
                    self._suspects.extend(destinations)
                    batch = [item for item in batch if item.on_refused is None]
                    taken -= len(destinations)
                    continue
                await asyncio.sleep(backoff_s)
                backoff_s = min(RETRY_MAX_S, backoff_s * 2)
                continue
            if refused:
                batch = self._hand_back_refused(batch, refused)
                continue
            self._metrics.transaction_seconds.observe((self._clock.monotonic_ms() - mono) / 1000)
            for p in settling:
                self._tracker.settled(p.topic, p.partition, p.offset)
            self._metrics.settled.inc(len(settling))
            self._tracker.confirm(commits)
            if commits:
                self._offsets_sent_ms = mono
            if every:
                self._refreshed_ms = mono
            break
        now = self._clock.now_ms()
        for item in batch:
            if item.on_committed is not None:
                item.on_committed(now)
        return taken

    def _hand_back_refused(
        self, batch: list[_Emitted], refused: dict[int, Refusal]
    ) -> list[_Emitted]:
        """Take the refused emits out; their owners settle them anew (same ring offsets)."""
        kept = []
        for i, item in enumerate(batch):
            refusal = refused.get(i)
            if refusal is None:
                kept.append(item)
                continue
            kind = "permanent" if refusal.permanent else "transient"
            self._metrics.refusals.labels(refusal.code, kind).inc()
            topics = sorted({r.topic for r in item.records if r.destination})
            log.warning(
                "destination %s refused a record (%s, %s: %s); the attempt settles without it",
                ", ".join(topics),
                refusal.code,
                kind,
                refusal.detail,
            )
            assert item.on_refused is not None, "only destination records can be refused"
            item.on_refused(refusal)
        return kept

    async def _commit(
        self,
        records: list[tuple[int, OutRecord]],
        offsets: list[TopicPartition],
        metadata: object,
        not_before_ms: int,
    ) -> dict[int, Refusal]:
        assert self._producer is not None and self._worker is not None, "start() first"
        while True:
            attempt = _Attempt()
            producer = self._producer

            def job(producer: Producer = producer, attempt: _Attempt = attempt) -> Any:
                return self._transact(producer, records, offsets, metadata, not_before_ms, attempt)

            future = self._worker.submit(job)
            started = self._clock.monotonic_ms()
            while True:
                await asyncio.wait({future}, timeout=WATCH_S)
                if future.done():
                    result: dict[int, Refusal] = future.result()  # errors propagate
                    return result
                if self._clock.monotonic_ms() - started < self._recover_after_ms:
                    continue
                closing = self._closing.is_set()
                if attempt.abandon(force=closing):
                    break
                # Inside its commit: keep waiting (the runtime's liveness watch is the bound).
            future.cancel()
            if closing:
                raise _RetryWhole("a transaction stuck while stopping was given up")
            await self._replace_stuck_producer()

    async def _replace_stuck_producer(self) -> None:
        log.error(
            "a Kafka transaction did not reach its commit in %.0f s: abandoning it; a new "
            "producer fences the stuck one and the same transaction is redone",
            self._recover_after_ms / 1000,
        )
        self._metrics.transactions.labels("abandoned").inc()
        await self._replace_producer()

    async def _replace_producer(self) -> None:
        """A new producer under the same transactional id: it fences the old one."""
        assert self._worker is not None
        self._worker.retire()
        while True:
            # init_transactions can wait for the old producer's transaction for as long as
            # its timeout: in a daemon thread, given up when stopping (SIGTERM stays bounded).
            started = _in_daemon_thread(self._new_producer)
            while not started.done():
                if self._closing.is_set():
                    raise SinkStopped("stopping while a replacement producer was starting")
                await asyncio.sleep(WATCH_S)
            try:
                self._producer = started.result()
                break
            except KafkaException as exc:
                log.warning("replacement producer not ready yet (%s); retrying", exc)
                await asyncio.sleep(REPLACE_RETRY_S)
        self._broken = False
        self._worker = _Worker(asyncio.get_running_loop())
        log.info("replacement transactional producer ready")

    def _transact(
        self,
        producer: Producer,
        records: list[tuple[int, OutRecord]],
        offsets: list[TopicPartition],
        metadata: object,
        not_before_ms: int,
        attempt: _Attempt,
    ) -> dict[int, Refusal]:
        """Runs in the worker thread: one run of the transaction. Returns the destination
        records refused (the transaction was aborted then) or {} once committed; raises
        _RetryWhole when it was aborted for another reason.

        The commit waits for `not_before_ms`: records produced ahead of their due instant stay
        invisible to read_committed consumers until then (librdkafka sends them meanwhile)."""
        reports = _Reports()
        try:
            producer.begin_transaction()
            self._turn += 1
            for index, r in records:
                partition = self._gathered_partition(r.topic)
                self._produce(producer, index if r.destination else None, r, reports, partition)
            if offsets:
                producer.send_offsets_to_transaction(offsets, metadata)
            self._await_reports(producer, reports)
            if reports.fatal_error is not None:
                raise fatal(reports.fatal_error)
            refused = self._refusals(reports)
            if refused or reports.internal_error is not None or reports.pending:
                # Stalled (nothing refused, the scheduler's own records unacknowledged): after
                # a successful abort, librdkafka was seen to stall every later transaction of
                # the same producer, so it is replaced whatever the abort's outcome.
                stalled = not refused and reports.internal_error is None
                self._abort(
                    producer,
                    attempt,
                    topic_trouble=reports.internal_error is None,
                    replace=stalled,
                )
                if refused:
                    return refused
                if reports.internal_error is not None:
                    # The scheduler's own topic failed: no destination is to blame.
                    raise _RetryWhole(f"a record of the scheduler failed: {reports.internal_error}")
                # Nothing acknowledged in time, the scheduler's records neither: a broker
                # restarting, or a transaction stalled by a topic deleted since it was produced
                # to (the replacement producer learns the topic is gone and its record is
                # refused by name). Committing could block.
                raise _RetryWhole(f"records unacknowledged after {self._destination_timeout_ms} ms")
            self._wait_until(not_before_ms)
            attempt.enter_commit()
            producer.commit_transaction()
            self._metrics.transactions.labels("committed").inc()
            return {}
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.fatal() or error.code() in FENCED:
                raise fatal(error) from exc
            if attempt.committing and error.retriable() and not error.txn_requires_abort():
                log.warning("transaction commit failed, retrying the commit: %s", error)
                self._retry_commit(producer)
                return {}
            if attempt.abandoned:
                raise _Abandoned from exc
            log.warning("transaction aborted: %s", error)
            # After AddPartitionsToTxn failed for a deleted topic, librdkafka's abort either
            # fails (INVALID_TXN_STATE, below) or succeeds and leaves a producer that never
            # sends another record (seen 1 run in 5): either way it is replaced. (Not for the
            # other topic errors: a leader move or a denied topic leaves the producer sound, and
            # replacing it holds every tenant's commits for a moment.)
            self._abort(
                producer,
                attempt,
                topic_trouble=names_a_topic(error),
                replace=error.code() in TOPIC_GONE,
            )
            raise _RetryWhole(str(error), error) from exc

    def _await_reports(self, producer: Producer, reports: _Reports) -> None:
        """Until every record has its delivery report, or the destination timeout passed, or a
        report says the producer is fenced (librdkafka may never report the other records)."""
        deadline = self._clock.monotonic_ms() + self._destination_timeout_ms
        while (
            reports.pending
            and reports.fatal_error is None
            and (remaining := deadline - self._clock.monotonic_ms()) > 0
        ):
            producer.flush(min(remaining / 1000, REPORTS_STEP_S))

    def _refusals(self, reports: _Reports) -> dict[int, Refusal]:
        """The destination records to take out. None while a record of the scheduler's own
        failed or is unanswered: then the trouble is not the destinations' (retry whole)."""
        if reports.internal_error is not None or reports.internal_outstanding > 0:
            return {}
        refused = dict(reports.refused)
        for index in reports.outstanding:
            refused.setdefault(index, timed_out(self._destination_timeout_ms))
        return refused

    def _abort(
        self, producer: Producer, attempt: _Attempt, topic_trouble: bool, replace: bool = False
    ) -> None:
        """`topic_trouble`: the transaction failed on a destination's account (a refusal, no
        acknowledgement, a topic error): only then may a fatal INVALID_TXN_STATE of the abort
        be taken for the deleted-topic case below rather than for a fence. `replace`: the
        producer is replaced even when the abort succeeds."""
        self._metrics.transactions.labels("aborted").inc()
        # Only the current attempt on the current producer may mark the sink: an abandoned
        # thread that wakes up must not make the replacement producer abort or be replaced.
        current = producer is self._producer and not attempt.abandoned
        try:
            producer.abort_transaction(ABORT_TIMEOUT_S)
            if replace and current:
                log.warning(
                    "transaction aborted after a stall or a deleted topic: the producer is replaced"
                )
                self._broken = True
        except KafkaException as abort_exc:
            # A fence that lands mid-commit can surface only here (the commit failed
            # with UNKNOWN, the abort then with _FENCED): the caller must stand down.
            abort_error: KafkaError = abort_exc.args[0]
            if abort_error.code() in FENCED:
                raise fatal(abort_error) from abort_exc
            if abort_error.fatal() and not (
                topic_trouble and abort_error.code() == KafkaError.INVALID_TXN_STATE
            ):
                raise fatal(abort_error) from abort_exc
            # The abort timed out or failed: after a record was refused, librdkafka was seen
            # to leave the next transaction's records to that partition unsent and the abort
            # hanging, and after AddPartitionsToTxn failed for a deleted topic, the abort's
            # EndTxn to fail with a fatal INVALID_TXN_STATE (never taken for a fence, which
            # shows as _FENCED above). A new producer under the same id aborts the transaction
            # for sure and starts clean.
            log.warning("abort failed (%s): the producer is replaced", abort_error)
            if current:
                self._broken = True
        finally:
            attempt.leave_commit()

    def _wait_until(self, at_ms: int) -> None:
        while (remaining_ms := at_ms - self._clock.now_ms()) > 0:
            time.sleep(min(remaining_ms, WAIT_STEP_MS) / 1000)

    def _retry_commit(self, producer: Producer) -> None:
        while True:
            try:
                producer.commit_transaction()
                self._metrics.transactions.labels("committed").inc()
                return
            except KafkaException as exc:
                if not exc.args[0].retriable():
                    raise fatal(exc.args[0]) from exc
                if self._closing.is_set():  # in doubt: the next incarnation resolves it
                    raise _RetryWhole(f"commit in doubt while stopping: {exc}") from exc

    def _gathered_partition(self, topic: str) -> int:
        """This transaction's partition for a gathered topic's records, else UNASSIGNED (the
        partition of the key). A transaction retried after a failure takes the next one."""
        count = self._gathered.get(topic)
        return UNASSIGNED if count is None else self._turn % count

    @staticmethod
    def _produce(
        producer: Producer, index: int | None, r: OutRecord, reports: _Reports, partition: int
    ) -> None:
        report = reports.expect(index)
        while True:
            try:
                producer.produce(
                    r.topic,
                    value=r.value,
                    key=r.key,
                    partition=partition,
                    headers=list(r.headers),
                    on_delivery=report,
                )
                return
            except BufferError:
                producer.poll(0.01)  # queue full: let deliveries drain
            except KafkaException as exc:
                if index is None:
                    raise
                report(exc.args[0], None)  # refused before it was queued
                return


def transactional_producer(config: dict[str, Any], init_timeout_s: float) -> Callable[[], Producer]:
    """A factory of ready transactional producers (`init_transactions` done) for the sink."""

    def new() -> Producer:
        producer = Producer(config)
        init_transactions(producer, init_timeout_s)
        return producer

    return new
