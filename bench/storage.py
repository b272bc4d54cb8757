"""Storage per pending message without nodetool: the size of the keyspace's directory under the
local stack's Cassandra data directory, after forcing the memtables to disk through the table
option memtable_flush_period_in_ms (set briefly, then reset to 0). Compaction may still be
rewriting SSTables, so the figure is taken once the size is stable."""

from __future__ import annotations

import os
import time
from pathlib import Path

from scheduler.settings import CassandraSettings
from scheduler.store.cassandra import connect

REPO = Path(__file__).resolve().parents[1]
FLUSH_PERIOD_MS = 1_000
STABLE_S = 30.0


def data_dir() -> Path:
    state = Path(os.environ.get("SCHEDULER_STACK_STATE_DIR", REPO / ".local"))
    return state / "cassandra" / "data"


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def keyspace_bytes(keyspace: str) -> int | None:
    """Bytes on disk of the keyspace (its SSTables); None where the data directory is not
    this machine's (servers given by the environment, or containers)."""
    path = data_dir() / keyspace
    return directory_bytes(path) if path.exists() else None


def flushed_keyspace_bytes(cassandra: CassandraSettings) -> int | None:
    if keyspace_bytes(cassandra.keyspace) is None:
        return None
    cluster, session = connect(cassandra)
    try:
        tables = [
            row.table_name
            for row in session.execute(
                "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s",
                (cassandra.keyspace,),
            )
        ]

        def period(ms: int) -> None:
            for table in tables:
                session.execute(
                    f"ALTER TABLE {cassandra.keyspace}.{table}"
                    f" WITH memtable_flush_period_in_ms = {ms}",
                    timeout=60,
                )

        period(FLUSH_PERIOD_MS)
        try:
            size, deadline = -1, time.monotonic() + STABLE_S
            while time.monotonic() < deadline:
                time.sleep(3.0)
                now = keyspace_bytes(cassandra.keyspace) or 0
                if now == size:
                    break
                size = now
        finally:
            period(0)
        return keyspace_bytes(cassandra.keyspace)
    finally:
        cluster.shutdown()


def wait_compactions_done(cassandra: CassandraSettings, at_most_s: float = 600.0) -> float:
    """Seconds until Cassandra runs no compaction (or other SSTable task) on the keyspace for
    three checks in a row (system_views.sstable_tasks), at most `at_most_s`. A load leaves
    compactions behind: a run measured during them measures them too."""
    started = time.monotonic()
    cluster, session = connect(cassandra)
    try:
        quiet = 0
        while quiet < 3 and time.monotonic() - started < at_most_s:
            busy = [
                row
                for row in session.execute("SELECT keyspace_name FROM system_views.sstable_tasks")
                if row.keyspace_name == cassandra.keyspace
            ]
            quiet = 0 if busy else quiet + 1
            time.sleep(2.0)
        return round(time.monotonic() - started, 1)
    finally:
        cluster.shutdown()
