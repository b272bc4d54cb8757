"""The benchmark's Cassandra operation counts, against the real server: N single-row inserts
into N partitions count N writes, a batch of rows of one partition counts one, and reads count."""

from __future__ import annotations

import pytest

from bench.cassandra_ops import counter, delta
from scheduler.store.cassandra import connect
from scheduler.testing.isolation import private_cassandra, unique_name
from scheduler.testing.servers import Servers

pytestmark = pytest.mark.integration


def test_writes_and_reads_are_counted_per_table(servers: Servers) -> None:
    cassandra = private_cassandra(servers, unique_name())
    cluster, session = connect(cassandra)
    ks = cassandra.keyspace
    try:
        session.execute(
            f"CREATE KEYSPACE {ks} WITH replication ="
            " {'class': 'SimpleStrategy', 'replication_factor': 1}"
        )
        session.execute(f"CREATE TABLE {ks}.t (p int, c int, v text, PRIMARY KEY (p, c))")
        with counter(cassandra) as snapshot:
            before = snapshot()
            for p in range(7):
                session.execute(f"INSERT INTO {ks}.t (p, c, v) VALUES (%s, 0, 'x')", (p,))
            session.execute(
                f"BEGIN UNLOGGED BATCH INSERT INTO {ks}.t (p, c, v) VALUES (100, 1, 'a');"
                f" INSERT INTO {ks}.t (p, c, v) VALUES (100, 2, 'b'); APPLY BATCH"
            )
            for p in range(3):
                assert session.execute(f"SELECT v FROM {ks}.t WHERE p = %s", (p,)).one()
            after = snapshot()
        assert before is not None and after is not None
        moved = delta(before, after)
        assert moved["t"]["writes"] == 8  # 7 partitions, and the batch's one partition once
        assert moved["t"]["reads"] == 3
    finally:
        session.execute(f"DROP KEYSPACE IF EXISTS {ks}")
        cluster.shutdown()
