"""Cassandra's own count of the writes and reads of each table, for the rows per message.

Read from the virtual tables `system_views.local_write_latency`, `local_read_latency` and
`local_scan_latency` (Cassandra 4.1 and later; no JMX, no nodetool): their `count` is the number
of partition updates (writes) and of single-partition and range reads the node served for the
table since it started. A batch counts one write per partition it updates, so several rows of
one partition written together count once: the figures are partition writes, a lower bound on
rows. On one node, local is everything; on a ring with RF 3 each write counts on three nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from scheduler.settings import CassandraSettings
from scheduler.store.cassandra import connect
from scheduler.store.migrate import apply_migrations
from scheduler.testing.isolation import drop_keyspace, private_cassandra, unique_name
from scheduler.testing.servers import resolve_servers

KINDS = {
    "local_write_latency": "writes",
    "local_read_latency": "reads",
    "local_scan_latency": "scans",
}

Counts = dict[str, dict[str, int]]  # table -> kind -> count


def table_counts(session: Any, keyspace: str) -> Counts:
    """The current counts of every table of `keyspace` (session: a cassandra-driver Session)."""
    counts: Counts = {}
    for view, kind in KINDS.items():
        rows = session.execute(
            f"SELECT table_name, count FROM system_views.{view} WHERE keyspace_name = %s",
            (keyspace,),
        )
        for row in rows:
            counts.setdefault(row.table_name, {})[kind] = int(row.count)
    return counts


def delta(before: Counts, after: Counts) -> Counts:
    """What happened between two snapshots; tables and kinds with nothing left out."""
    out: Counts = {}
    for table, kinds in after.items():
        for kind, count in kinds.items():
            moved = count - before.get(table, {}).get(kind, 0)
            if moved:
                out.setdefault(table, {})[kind] = moved
    return out


@contextmanager
def counter(cassandra: CassandraSettings) -> Iterator[Callable[[], Counts | None]]:
    """A snapshot function on its own session; a snapshot is None where the servers have no
    such virtual tables (a Cassandra before 4.1), so the report leaves the figures out."""
    cluster, session = connect(cassandra)
    try:

        def snapshot() -> Counts | None:
            try:
                return table_counts(session, cassandra.keyspace)
            except Exception as exc:  # a figure missing, not a failed run
                print(f"[bench] Cassandra operation counts not read: {exc}", flush=True)
                return None

        yield snapshot
    finally:
        cluster.shutdown()


@contextmanager
def private_keyspace(now_ms: int) -> Iterator[Any]:
    """A session on a keyspace of the local Cassandra of its own, migrated (as of `now_ms`),
    dropped afterwards: for the benches that time one store alone."""
    cassandra = private_cassandra(resolve_servers(), unique_name())
    cluster, session = connect(cassandra)
    try:
        apply_migrations(session, cassandra, now_ms)
        session.set_keyspace(cassandra.keyspace)
        yield session
    finally:
        cluster.shutdown()
        drop_keyspace(cassandra)
