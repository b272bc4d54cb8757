"""Versioned CQL migrations: `NNNN_name.cql` files applied once each, in order, per keyspace.

An applied migration is recorded with its checksum; a file changed after it was applied is an
error (add a new migration instead). Running the migrations twice changes nothing.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from dataclasses import dataclass

from cassandra.cluster import Session

from scheduler.settings import CassandraSettings
from scheduler.store.bucket_index import old_releaser_has_led
from scheduler.store.cassandra_buckets import CassandraBucketStore

# Adds the index of non-empty buckets; a keyspace upgraded to it needs the backfill
# (scheduler.store.bucket_index) before the releaser may skip a bucket.
BUCKET_INDEX_MIGRATION = 4
_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.cql")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]
    checksum: str


class MigrationError(RuntimeError):
    pass


def split_statements(cql: str) -> tuple[str, ...]:
    """Statements of a CQL file: `--` comments dropped, split on `;` at the end of a line."""
    lines = [line.split("--", 1)[0].rstrip() for line in cql.splitlines()]
    text = "\n".join(line for line in lines if line.strip())
    return tuple(part.strip() for part in re.split(r";\s*$", text, flags=re.M) if part.strip())


def load_migrations() -> list[Migration]:
    folder = importlib.resources.files("scheduler.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _NAME.fullmatch(entry.name)
        if match is None:
            continue
        text = entry.read_text(encoding="utf-8")
        found.append(
            Migration(
                version=int(match[1]),
                name=match[2],
                statements=split_statements(text),
                checksum=hashlib.sha256(text.encode()).hexdigest(),
            )
        )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version: {versions}")
    return found


def replication_map(settings: CassandraSettings) -> dict[str, str]:
    return {
        "class": "org.apache.cassandra.locator.NetworkTopologyStrategy",
        settings.local_dc: str(settings.replication_factor),
    }


def ensure_keyspace(session: Session, settings: CassandraSettings) -> list[str]:
    """Create the keyspace if missing. An existing one is left alone; a different replication
    is reported, not altered (changing replication needs a repair, an operator decision)."""
    keyspace = settings.keyspace
    wanted = replication_map(settings)
    row = session.execute(
        "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", (keyspace,)
    ).one()
    if row is None:
        options = ", ".join(f"'{key}': '{value}'" for key, value in wanted.items())
        session.execute(
            f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {{{options}}}"
        )
        return [f"created keyspace {keyspace} with replication {wanted}"]
    if dict(row.replication) != wanted:
        return [
            f"WARNING keyspace {keyspace} has replication {dict(row.replication)}, settings ask "
            f"for {wanted}; alter it by hand and run a repair"
        ]
    return []


def apply_migrations(
    session: Session, settings: CassandraSettings, now_ms: int, up_to: int | None = None
) -> list[str]:
    """Bring the keyspace to the latest migration (or to version `up_to`, for upgrade tests).
    Returns what changed (empty: nothing)."""
    changes = ensure_keyspace(session, settings)
    keyspace = settings.keyspace
    session.execute(
        f"CREATE TABLE IF NOT EXISTS {keyspace}.schema_migrations ("
        "version int PRIMARY KEY, name text, checksum text, applied_ms bigint)"
    )
    applied = {
        row.version: row
        for row in session.execute(
            f"SELECT version, name, checksum FROM {keyspace}.schema_migrations"  # noqa: S608
        )
    }
    session.set_keyspace(keyspace)
    fresh = not applied
    for migration in load_migrations():
        if up_to is not None and migration.version > up_to:
            break
        done = applied.get(migration.version)
        if done is not None:
            if done.checksum != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} changed after it was "
                    "applied; add a new migration instead"
                )
            continue
        for statement in migration.statements:
            session.execute(statement)
        session.execute(
            "INSERT INTO schema_migrations (version, name, checksum, applied_ms) "
            "VALUES (%s, %s, %s, %s)",
            (migration.version, migration.name, migration.checksum, now_ms),
        )
        changes.append(f"applied migration {migration.version:04d}_{migration.name}")
    if up_to is None or up_to >= BUCKET_INDEX_MIGRATION:
        buckets = CassandraBucketStore(session)
        if fresh:
            # A new keyspace: no writer of a version without the index ever stored anything.
            buckets.mark_index_complete(now_ms)
            changes.append("bucket index complete (new keyspace)")
        elif buckets.index_complete() and old_releaser_has_led(buckets):
            buckets.mark_index_incomplete()
            changes.append(
                "bucket index marked incomplete: a releaser of a version without it has run"
                " (a rollback); it is completed again once no old writer runs"
            )
    return changes
