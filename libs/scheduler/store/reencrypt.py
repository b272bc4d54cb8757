"""`scheduler admin reencrypt`: bring every stored secret (and payload) under the primary key.

It encrypts the plain text written before encryption was switched on (the backfill of an
upgrade) and re-encrypts values sealed under a former key (rotation), so that key can then be
removed from the keyring. Values already under the primary key are left alone, so it can be
stopped and run again at any time; each run reports which keys the stored values use.
With `decrypt` it does the opposite, for a rollback to a version without encryption: every
sealed value is written back as plain text (encryption must be switched off first).

Each table is scanned page by page (a full scan: an operator command, not a service path).
A rewrite is an UPDATE of that one cell `USING TIMESTAMP` one microsecond above the write time
of the value it read: a service writing the cell meanwhile (a rotated signing secret, an app
update) has a later timestamp and wins, and a row deleted meanwhile (a released bucket, an
abort) stays deleted, its tombstone being later too. No lock, no lightweight transaction.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cassandra.cluster import ResponseFuture, Session
from cassandra.query import SimpleStatement

from scheduler.encryption import ColumnCipher, UnreadableValue, is_sealed, key_id_of
from scheduler.store.cassandra_apps import SECRET_COLUMNS, secret_cell
from scheduler.store.cassandra_buckets import bucket_payload_cell
from scheduler.store.cassandra_messages import payload_cell
from scheduler.store.cassandra_schedules import schedule_payload_cell

PLAIN_TEXT = "plain text"
_IN_FLIGHT = 32


@dataclass(frozen=True)
class Column:
    """One encrypted column: where it is and the associated data of each of its cells."""

    table: str
    key: tuple[str, ...]  # the primary key columns
    name: str
    payload: bool  # encrypted only with payload encryption on
    cell: Callable[[Any], bytes]

    @property
    def label(self) -> str:
        return f"{self.table}.{self.name}"


def _app_column(name: str) -> Column:
    return Column("applications", ("app_id",), name, False, lambda r: secret_cell(name, r.app_id))


COLUMNS = (
    *(_app_column(name) for name in SECRET_COLUMNS),
    Column(
        "messages",
        ("app_id", "message_id"),
        "payload_json",
        True,
        lambda r: payload_cell(r.app_id, r.message_id),
    ),
    Column(
        "due_by_bucket",
        ("bucket_ms", "app_id", "shard", "due_ms", "message_id"),
        "payload_json",
        True,
        lambda r: bucket_payload_cell(r.app_id, r.message_id),
    ),
    Column(
        "schedules",
        ("app_id", "schedule_id"),
        "payload_json",
        True,
        lambda r: schedule_payload_cell(r.app_id, r.schedule_id),
    ),
)


@dataclass
class ColumnReport:
    column: str
    rewritten: int = 0
    # After the run (or as found, with dry_run): values per key id, PLAIN_TEXT, or
    # "unreadable <key>" for a ciphertext the keyring cannot open.
    values: Counter[str] = field(default_factory=Counter)

    def line(self, dry_run: bool) -> str:
        verb = "would rewrite" if dry_run else "rewrote"
        found = ", ".join(f"{k}: {n}" for k, n in sorted(self.values.items())) or "no values"
        return f"{self.column}: {verb} {self.rewritten}; {found}"


class ReencryptRefused(RuntimeError):
    pass


def reencrypt(
    session: Session,
    cipher: ColumnCipher,
    dry_run: bool = False,
    fetch_size: int = 500,
    decrypt: bool = False,
) -> list[ColumnReport]:
    """Rewrite every cell of COLUMNS that is not what `cipher` writes now, under its primary key
    (with `decrypt`: every sealed cell as plain text). `session` must be bound to the scheduler
    keyspace."""
    if decrypt:
        if cipher.secrets:
            raise ReencryptRefused(
                "encryption is still enabled: switch SCHEDULER_ENCRYPTION_ENABLED off on every"
                " replica first, or they keep writing ciphertext"
            )
        return [_column(session, cipher, c, dry_run, fetch_size, _to_plain) for c in COLUMNS]
    if not cipher.secrets:
        raise ReencryptRefused(
            "encryption is not enabled (SCHEDULER_ENCRYPTION_ENABLED): switch it on, once every"
            " replica runs a version that reads ciphertext, before encrypting stored values"
        )
    return [_column(session, cipher, c, dry_run, fetch_size, _to_primary) for c in COLUMNS]


# What to write instead of a value (None: leave it), counting what stays stored.
Target = Callable[[ColumnCipher, Column, str, Any, ColumnReport], str | None]


def _column(
    session: Session,
    cipher: ColumnCipher,
    column: Column,
    dry_run: bool,
    fetch_size: int,
    target_of: Target,
) -> ColumnReport:
    report = ColumnReport(column.label)
    update = session.prepare(
        f"UPDATE {column.table} USING TIMESTAMP ? SET {column.name} = ? WHERE "  # noqa: S608
        + " AND ".join(f"{k} = ?" for k in column.key)
    )
    in_flight: list[ResponseFuture] = []
    for row in _scan(session, column, fetch_size):
        value = getattr(row, column.name)
        if not value:
            continue
        target = target_of(cipher, column, value, row, report)
        if target is None:
            continue
        report.rewritten += 1
        if dry_run:
            continue
        if len(in_flight) >= _IN_FLIGHT:
            in_flight.pop(0).result()
        keys = tuple(getattr(row, k) for k in column.key)
        in_flight.append(session.execute_async(update, (row.written + 1, target, *keys)))
    for future in in_flight:
        future.result()
    return report


def _to_primary(
    cipher: ColumnCipher, column: Column, value: str, row: Any, report: ColumnReport
) -> str | None:
    """The value to write instead of `value`, None to leave it; counts what stays stored."""
    key_id = key_id_of(value)
    if key_id == cipher.primary:
        report.values[str(key_id)] += 1
        return None
    wanted = cipher.payloads if column.payload else cipher.secrets
    if not is_sealed(value) and not wanted:
        report.values[PLAIN_TEXT] += 1
        return None
    aad = column.cell(row)
    try:
        plain = cipher.open(value, aad)
    except UnreadableValue:
        report.values[f"unreadable {key_id}"] += 1
        return None
    report.values[str(cipher.primary)] += 1
    return cipher.seal(plain, aad)


def _to_plain(
    cipher: ColumnCipher, column: Column, value: str, row: Any, report: ColumnReport
) -> str | None:
    """The plain text of a sealed value, None for plain text (left alone)."""
    if not is_sealed(value):
        report.values[PLAIN_TEXT] += 1
        return None
    try:
        plain = cipher.open(value, column.cell(row))
    except UnreadableValue:
        report.values[f"unreadable {key_id_of(value)}"] += 1
        return None
    report.values[PLAIN_TEXT] += 1
    return plain


def _scan(session: Session, column: Column, fetch_size: int) -> Iterator[Any]:
    query = (
        f"SELECT {', '.join(column.key)}, {column.name},"  # noqa: S608
        f" WRITETIME({column.name}) AS written FROM {column.table}"
    )
    yield from session.execute(SimpleStatement(query, fetch_size=fetch_size))
