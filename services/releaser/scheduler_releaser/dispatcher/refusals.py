"""When a destination topic refuses a KAFKA delivery: whose fault, and is it final?

A Kafka transaction commits all of its records or none. One tenant's destination that refuses
its record (too large for the topic, topic deleted, writes denied, too few in-sync replicas)
would otherwise abort every transaction it rides in, and with it every other tenant's results
and the ring offsets, forever. The sink therefore reads the delivery report of every record
before it commits: a destination record that failed on its own is taken out of the transaction
and its attempt settles as a failure of its own (this table), and the rest is committed.

    permanent (the attempt FAILS at once, dead letter):  record too large, topic gone or
        invalid, writes denied, refused by a broker policy, invalid record
    transient (the attempt is RETRIED with backoff):     anything else the broker answers for
        this record (not enough in-sync replicas, leader moving, request timed out), and no
        answer within DISPATCH_DESTINATION_TIMEOUT_MS
    not the record's fault (retried with the rest):      records purged because another record
        failed the transaction first

Some failures name no record: a topic deleted after the producer last saw it fails the whole
transaction (AddPartitionsToTxn: UNKNOWN_TOPIC_OR_PART) and its record is only purged. Then the
destination records of the batch are taken out and the rest is committed without them; each
is tried alone next, and one that fails alone is refused with the transaction's error. A
transaction in which nothing at all was acknowledged blames no destination (sink.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaError

PERMANENT = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError.POLICY_VIOLATION,
    }
)
# Failed because the transaction failed (another record's error), not because of this record.
COLLATERAL = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT, KafkaError._STATE})
# The topic itself is gone: the existence cache must forget it.
TOPIC_GONE = frozenset(
    {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION}
)
TIMEOUT = "DESTINATION_TIMEOUT"


@dataclass(frozen=True)
class Refusal:
    """A destination refused one record; `code` is the broker's error name (a metric label)."""

    code: str
    permanent: bool
    detail: str
    topic_gone: bool = False


def refusal_of(error: KafkaError) -> Refusal | None:
    """The refusal this delivery error means for its own record (None: not its fault)."""
    if error.code() in COLLATERAL:
        return None
    return Refusal(
        code=error.name(),
        permanent=error.code() in PERMANENT,
        detail=error.str(),
        topic_gone=error.code() in TOPIC_GONE,
    )


# Transaction-level errors that a destination topic can cause (and the scheduler's own topics
# too: a batch is split to tell which, see sink.py).
TOPIC_ERRORS = PERMANENT | {
    KafkaError.NOT_ENOUGH_REPLICAS,
    KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError._MSG_TIMED_OUT,
}


def names_a_topic(error: KafkaError | None) -> bool:
    return error is not None and error.code() in TOPIC_ERRORS


def unexplained(error: Exception) -> Refusal:
    """A transaction holding this record alone failed with no error of the record's own."""
    return Refusal("TRANSACTION_FAILED", False, str(error))


def timed_out(timeout_ms: int) -> Refusal:
    return Refusal(TIMEOUT, False, f"the destination did not acknowledge within {timeout_ms} ms")
