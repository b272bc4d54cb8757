"""Cassandra connection: one Cluster per process, token- and DC-aware, consistency from settings."""

from __future__ import annotations

from cassandra import ConsistencyLevel
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, Session
from cassandra.policies import (
    DCAwareRoundRobinPolicy,
    ExponentialReconnectionPolicy,
    TokenAwarePolicy,
)

from scheduler.settings import CassandraSettings
from scheduler.tls import cassandra_ssl_context


def connect(settings: CassandraSettings, keyspace: str | None = None) -> tuple[Cluster, Session]:
    """Open a session (to `keyspace`, if given). The caller shuts the Cluster down.

    The one place the system builds a Cluster (tests/unit/test_client_construction.py)."""
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=settings.local_dc)),
        consistency_level=ConsistencyLevel.name_to_value[settings.consistency],
        request_timeout=settings.request_timeout_s,
    )
    auth = None
    if settings.username and settings.password:
        auth = PlainTextAuthProvider(settings.username, settings.password.get_secret_value())
    cluster = Cluster(
        contact_points=settings.contact_points,
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
