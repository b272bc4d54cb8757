"""The dispatcher's transactional sink (decision 6).

Everything one settled attempt leaves behind (destination record of a KAFKA app, delivery
result, retry, dead letter) and the offsets of the settled ring records are produced in one
Kafka transaction, committed on a short interval. A crash therefore either keeps all of an
attempt's effects or none of them, and a KAFKA destination record is never duplicated.

The producer is only touched by one worker thread, one transaction at a time; `emit` merely
queues (it runs on the event loop).

A stuck transaction is recovered in process. After a broker restart, librdkafka can block in
`send_offsets_to_transaction` forever, ignoring its timeout (confluentinc/librdkafka#5456,
#5511: a stale cached group coordinator). When a transaction has not reached its commit after
`recover_after_ms`, the sink abandons it: a new producer with the same transactional.id runs
`init_transactions`, which fences the stuck one and aborts its open transaction, and the same
records and offsets are committed through the new producer. The stuck thread is told it was
abandoned, so even if it wakes up it never commits. A transaction stuck inside its commit is
not abandoned (whether it committed cannot be known from here): the liveness watch of the
runtime restarts the process instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from scheduler.clock import Clock
from scheduler_releaser.metrics import DispatchMetrics

from .offsets import OffsetTracker
from .ports import OnCommitted, OutRecord
from .timers import Position

log = logging.getLogger(__name__)
WATCH_S = 0.1  # how often a transaction in flight is checked for being stuck
REPLACE_RETRY_S = 1.0  # between attempts to start a replacement producer (Kafka still down)
WAIT_STEP_MS = 1  # re-read the clock this often while a commit waits for its due instant


@dataclass
class _Emitted:
    records: list[OutRecord]
    settled: Position | None
    on_committed: OnCommitted | None
    not_before_ms: int | None


class FatalSinkError(RuntimeError):
    """The producer was fenced or failed fatally: the process must stop (and restart)."""


class FencedError(FatalSinkError):
    """Another producer took this transactional id: a newer incarnation of this instance, or
    an instance of a new instance count that owns some of these partitions (ownership.py)."""


FENCED = frozenset(
    {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
)


def fatal(error: KafkaError) -> FatalSinkError:
    if error.code() in FENCED:
        return FencedError(str(error))
    return FatalSinkError(str(error))


class _Abandoned(Exception):
    """Raised in a stuck worker thread that woke up after its transaction was abandoned."""


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

    def abandon(self) -> bool:
        with self.lock:
            if not self.committing:
                self.abandoned = True
            return self.abandoned


class _Worker:
    """A daemon thread running one job at a time. Daemon: a thread stuck in librdkafka must not
    keep the process from exiting."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._jobs: queue.SimpleQueue[tuple[Callable[[], None], asyncio.Future[None]] | None] = (
            queue.SimpleQueue()
        )
        threading.Thread(target=self._run, name="transactions", daemon=True).start()

    def submit(self, job: Callable[[], None]) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self._loop.create_future()
        self._jobs.put((job, future))
        return future

    def retire(self) -> None:
        self._jobs.put(None)

    def _run(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, future = item
            try:
                job()
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                self._settle(future, exc)
            else:
                self._settle(future, None)

    def _settle(self, future: asyncio.Future[None], exc: BaseException | None) -> None:
        def settle() -> None:
            if future.done():  # cancelled: an abandoned attempt
                return
            if exc is None:
                future.set_result(None)
            else:
                future.set_exception(exc)

        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(settle)


class TransactionalSink:
    def __init__(
        self,
        new_producer: Callable[[], Producer],
        group_metadata: Callable[[], object],
        tracker: OffsetTracker,
        clock: Clock,
        metrics: DispatchMetrics,
        max_batch: int = 2_000,
        recover_after_ms: int = 10_000,
        offsets_interval_ms: int = 0,
        offsets_refresh_ms: int = 60_000,
    ) -> None:
        """`new_producer` returns a transactional producer after `init_transactions` (blocking;
        raises KafkaException when Kafka cannot be reached). `group_metadata` is the ring
        consumer's current group metadata (its generation changes when the group rebalances)."""
        self._new_producer = new_producer
        self._group_metadata = group_metadata
        self._max_batch = max_batch
        self._recover_after_ms = recover_after_ms
        self._offsets_interval_ms = offsets_interval_ms
        self._offsets_sent_ms = float("-inf")
        self._offsets_refresh_ms = offsets_refresh_ms
        self._refreshed_ms = float("-inf")
        self._tracker = tracker
        self._clock = clock
        self._metrics = metrics
        self._pending: list[_Emitted] = []
        self._emitted = asyncio.Event()  # set by emit(): wakes an idle committer
        self._producer: Producer | None = None
        self._worker: _Worker | None = None

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
    ) -> None:
        self._pending.append(_Emitted(records, settled, on_committed, not_before_ms))
        self._emitted.set()

    async def wait_for_emits(self, timeout_s: float) -> None:
        """Return once something is pending (at once if it is), or after `timeout_s`."""
        if self._pending:
            return
        self._emitted.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._emitted.wait(), timeout_s)

    def wake(self) -> None:
        """End a `wait_for_emits` now (shutdown)."""
        self._emitted.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> int:
        """Commit what was emitted so far in one transaction (none when there is neither a
        record nor an offset to commit). Returns the number of emits."""
        # Bounded transactions: under a hotspot, deliveries become visible batch after batch
        # instead of all at once at the end of one huge transaction.
        batch = self._pending[: self._max_batch]
        del self._pending[: self._max_batch]
        for item in batch:
            if item.settled is not None:
                p = item.settled
                self._tracker.settled(p.topic, p.partition, p.offset)
        records = [r for item in batch for r in item.records]
        # Offsets ride along only every `offsets_interval_ms`: they double a transaction's
        # round trips (AddOffsetsToTxn, TxnOffsetCommit). Committing them later is safe: the
        # records re-read after a crash are the ones settled since, whose results the restart
        # reloads (the commit metadata below), so none is fired twice.
        mono = self._clock.monotonic_ms()
        due = not records or mono - self._offsets_sent_ms >= self._offsets_interval_ms
        # Every partition's offset, idle ones too, is committed again now and then: the offsets
        # never expire (a group that only assigns keeps them `offsets.retention.minutes` after
        # their last commit) and their metadata stays recent, which bounds a restart's reload.
        every = due and mono - self._refreshed_ms >= self._offsets_refresh_ms
        commits = self._tracker.take_commits(self._clock.now_ms(), every) if due else {}
        if records or commits:
            # Commit metadata: after a restart, the results written since then are the ones
            # that can concern the records it reads again (offsets.py, take_commits).
            offsets = [
                TopicPartition(t, p, o, metadata=str(since))
                for (t, p), (o, since) in commits.items()
            ]
            not_before = max((i.not_before_ms or 0 for i in batch), default=0)
            metadata = self._group_metadata() if offsets else None
            await self._commit(records, offsets, metadata, not_before)
            self._metrics.transaction_seconds.observe((self._clock.monotonic_ms() - mono) / 1000)
            self._tracker.confirm(commits)
            if commits:
                self._offsets_sent_ms = mono
            if every:
                self._refreshed_ms = mono
        now = self._clock.now_ms()
        for item in batch:
            if item.on_committed is not None:
                item.on_committed(now)
        return len(batch)

    async def _commit(
        self,
        records: list[OutRecord],
        offsets: list[TopicPartition],
        metadata: object,
        not_before_ms: int,
    ) -> None:
        assert self._producer is not None and self._worker is not None, "start() first"
        while True:
            attempt = _Attempt()
            producer = self._producer

            def job(producer: Producer = producer, attempt: _Attempt = attempt) -> None:
                self._transact(producer, records, offsets, metadata, not_before_ms, attempt)

            future = self._worker.submit(job)
            started = self._clock.monotonic_ms()
            while True:
                await asyncio.wait({future}, timeout=WATCH_S)
                if future.done():
                    future.result()  # FatalSinkError propagates
                    return
                if self._clock.monotonic_ms() - started < self._recover_after_ms:
                    continue
                if attempt.abandon():
                    break
                # Inside its commit: keep waiting (the runtime's liveness watch is the bound).
            future.cancel()
            await self._replace_stuck_producer()

    async def _replace_stuck_producer(self) -> None:
        log.error(
            "a Kafka transaction did not reach its commit in %.0f s: abandoning it; a new "
            "producer fences the stuck one and the same transaction is redone",
            self._recover_after_ms / 1000,
        )
        self._metrics.transactions.labels("abandoned").inc()
        assert self._worker is not None
        self._worker.retire()
        while True:
            try:
                self._producer = await asyncio.to_thread(self._new_producer)
                break
            except KafkaException as exc:
                log.warning("replacement producer not ready yet (%s); retrying", exc)
                await asyncio.sleep(REPLACE_RETRY_S)
        self._worker = _Worker(asyncio.get_running_loop())
        log.info("replacement transactional producer ready")

    def _transact(
        self,
        producer: Producer,
        records: list[OutRecord],
        offsets: list[TopicPartition],
        metadata: object,
        not_before_ms: int,
        attempt: _Attempt,
    ) -> None:
        """Runs in the worker thread. Retries the whole transaction on abortable errors.

        The commit waits for `not_before_ms`: records produced ahead of their due instant stay
        invisible to read_committed consumers until then (librdkafka sends them meanwhile)."""
        while True:
            try:
                producer.begin_transaction()
                for r in records:
                    self._produce(producer, r)
                if offsets:
                    producer.send_offsets_to_transaction(offsets, metadata)
                self._wait_until(not_before_ms)
                attempt.enter_commit()
                producer.commit_transaction()
                self._metrics.transactions.labels("committed").inc()
                return
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.fatal() or error.code() in FENCED:
                    raise fatal(error) from exc
                if attempt.committing and error.retriable() and not error.txn_requires_abort():
                    log.warning("transaction commit failed, retrying the commit: %s", error)
                    self._retry_commit(producer)
                    return
                if attempt.abandoned:
                    raise _Abandoned from exc
                log.warning("transaction aborted, retrying it whole: %s", error)
                self._metrics.transactions.labels("aborted").inc()
                try:
                    producer.abort_transaction()
                except KafkaException as abort_exc:
                    # A fence that lands mid-commit can surface only here (the commit failed
                    # with UNKNOWN, the abort then with _FENCED): the caller must stand down.
                    abort_error: KafkaError = abort_exc.args[0]
                    if abort_error.fatal() or abort_error.code() in FENCED:
                        raise fatal(abort_error) from abort_exc
                    raise
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

    @staticmethod
    def _produce(producer: Producer, r: OutRecord) -> None:
        while True:
            try:
                producer.produce(r.topic, value=r.value, key=r.key, headers=list(r.headers))
                return
            except BufferError:
                producer.poll(0.01)  # queue full: let deliveries drain


def transactional_producer(config: dict[str, Any], init_timeout_s: float) -> Callable[[], Producer]:
    """A factory of ready transactional producers (`init_transactions` done) for the sink."""

    def new() -> Producer:
        producer = Producer(config)
        producer.init_transactions(init_timeout_s)
        return producer

    return new
