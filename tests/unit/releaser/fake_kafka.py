"""A deterministic in-memory stand-in for the confluent-kafka Consumer calls the dispatcher's
feeds make (list_topics, committed, offsets_for_times, assign, incremental_assign, pause,
resume, position, consume). tests/integration/releaser/test_consumer_contract.py runs the same
contract against the real broker.

Semantics kept from librdkafka: `position` is unknown (-1001) until a partition has been
fetched; `offsets_for_times` with -1 returns the end (the last stable offset: every record
here is committed); a paused partition is not fetched; with `eof`, reaching the end of a
partition yields one _PARTITION_EOF event per new end. `stalled` makes every fetch return
nothing (a leader move, a broken connection). A committed transaction ends, in each partition it
wrote, with a control record (its commit marker): it takes an offset, is never delivered, and
`position` moves past it once it is read.

`FakeTransactionalProducer` keeps the transactional id's fencing: `init_transactions` under an
id bumps its epoch and aborts the open transaction of the previous instance. That instance
learns it on its next call that reaches the broker (commit, abort, a flush with records to
send), which raises the fatal `_FENCED` error librdkafka raises, as do begin, produce, commit
and abort after it; local calls before that succeed. The fatal error is also an event that the
next flush or poll raises, once (seen on the real broker: a commit raises `_FENCED`, then one
flush does). Its records reach the log (and a read_committed consumer) only when its
transaction commits.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from confluent_kafka import OFFSET_END, KafkaError, KafkaException, TopicPartition

INVALID = -1001
TP = tuple[str, int]


@dataclass
class Record:
    value: bytes
    timestamp_ms: int
    headers: list[tuple[str, bytes]] | None = None
    control: bool = False  # a transaction marker


@dataclass
class FakeKafka:
    logs: dict[TP, list[Record]] = field(default_factory=dict)
    commits: dict[tuple[str, str, int], tuple[int, str]] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=dict)  # transactional id -> current epoch
    lock: threading.Lock = field(default_factory=threading.Lock)

    def create(self, topic: str, partitions: int) -> None:
        with self.lock:
            for p in range(partitions):
                self.logs.setdefault((topic, p), [])

    def add_partitions(self, topic: str, total: int) -> None:
        self.create(topic, total)

    def produce(
        self,
        topic: str,
        partition: int,
        value: bytes,
        timestamp_ms: int,
        headers: list[tuple[str, bytes]] | None = None,
        control: bool = False,
    ) -> int:
        with self.lock:
            log = self.logs[(topic, partition)]
            log.append(Record(value, timestamp_ms, headers or None, control))
            return len(log) - 1

    def commit(self, group: str, topic: str, partition: int, offset: int, metadata: str) -> None:
        self.commits[(group, topic, partition)] = (offset, metadata)

    def end(self, topic: str, partition: int) -> int:
        return len(self.logs[(topic, partition)])


class FakeTransactionalProducer:
    """The transactional calls of a confluent-kafka Producer (see the module docstring)."""

    def __init__(self, kafka: FakeKafka, transactional_id: str) -> None:
        self.kafka = kafka
        self.transactional_id = transactional_id
        self._epoch: int | None = None  # set by init_transactions
        self._open: list[tuple[str, int, bytes, int, list[tuple[str, bytes]]]] | None = None
        self._fenced = False
        self._fatal_event = False  # the fatal error, not yet served by a flush or poll

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> object:
        return object()  # asked only before init_transactions (scheduler.kafka.transactions)

    def init_transactions(self, timeout: float = -1) -> None:
        with self.kafka.lock:
            self._epoch = self.kafka.epochs.get(self.transactional_id, -1) + 1
            # the previous instance's open transaction is aborted: its records never commit
            self.kafka.epochs[self.transactional_id] = self._epoch

    def begin_transaction(self) -> None:
        self._check(local=True)
        if self._open is not None:
            raise KafkaException(KafkaError(KafkaError._STATE, "transaction already open"))
        self._open = []

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int = 0,
        timestamp: int = 0,
        headers: list[tuple[str, bytes]] | None = None,
        **_: Any,
    ) -> None:
        self._check(local=True)
        if self._open is None:
            raise KafkaException(KafkaError(KafkaError._STATE, "no open transaction"))
        self._open.append((topic, partition, value or b"", timestamp, headers or []))

    def flush(self, timeout: float = -1) -> int:
        if self._open and not self._fenced:
            try:
                self._check()  # records to send: this reaches the broker
            except KafkaException:
                self._fatal_event = False  # served here
                raise
        return self.poll(timeout)

    def commit_transaction(self, timeout: float = -1) -> None:
        self._check()
        if self._open is None:
            raise KafkaException(KafkaError(KafkaError._STATE, "no open transaction"))
        records, self._open = self._open, None
        written: dict[TP, int] = {}
        for topic, partition, value, timestamp, headers in records:
            self.kafka.produce(topic, partition, value, timestamp, headers)
            written[(topic, partition)] = max(timestamp, written.get((topic, partition), 0))
        for (topic, partition), timestamp in written.items():
            self.kafka.produce(topic, partition, b"", timestamp, control=True)

    def abort_transaction(self, timeout: float = -1) -> None:
        self._check()
        self._open = None

    def poll(self, timeout: float = -1) -> int:
        if self._fatal_event:
            self._fatal_event = False
            raise KafkaException(_fenced_error())
        return 0

    def _check(self, local: bool = False) -> None:
        """A call that reaches the broker finds out that a newer instance initialised the id;
        from then on every call fails, fatally. A local call fails only once that is known."""
        with self.kafka.lock:
            current = self.kafka.epochs.get(self.transactional_id)
        if self._epoch is None:
            raise KafkaException(KafkaError(KafkaError._STATE, "init_transactions not called"))
        if self._fenced:
            raise KafkaException(_fenced_error())
        if not local and current != self._epoch:
            self._fenced, self._fatal_event, self._open = True, True, None
            raise KafkaException(_fenced_error())


def _fenced_error() -> KafkaError:
    return KafkaError(
        KafkaError._FENCED, "This instance has been fenced by a newer instance", fatal=True
    )


class FakeMessage:
    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        value: bytes | None,
        eof: bool = False,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self._topic, self._partition, self._offset, self._value = topic, partition, offset, value
        self._eof, self._headers = eof, headers

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers  # None when there are none, as confluent-kafka answers

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def error(self) -> KafkaError | None:
        return KafkaError(KafkaError._PARTITION_EOF) if self._eof else None


class FakeConsumer:
    def __init__(self, kafka: FakeKafka, group: str, *, eof: bool = False) -> None:
        self.kafka = kafka
        self.group = group
        self.eof = eof
        self.stalled = False
        self.assigned: dict[TP, int] = {}  # next offset to fetch
        self.fetched: set[TP] = set()
        self.paused: set[TP] = set()
        self._eof_at: dict[TP, int] = {}
        self.calls: list[str] = []  # the blocking calls made, in order

    # -- metadata and offsets (blocking in librdkafka) -------------------------------------

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        self.calls.append("list_topics")
        with self.kafka.lock:
            names: dict[str, dict[int, object]] = {}
            for t, p in self.kafka.logs:
                if topic is None or t == topic:
                    names.setdefault(t, {})[p] = object()
        topics = {t: SimpleNamespace(partitions=ps, error=None) for t, ps in names.items()}
        return SimpleNamespace(topics=topics)

    def committed(self, tps: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]:
        self.calls.append("committed")
        out = []
        for tp in tps:
            offset, metadata = self.kafka.commits.get(
                (self.group, tp.topic, tp.partition), (INVALID, "")
            )
            out.append(TopicPartition(tp.topic, tp.partition, offset, metadata=metadata))
        return out

    def offsets_for_times(
        self, tps: list[TopicPartition], timeout: float = -1
    ) -> list[TopicPartition]:
        self.calls.append("offsets_for_times")
        out = []
        with self.kafka.lock:
            for tp in tps:
                log = self.kafka.logs[(tp.topic, tp.partition)]
                if tp.offset == OFFSET_END:
                    offset = len(log)
                else:
                    found = [
                        i
                        for i, r in enumerate(log)
                        if r.timestamp_ms >= tp.offset and not r.control
                    ]
                    offset = found[0] if found else -1
                out.append(TopicPartition(tp.topic, tp.partition, offset))
        return out

    def get_watermark_offsets(
        self, tp: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int]:
        self.calls.append("get_watermark_offsets")
        return 0, self.kafka.end(tp.topic, tp.partition)

    # -- assignment and fetching (local in librdkafka) -------------------------------------

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned, self.fetched, self.paused = {}, set(), set()
        self.incremental_assign(tps)

    def incremental_assign(self, tps: list[TopicPartition]) -> None:
        for tp in tps:
            assert tp.offset >= 0, f"fake: assign {tp} at an explicit offset"
            self.assigned[(tp.topic, tp.partition)] = tp.offset

    def unassign(self) -> None:
        self.assign([])

    def pause(self, tps: list[TopicPartition]) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in tps}

    def resume(self, tps: list[TopicPartition]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in tps}

    def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(
                tp.topic,
                tp.partition,
                self.assigned[(tp.topic, tp.partition)]
                if (tp.topic, tp.partition) in self.fetched
                else INVALID,
            )
            for tp in tps
        ]

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        if self.stalled:
            return []
        out: list[FakeMessage] = []
        for key in sorted(self.assigned):
            if key in self.paused:
                continue
            self.fetched.add(key)
            with self.kafka.lock:
                log = list(self.kafka.logs[key])
            offset = self.assigned[key]
            while offset < len(log) and len(out) < num_messages:
                record = log[offset]
                if not record.control:
                    out.append(
                        FakeMessage(key[0], key[1], offset, record.value, headers=record.headers)
                    )
                offset += 1
            self.assigned[key] = offset
            if self.eof and offset == len(log) and self._eof_at.get(key) != offset:
                self._eof_at[key] = offset
                out.append(FakeMessage(key[0], key[1], offset, None, eof=True))
            if len(out) >= num_messages:
                break
        return out

    def consumer_group_metadata(self) -> object:
        return f"group {self.group}".encode()  # assigned by hand: no generation, no member id

    def close(self) -> None:
        pass
