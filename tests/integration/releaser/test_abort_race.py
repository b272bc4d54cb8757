"""An abort whose writes outlast the cancel guard, against the real dispatcher: a 200 is never
followed by a delivery.

Ingest (the real routes on Cassandra and Kafka, its ABORTED write held back like a slow
replica's) aborts messages just before the guard while the real dispatcher fires them at their
due instants to a local receiver. Aborts acknowledged after due - G must be answered from the
dispatcher's result: 409 too_late when it delivered, 200 only when it skipped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
import uuid
from collections.abc import Sequence

import pytest

from scheduler.codec import RecordCodec
from scheduler.domain.status import Status
from scheduler.records import DeliveryResult
from scheduler.store.cassandra_messages import CassandraMessageStore
from scheduler.store.ports import LogEntry, StatusUpdate, StatusWrite
from scheduler_ingest.outcomes import KafkaResultLookup
from scheduler_ingest.publisher import KafkaPublisher, producer_config
from scheduler_ingest.settings import IngestSettings
from tests.unit.ingest.harness import Harness

from .conftest import CLOCK, Env, Receiver, RunningDispatcher
from .test_dispatch import SETTINGS, due_message

pytestmark = pytest.mark.integration

GUARD = 200  # scheduling_settings.cancel_guard_ms


class SlowAbortWrites(CassandraMessageStore):
    """ABORTED writes of the listed messages land this late (a slow replica, queueing)."""

    def __init__(self, env: Env) -> None:
        super().__init__(env.session)
        self.delay_s: dict[str, float] = {}

    def update_status(
        self, app_id: str, message_id: str, state: StatusUpdate, log: LogEntry
    ) -> None:
        if state.status is Status.ABORTED:
            time.sleep(self.delay_s.get(message_id, 0.0))
        super().update_status(app_id, message_id, state, log)


class LaggingRecordWriter(CassandraMessageStore):
    """The dispatcher's record writer, late with SENT: the abort's re-read still sees ABORTED
    after the delivery (what happens when the record writer is behind)."""

    def update_status(
        self, app_id: str, message_id: str, state: StatusUpdate, log: LogEntry
    ) -> None:
        if state.status is Status.SENT:
            time.sleep(1.0)
        super().update_status(app_id, message_id, state, log)

    def update_statuses(self, writes: Sequence[StatusWrite]) -> None:
        if any(w.state.status is Status.SENT for w in writes):
            time.sleep(1.0)
        super().update_statuses(writes)


def test_no_abort_answered_200_is_delivered(env: Env, receiver: Receiver) -> None:
    assert env.scheduling.cancel_guard_ms == GUARD
    env.releaser_is_current()
    store = SlowAbortWrites(env)
    publisher = KafkaPublisher(
        producer_config(env.kafka, timeout_ms=10_000, linger_ms=1.0), CLOCK, lambda *_: None
    )
    h = Harness(
        settings=IngestSettings(usage_flush_ms=0, abort_outcome_wait_ms=3_000),
        clock=CLOCK,  # type: ignore[arg-type]
        messages=store,
        apps=env.app_store,
        usage=env.stores.usage,
        publisher=publisher,
        kafka=env.kafka,
        suffix="-" + uuid.uuid4().hex[:8],
        results=KafkaResultLookup(
            env.kafka, env.topics.results, RecordCodec(DeliveryResult), CLOCK
        ),
    )
    app = env.app_store.get_app(h.alice.app_id)
    assert app is not None
    env.add_app(dataclasses.replace(app, endpoint=receiver.url("/ok")))

    base = CLOCK.now_ms() + 5_000
    # (write delay, abort issued this long before due): acknowledged well before due - G
    # (certain), just after it (either way), and after due itself (the dispatcher fired).
    plan = [(0.5, 1_500)] * 3 + [(0.15, GUARD + 80)] * 4 + [(0.5, GUARD + 80)] * 6
    cases = []
    for i, (delay_s, lead_ms) in enumerate(plan):
        message = due_message(h.alice.app_id, base + i * 500)
        store.delay_s[message.message_id] = delay_s
        env.schedule(message)
        cases.append((message, lead_ms))
    env.flush()
    answers: dict[str, tuple[int, str]] = {}

    def abort(message_id: str, at_ms: int) -> None:
        time.sleep(max(0.0, (at_ms - CLOCK.now_ms()) / 1000))
        r = h.client.put(f"/messages/{message_id}/abort", headers=h.alice.data)
        answers[message_id] = (r.status_code, r.json().get("message", ""))

    async def scenario() -> None:
        lagging = dataclasses.replace(env.stores, messages=LaggingRecordWriter(env.session))
        async with RunningDispatcher(dataclasses.replace(env, stores=lagging), SETTINGS):
            threads = [
                threading.Thread(target=abort, args=(m.message_id, m.due_ms - lead))
                for m, lead in cases
            ]
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                await asyncio.sleep(0.1)
            await asyncio.sleep(2.0)  # any delivery still in flight lands

    try:
        asyncio.run(scenario())
    finally:
        h.close()
        publisher.close()
    delivered = set(receiver.ids())
    summary = {
        m.message_id[-6:]: (answers.get(m.message_id), m.message_id in delivered) for m, _ in cases
    }
    print(summary)
    assert len(answers) == len(cases)
    for message, _ in cases:
        status, text = answers[message.message_id]
        assert status in (200, 409), summary
        if status == 200:
            assert message.message_id not in delivered, summary
        elif "delivered before the abort" in text:
            assert message.message_id in delivered, summary
    # The race really happened: aborts acknowledged after the due instant lost it.
    late = [m.message_id for m, _ in cases[-6:]]
    assert any(m in delivered and answers[m][0] == 409 for m in late), summary
    assert all(answers[m.message_id][0] == 200 for m, _ in cases[:3]), summary
