"""Fire-time record checks, read in batches.

The dispatcher needs only the status group of each record (status, generation, attempt). One
read per message costs a Cassandra request and a Python driver round per message; a hotspot of
due messages is read instead with one `IN` query per app and chunk (`message_id` is the last
partition-key column, so CQL allows it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from cassandra.cluster import Session

from scheduler.domain.status import Status
from scheduler.store.ports import StatusUpdate


class StatusReader(Protocol):
    def states(self, app_id: str, message_ids: Sequence[str]) -> dict[str, StatusUpdate]:
        """The status group of each record that has a status (missing ids are absent), its
        content written or not: a status that overtook its content still tells an abort or a
        delivery already made. (MessageStore.get hides such a record: no reader over it.)"""


class CassandraStatusReader:
    """Reads the `messages` table of migration 0001 directly (status group columns only)."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._select = session.prepare(
            "SELECT message_id, status, generation, attempt, due_ms, updated_ms FROM messages"
            " WHERE app_id = ? AND message_id IN ?"
        )

    def states(self, app_id: str, message_ids: Sequence[str]) -> dict[str, StatusUpdate]:
        found: dict[str, StatusUpdate] = {}
        for row in self._session.execute(self._select, (app_id, list(message_ids))):
            if row.status is None:
                continue  # content written, status not yet: treated as not there
            # (a status without its content is returned: the contract test shows why)
            found[row.message_id] = StatusUpdate(
                status=Status(row.status),
                generation=row.generation or 0,
                attempt=row.attempt or 0,
                due_ms=row.due_ms or 0,
                at_ms=row.updated_ms or 0,
            )
        return found
