"""The dispatcher's transactional sink (decision 6).

Everything one settled attempt leaves behind (destination record of a KAFKA app, delivery
result, retry, dead letter) and the offsets of the settled ring records are produced in one
Kafka transaction, committed on a short interval. A crash therefore either keeps all of an
attempt's effects or none of them, and a KAFKA destination record is never duplicated.

The producer is only touched by the commit worker thread, one transaction at a time; `emit`
merely queues (it runs on the event loop).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from scheduler.clock import Clock

from .metrics import DispatchMetrics
from .offsets import OffsetTracker
from .ports import OnCommitted, OutRecord
from .timers import Position

log = logging.getLogger(__name__)


@dataclass
class _Emitted:
    records: list[OutRecord]
    settled: Position | None
    on_committed: OnCommitted | None


class FatalSinkError(RuntimeError):
    """The producer was fenced or failed fatally: the process must stop (and restart)."""


class TransactionalSink:
    def __init__(
        self,
        producer: Producer,
        group_metadata: object,
        tracker: OffsetTracker,
        clock: Clock,
        metrics: DispatchMetrics,
        max_batch: int = 2_000,
    ) -> None:
        self._producer = producer
        self._max_batch = max_batch
        self._group_metadata = group_metadata
        self._tracker = tracker
        self._clock = clock
        self._metrics = metrics
        self._pending: list[_Emitted] = []
        # One dedicated thread owns the producer's transactions (never queued behind reads).
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="transactions")

    def emit(
        self,
        records: list[OutRecord],
        settled: Position | None,
        on_committed: OnCommitted | None = None,
    ) -> None:
        self._pending.append(_Emitted(records, settled, on_committed))

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> int:
        """Commit what was emitted so far in one transaction. Returns the number of emits."""
        # Bounded transactions: under a hotspot, deliveries become visible batch after batch
        # instead of all at once at the end of one huge transaction.
        batch = self._pending[: self._max_batch]
        del self._pending[: self._max_batch]
        for item in batch:
            if item.settled is not None:
                p = item.settled
                self._tracker.settled(p.topic, p.partition, p.offset)
        commits = self._tracker.take_commits()
        if not batch and not commits:
            return 0
        # Commit metadata: receipt time of the oldest unsettled record. After a restart the
        # results written since then are the ones that can concern re-read records.
        oldest = str(self._tracker.oldest_unsettled_received_ms(self._clock.now_ms()))
        offsets = [TopicPartition(t, p, o, metadata=oldest) for (t, p), o in commits.items()]
        records = [r for item in batch for r in item.records]
        started = self._clock.monotonic_ms()
        await asyncio.get_running_loop().run_in_executor(
            self._worker, self._transact, records, offsets
        )
        self._metrics.transaction_seconds.observe((self._clock.monotonic_ms() - started) / 1000)
        self._tracker.confirm(commits)
        now = self._clock.now_ms()
        for item in batch:
            if item.on_committed is not None:
                item.on_committed(now)
        return len(batch)

    def _transact(self, records: list[OutRecord], offsets: list[TopicPartition]) -> None:
        """Runs in the worker thread. Retries the whole transaction on abortable errors."""
        while True:
            committing = False
            try:
                self._producer.begin_transaction()
                for r in records:
                    self._produce(r)
                if offsets:
                    self._producer.send_offsets_to_transaction(offsets, self._group_metadata)
                committing = True
                self._producer.commit_transaction()
                self._metrics.transactions.labels("committed").inc()
                return
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.fatal():
                    raise FatalSinkError(str(error)) from exc
                if committing and error.retriable() and not error.txn_requires_abort():
                    log.warning("transaction commit failed, retrying the commit: %s", error)
                    self._retry_commit()
                    return
                log.warning("transaction aborted, retrying it whole: %s", error)
                self._metrics.transactions.labels("aborted").inc()
                self._producer.abort_transaction()

    def _retry_commit(self) -> None:
        while True:
            try:
                self._producer.commit_transaction()
                self._metrics.transactions.labels("committed").inc()
                return
            except KafkaException as exc:
                if not exc.args[0].retriable():
                    raise FatalSinkError(str(exc.args[0])) from exc

    def _produce(self, r: OutRecord) -> None:
        while True:
            try:
                self._producer.produce(r.topic, value=r.value, key=r.key, headers=list(r.headers))
                return
            except BufferError:
                self._producer.poll(0.01)  # queue full: let deliveries drain
