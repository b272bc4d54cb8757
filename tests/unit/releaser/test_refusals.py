"""The table of destination refusals (scheduler_releaser.dispatcher.refusals), error by error:
what fails an attempt at once, what is retried, what is not the record's fault, and which
errors make the topic-existence cache forget the topic."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from scheduler_releaser.dispatcher.refusals import names_a_topic, refusal_of

pytestmark = pytest.mark.unit

PERMANENT = [
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_RECORD,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.TOPIC_EXCEPTION,
    KafkaError.POLICY_VIOLATION,
]
GONE = [KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION]
TRANSIENT = [
    KafkaError.NOT_ENOUGH_REPLICAS,
    KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError._MSG_TIMED_OUT,
]
COLLATERAL = [KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT, KafkaError._STATE]


@pytest.mark.parametrize("code", PERMANENT, ids=lambda c: KafkaError(c).name())
def test_a_permanent_refusal_fails_the_attempt_and_keeps_the_topic_known(code: int) -> None:
    refusal = refusal_of(KafkaError(code))
    assert refusal is not None
    assert (refusal.code, refusal.permanent, refusal.topic_gone) == (
        KafkaError(code).name(),
        True,
        False,
    )
    assert refusal.detail  # the broker's words go into the attempt's log entry


@pytest.mark.parametrize("code", GONE, ids=lambda c: KafkaError(c).name())
def test_a_topic_gone_is_permanent_and_forgotten_by_the_existence_cache(code: int) -> None:
    refusal = refusal_of(KafkaError(code))
    assert refusal is not None and refusal.permanent and refusal.topic_gone


@pytest.mark.parametrize(
    "code", [*TRANSIENT, KafkaError.REQUEST_TIMED_OUT], ids=lambda c: KafkaError(c).name()
)
def test_a_transient_refusal_is_retried(code: int) -> None:
    refusal = refusal_of(KafkaError(code))
    assert refusal is not None and not refusal.permanent and not refusal.topic_gone


@pytest.mark.parametrize("code", COLLATERAL, ids=lambda c: KafkaError(c).name())
def test_a_record_purged_because_another_failed_is_not_refused(code: int) -> None:
    assert refusal_of(KafkaError(code)) is None


@pytest.mark.parametrize("code", PERMANENT + GONE + TRANSIENT, ids=lambda c: KafkaError(c).name())
def test_transaction_errors_a_topic_can_cause_split_the_batch(code: int) -> None:
    assert names_a_topic(KafkaError(code))


def test_errors_of_the_producer_itself_do_not_split_the_batch() -> None:
    assert not names_a_topic(KafkaError(KafkaError._FENCED))
    assert not names_a_topic(KafkaError(KafkaError._TRANSPORT))
    assert not names_a_topic(None)
