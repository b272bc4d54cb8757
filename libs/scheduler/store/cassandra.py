"""Cassandra connection: one Cluster per process, token- and DC-aware, consistency from settings."""

from __future__ import annotations

import functools
from collections import namedtuple
from collections.abc import Sequence
from typing import Any

from cassandra import ConsistencyLevel
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, Session
from cassandra.connection import DefaultEndPoint, DefaultEndPointFactory, EndPoint
from cassandra.policies import (
    DCAwareRoundRobinPolicy,
    ExponentialReconnectionPolicy,
    TokenAwarePolicy,
)
from cassandra.query import _clean_column_name  # the driver's own rules for row field names
from cassandra.util import _sanitize_identifiers

from scheduler.settings import CassandraSettings
from scheduler.tls import cassandra_ssl_context


def connect(settings: CassandraSettings, keyspace: str | None = None) -> tuple[Cluster, Session]:
    """Open a session (to `keyspace`, if given). The caller shuts the Cluster down.

    The one place the system builds a Cluster (tests/unit/test_client_construction.py)."""
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=settings.local_dc)),
        consistency_level=ConsistencyLevel.name_to_value[settings.consistency],
        request_timeout=settings.request_timeout_s,
        row_factory=named_rows,
    )
    auth = None
    if settings.username and settings.password:
        auth = PlainTextAuthProvider(settings.username, settings.password.get_secret_value())
    factory = MappedEndPointFactory(settings.address_map, settings.port)
    cluster = Cluster(
        contact_points=[factory.mapped(host, settings.port) for host in settings.contact_points],
        endpoint_factory=factory,
        port=settings.port,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        auth_provider=auth,
        protocol_version=5,
        # The driver's default backs off up to 10 minutes. A node back after an outage must be
        # used again within seconds: messages due meanwhile wait for it (a few connection
        # attempts per node per cap interval is cheap even for a large cluster).
        reconnection_policy=ExponentialReconnectionPolicy(
            base_delay=min(0.2, settings.reconnect_max_s), max_delay=settings.reconnect_max_s
        ),
        connect_timeout=5,
        ssl_context=cassandra_ssl_context(settings),
    )
    try:
        session = cluster.connect(keyspace)
    except Exception:
        cluster.shutdown()
        raise
    return cluster, session


def named_rows(colnames: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """The driver's default rows (named tuples, field names cleaned its way), with one row type
    per column list instead of a new `namedtuple` class per result: building that class took
    9 % of the dispatcher's GIL time at 1,000 deliveries a second (py-spy), one per record read.
    (The driver's `ResultSet.was_applied` refuses any factory but its own: read a conditional
    write's outcome as `result.one().applied`.)"""
    row = _row_type(tuple(colnames))
    return [row(*values) for values in rows]


@functools.lru_cache(maxsize=1024)
def _row_type(colnames: tuple[str, ...]) -> Any:
    names = [_clean_column_name(name) for name in colnames]
    try:
        return namedtuple("Row", names)
    except ValueError:  # names no field can have: the driver's fallback
        return namedtuple("Row", _sanitize_identifiers(names))


class MappedEndPointFactory(DefaultEndPointFactory):  # type: ignore[misc]
    """The driver connects to every node at the address and port the cluster announces
    (system.peers_v2); `address_map` (CassandraSettings) replaces some of them with a host:port
    to use instead: nodes behind NAT, or a TCP proxy per node as the fault campaign puts between
    each service process and each node. The driver's AddressTranslator maps the address only,
    and a proxy per node on one host needs its own port."""

    def __init__(self, address_map: dict[str, str], port: int) -> None:
        super().__init__(port=port)
        self.address_map = address_map

    def mapped(self, address: str, port: int) -> DefaultEndPoint:
        target = self.address_map.get(address)
        if target is None:
            return DefaultEndPoint(address, port)
        host, _, mapped_port = target.rpartition(":")
        return DefaultEndPoint(host, int(mapped_port))

    def create(self, row: dict[str, object]) -> EndPoint:
        endpoint = super().create(row)
        return self.mapped(endpoint.address, endpoint.port)
