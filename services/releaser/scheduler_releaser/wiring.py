"""Cassandra-backed stores and the ops endpoints, shared by both entry points."""

from __future__ import annotations

from cassandra.cluster import Cluster, Session
from prometheus_client import CollectorRegistry

from scheduler.encryption import ColumnCipher
from scheduler.ops import Health, OpsServer
from scheduler.settings import CassandraSettings
from scheduler.store.cassandra import connect
from scheduler.store.cassandra_apps import CassandraAppStore
from scheduler.store.cassandra_buckets import CassandraBucketStore
from scheduler.store.cassandra_messages import CassandraMessageStore
from scheduler.store.usage import CassandraUsageStore

from .dispatcher.runtime import Stores
from .dispatcher.status_reader import CassandraStatusReader


def cassandra_stores(
    settings: CassandraSettings, cipher: ColumnCipher, app_secrets: bool = True
) -> tuple[Cluster, Session, Stores]:
    """`cipher` opens the encrypted secrets and payloads (scheduler.encryption); without
    `app_secrets` the apps are read without their secrets (CassandraAppStore)."""
    cluster, session = connect(settings, settings.keyspace)
    stores = Stores(
        messages=CassandraMessageStore(session, cipher),
        buckets=CassandraBucketStore(session, cipher=cipher),
        apps=CassandraAppStore(session, cipher, open_secrets=app_secrets),
        usage=CassandraUsageStore(session),
        states=CassandraStatusReader(session),
    )
    return cluster, session, stores


def serve_ops(port: int, registry: CollectorRegistry, health: Health) -> OpsServer | None:
    """/metrics, /healthz and /readyz on `port` (0: none)."""
    if not port:
        return None
    return OpsServer("0.0.0.0", port, registry, health)  # noqa: S104 - a pod's probes
