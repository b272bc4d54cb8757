"""CassandraStatusReader against real Cassandra, compared with the MessageStore it shortcuts."""

from __future__ import annotations

import pytest

from scheduler.domain.status import Status
from scheduler.store.ports import StatusUpdate
from scheduler_releaser.dispatcher.status_reader import CassandraStatusReader

from .conftest import Env
from .test_dispatch import due_message

pytestmark = pytest.mark.integration


def test_batched_states_match_the_message_store(env: Env) -> None:
    messages = [due_message("a", 1_000 + i) for i in range(5)]
    statuses = [Status.READY, Status.QUEUED, Status.SENT, Status.ABORTED, Status.FAILED]
    for m, status in zip(messages, statuses, strict=True):
        env.schedule(m, status)
    env.flush()
    later = StatusUpdate(Status.QUEUED, 2, 3, 9_999, 1)
    env.stores.messages.update_status("a", messages[0].message_id, later, _log())
    ids = [m.message_id for m in messages] + ["01JZZZZZZZZZZZZZZZZZZZZZZZ"]
    fast = CassandraStatusReader(env.session).states("a", ids)
    views = {mid: env.stores.messages.get("a", mid) for mid in ids}
    slow = {mid: view.state for mid, view in views.items() if view is not None}
    assert set(fast) == set(slow) == {m.message_id for m in messages}
    for mid in fast:
        a, b = fast[mid], slow[mid]
        assert (a.status, a.generation, a.attempt, a.due_ms) == (
            b.status,
            b.generation,
            b.attempt,
            b.due_ms,
        )
    assert (fast[messages[0].message_id].generation, fast[messages[0].message_id].attempt) == (2, 3)
    assert CassandraStatusReader(env.session).states("other-app", ids) == {}


def _log():
    from scheduler.store.ports import LogEntry

    return LogEntry(2, "2:3:test", Status.QUEUED)
