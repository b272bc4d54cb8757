"""Unlogged batches for many small writes.

Why: the Python driver's cost per request, not Cassandra, limits a service that writes a few rows
per message; grouped into unlogged batches, far fewer requests carry the same mutations.

- `BatchExecutor` groups statements by the replica that owns their partition (token-aware: a
  batch never makes its coordinator fan out to other nodes), cuts the groups by statement count
  and by bytes (below Cassandra's batch_size_fail_threshold), sends the batches with a bounded
  number in flight, and waits for all of them.

An unlogged batch is not atomic and need not be: callers send idempotent writes only and retry
the whole set when `wait()` raises.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from cassandra.cluster import ResponseFuture, Session
from cassandra.query import (
    BatchStatement,
    BatchType,
    Statement,
)

_STATEMENT_OVERHEAD_BYTES = 64  # rough per-mutation framing, on top of the bound values


class _Group:
    """Statements waiting to fill a batch for one replica."""

    __slots__ = ("bytes", "statements")

    def __init__(self) -> None:
        self.statements: list[Statement] = []
        self.bytes = 0


class BatchExecutor:
    """Streams statements into batches: a batch is sent as soon as it is full, so binding the
    next statements overlaps with Cassandra applying the previous ones. `wait()` sends what is
    left and returns when everything sent is done, raising the first failure."""

    def __init__(
        self,
        session: Session,
        max_statements: int,
        max_bytes: int,
        concurrency: int,
    ) -> None:
        self._session = session
        self._max_statements = max_statements
        self._max_bytes = max_bytes
        self._concurrency = concurrency
        self._groups: dict[object, _Group] = {}
        self._in_flight: deque[ResponseFuture] = deque()
        self._errors: list[BaseException] = []

    def execute(self, statements: Iterable[Statement]) -> None:
        self.add(statements)
        self.wait()

    def add(self, statements: Iterable[Statement]) -> None:
        try:
            self._add(statements)
        except Exception:
            # The batch fails as a whole: forget what was queued, settle what was sent.
            self._groups.clear()
            while self._in_flight:
                settle(self._in_flight.popleft(), [])
            self._errors.clear()
            raise

    def _add(self, statements: Iterable[Statement]) -> None:
        # Token-aware grouping matters only with several nodes; skip the lookups otherwise.
        by_replica = len(self._session.cluster.metadata.all_hosts()) > 1
        for statement in statements:
            size = _size(statement)
            if size >= self._max_bytes or isinstance(statement, BatchStatement):
                self._send(statement)  # too big for a batch, or a batch already
                continue
            replica = self._replica(statement) if by_replica else None
            group = self._groups.setdefault(replica, _Group())
            if group.statements and (
                len(group.statements) >= self._max_statements
                or group.bytes + size > self._max_bytes
            ):
                self._send(_as_request(group.statements))
                group.statements, group.bytes = [], 0
            group.statements.append(statement)
            group.bytes += size

    def wait(self) -> None:
        for group in self._groups.values():
            if group.statements:
                self._send(_as_request(group.statements))
        self._groups.clear()
        while self._in_flight:
            settle(self._in_flight.popleft(), self._errors)
        errors, self._errors = self._errors, []
        if errors:
            raise errors[0]

    def _send(self, request: Statement) -> None:
        if len(self._in_flight) >= self._concurrency:
            settle(self._in_flight.popleft(), self._errors)
        self._in_flight.append(self._session.execute_async(request))

    def _replica(self, statement: Statement) -> object:
        routing_key = statement.routing_key
        keyspace = statement.keyspace
        if routing_key is None or keyspace is None:
            return None
        replicas = self._session.cluster.metadata.get_replicas(keyspace, routing_key)
        return replicas[0].endpoint if replicas else None


def _size(statement: Statement) -> int:
    # A plain loop: this runs for every statement, and a generator costs twice as much.
    total = _STATEMENT_OVERHEAD_BYTES
    for value in getattr(statement, "values", None) or ():
        if value.__class__ is bytes:  # bound values are bytes; None and UNSET weigh nothing
            total += len(value)
    return total


def _as_request(batch: list[Statement]) -> Statement:
    if len(batch) == 1:
        return batch[0]
    request = BatchStatement(batch_type=BatchType.UNLOGGED)
    for statement in batch:
        request.add(statement)
    return request


def settle(future: ResponseFuture, errors: list[BaseException]) -> None:
    """Wait for `future`; a failure is appended to `errors` instead of raised."""
    try:
        future.result()
    except Exception as exc:  # noqa: BLE001 - collected; the first one is raised after all settle
        errors.append(exc)
