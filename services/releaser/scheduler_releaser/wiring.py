"""Cassandra-backed stores and the ops endpoints, shared by both entry points."""

from __future__ import annotations

from cassandra.cluster import Cluster, Session
from prometheus_client import CollectorRegistry

from scheduler.ops import Health, OpsServer
from scheduler.settings import CassandraSettings
from scheduler.store.cassandra import connect
from scheduler.store.cassandra_apps import CassandraAppStore
from scheduler.store.cassandra_buckets import CassandraBucketStore
from scheduler.store.cassandra_messages import CassandraMessageStore
from scheduler.store.usage import CassandraUsageStore

from .dispatcher.runtime import Stores
from .dispatcher.status_reader import CassandraStatusReader


def cassandra_stores(settings: CassandraSettings) -> tuple[Cluster, Session, Stores]:
    cluster, session = connect(settings, settings.keyspace)
    stores = Stores(
        messages=CassandraMessageStore(session),
        buckets=CassandraBucketStore(session),
        apps=CassandraAppStore(session),
        usage=CassandraUsageStore(session),
        states=CassandraStatusReader(session),
    )
    return cluster, session, stores


def serve_ops(port: int, registry: CollectorRegistry, health: Health) -> OpsServer | None:
    """/metrics, /healthz and /readyz on `port` (0: none)."""
    if not port:
        return None
    return OpsServer("0.0.0.0", port, registry, health)  # noqa: S104 - a pod's probes
