"""Results spread over several partitions (one per transaction, not one per message): the record
writer, a restart's reload of settled attempts and the dedup still work when one message's
results are in different partitions."""

from __future__ import annotations

import asyncio

import pytest

from scheduler.domain.status import Status
from scheduler.records import DeliveryOutcome
from scheduler.settings import KafkaSettings

from .conftest import CLOCK, Env, Receiver, RunningDispatcher, eventually
from .test_dispatch import SETTINGS, due_message, read_all, rest_app

pytestmark = pytest.mark.integration

RESULTS_PARTITIONS = 3
MESSAGES = 12


@pytest.fixture
def kafka_settings(kafka_settings: KafkaSettings) -> KafkaSettings:
    """The test's private topics (deleted by the shared fixture), with several results
    partitions."""
    return kafka_settings.model_copy(update={"results_partitions": RESULTS_PARTITIONS})


def test_results_in_turn_over_partitions_still_settle_and_dedup_each_message(
    env: Env, receiver: Receiver
) -> None:
    """Each message fails once (503) and is delivered on its retry: two results per message,
    written by different transactions. Every record ends SENT at attempt 2; after a restart
    the first attempts' ring records, replayed, are recognised as settled (the reload reads
    every partition), so nothing is delivered a third time."""
    env.releaser_is_current()
    now = CLOCK.now_ms()
    messages = []
    for n in range(MESSAGES):
        app = f"flaky{n}"
        env.add_app(rest_app(app, receiver.url(f"/fail/1/{app}")))
        messages.append(due_message(app, now + 1_500 + 60 * n))
    for m in messages:
        env.schedule(m)
    env.flush()

    def all_sent() -> bool:
        views = [env.stores.messages.get(m.app_id, m.message_id) for m in messages]
        return all(v is not None and v.state.status is Status.SENT for v in views)

    async def deliver() -> None:
        async with RunningDispatcher(env, SETTINGS):
            await eventually(all_sent, timeout_s=30)

    asyncio.run(deliver())
    for m in messages:
        view = env.stores.messages.get(m.app_id, m.message_id)
        assert view is not None and (view.state.status, view.state.attempt) == (Status.SENT, 2)
    assert len(receiver.ids("/fail")) == 2 * MESSAGES

    results = read_all(env, env.topics.results, expected=2 * MESSAGES)
    outcomes: dict[str, set[DeliveryOutcome]] = {}
    for record in results:
        result = env.codecs.result.decode(record.value())
        outcomes.setdefault(result.message_id, set()).add(result.outcome)
        assert record.key() == result.message_id.encode()  # still keyed (compaction)
    assert outcomes == {
        m.message_id: {DeliveryOutcome.RETRY, DeliveryOutcome.SENT} for m in messages
    }
    # one partition per transaction, a different one for the next: with a transaction per
    # firing (60 ms apart), the results cover more than one partition
    assert len({record.partition() for record in results}) > 1

    for m in messages:  # the first attempts again, as a bucket released twice would bring them
        env.producer.produce(
            env.topics.ring.topic_for(CLOCK.now_ms()),
            key=m.message_id.encode(),
            value=env.codecs.due.encode(m),
        )
    env.flush()

    async def replay() -> None:
        async with RunningDispatcher(env, SETTINGS) as d:
            await eventually(
                lambda: d.metric("scheduler_dispatch_duplicates_total") >= MESSAGES, timeout_s=30
            )

    asyncio.run(replay())
    assert len(receiver.ids("/fail")) == 2 * MESSAGES
