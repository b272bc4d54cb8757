"""`CassandraMessageStore`: the MessageStore port on the tables of 0001_initial.cql.

Tables: `messages` (one record per (app_id, message_id), with its log entries in the map
`log_entries` since migration 0011: each goes in the statement of its status write), and
`messages_by_app` + `app_message_days` (newest-first listing without scanning empty days).
`message_logs` holds the log entries earlier versions wrote; it is read, never written.

Precedence (decision 1): the status group of `messages` is always written in one UPDATE
`USING TIMESTAMP <StatusUpdate.precedence>`, with every optional cell set explicitly (null
included), so Cassandra keeps, cell by cell, the write of highest precedence whatever the
arrival order, and a winning write clears what it does not carry. A new message's content goes
in the statement of its first status (`save`: one partition write, not two), so its cells carry
that status's precedence as their timestamp. Every writer writes the same content for a message
id, so whichever timestamp wins, the content read is the same: content written by an earlier
version with normal (wall-clock) timestamps, far above any precedence, reads the same too. As
before, a later write of the content (the bucketer's, a replay) may win over a rewrite by
`admin reencrypt` (the cell's write time plus one): it seals under the primary key, which every
replica has by the time reencrypt runs.

Status writes are blind (no read before write, no lightweight transaction: LWTs cannot carry a
custom timestamp). A status that arrives before its message's content is therefore kept but stays
invisible: `get` and `list` only show messages whose content has been saved, so an unknown
message is never created by `update_status`, and a status that overtook its `save` is not lost.

Idempotency keys (`claim_keys`, table `idempotency_keys` of 0005): the record is read first (a
recorded message holds its key for good); without one, the claim is a lightweight transaction
(`INSERT ... IF NOT EXISTS USING TTL`, serial consistency LOCAL_SERIAL: the keyspace is
replicated in the local data centre only), whose answer carries the existing row when it loses.

Ties: two writes of the same precedence resolve cell by cell (Cassandra keeps the larger value,
and a null beats a value); writers of one precedence carry the same status, so at worst
`updated_ms`/`lateness_ms`/`attempt`/`last_error` come from different writes of the same status
(docs/ARCHITECTURE.md, decision 1; the fake merges alike, tests/contract/test_message_store.py).
"""

from __future__ import annotations

import builtins
import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from functools import partial
from typing import Any

from cassandra import ConsistencyLevel
from cassandra.cluster import ResponseFuture, Session
from cassandra.query import (
    UNSET_VALUE,
    BatchStatement,
    BatchType,
    BoundStatement,
    PreparedStatement,
    Statement,
)

from scheduler.domain.idempotency import KeyClaim, KeyHolder
from scheduler.domain.status import Status, stored_ready
from scheduler.encryption import PLAIN, ColumnCipher, cell, is_sealed
from scheduler.store.cassandra_batches import BatchExecutor, settle
from scheduler.store.cassandra_buckets import CassandraReleaseProgress
from scheduler.store.cursor import decode_cursor, encode_cursor
from scheduler.store.ports import (
    LIST_SCAN_BUDGET,
    LogEntry,
    MessageContent,
    MessagePage,
    MessageView,
    StatusUpdate,
    StatusWrite,
    held_by_record,
)
from scheduler.store.release_view import shown_view, with_release_entries

DAY_MS = 86_400_000
_FETCH_SIZE = 200
# Cassandra refuses multi-partition batches above batch_size_fail_threshold (50 KiB by default):
# save_many keeps its batches below this, and writes a bigger message's statements one by one.
MAX_BATCH_BYTES = 40 * 1024
_MESSAGE_OVERHEAD_BYTES = 512
# update_statuses: 25 messages (a status and a log row each) per batch, 8 batches in flight.
STATUS_BATCH_STATEMENTS = 50
STATUS_BATCH_IN_FLIGHT = 8


def day_of(epoch_ms: int) -> int:
    """The UTC day number of an instant (partition of `messages_by_app`)."""
    return epoch_ms // DAY_MS


class CassandraMessageStore:
    """MessageStore on Cassandra. `session` must be bound to the scheduler keyspace; `cipher`
    seals `payload_json` on write when payload encryption is on, and opens it on read;
    `scan_budget`: listing rows a `list` page reads at most (LIST_SCAN_BUDGET); `release`: how
    readers learn the release (by default from this session, the watermark cached a second)."""

    def __init__(
        self,
        session: Session,
        cipher: ColumnCipher = PLAIN,
        scan_budget: int = LIST_SCAN_BUDGET,
        release: CassandraReleaseProgress | None = None,
    ) -> None:
        if scan_budget < 1:
            raise ValueError("scan_budget must be at least 1")
        self._session = session
        self._release = release or CassandraReleaseProgress(session)
        self._cipher = cipher
        self._scan_budget = scan_budget
        prepare = session.prepare
        # A new message's content and first status in one statement (one partition write): the
        # content cells carry the status's precedence too (see the module docstring).
        self._insert_record: PreparedStatement = prepare(
            "UPDATE messages USING TIMESTAMP ? SET payload_json = ?, send_at_ms = ?,"
            " created_ms = ?, idempotency_key = ?, kafka_key = ?, source = ?, status = ?,"
            " generation = ?, attempt = ?, due_ms = ?, updated_ms = ?, lateness_ms = ?,"
            " last_http_status = ?, last_error = ?, log_entries[?] = ?"
            " WHERE app_id = ? AND message_id = ?"
        )
        self._update_status: PreparedStatement = prepare(
            "UPDATE messages USING TIMESTAMP ? SET status = ?, generation = ?, attempt = ?,"
            " due_ms = ?, updated_ms = ?, lateness_ms = ?, last_http_status = ?, last_error = ?,"
            " log_entries[?] = ? WHERE app_id = ? AND message_id = ?"
        )
        self._insert_listing: PreparedStatement = prepare(
            "INSERT INTO messages_by_app (app_id, day, created_ms, message_id) VALUES (?, ?, ?, ?)"
        )
        self._insert_day: PreparedStatement = prepare(
            "INSERT INTO app_message_days (app_id, day) VALUES (?, ?)"
        )
        self._select_message: PreparedStatement = prepare(
            "SELECT payload_json, send_at_ms, created_ms, idempotency_key, kafka_key, source,"
            " status, generation, attempt, due_ms, updated_ms, lateness_ms, last_http_status,"
            " last_error, WRITETIME(status) AS status_written FROM messages"
            " WHERE app_id = ? AND message_id = ?"
        )
        self._select_recorded: PreparedStatement = prepare(
            "SELECT created_ms, status FROM messages WHERE app_id = ? AND message_id = ?"
        )
        self._select_log_entries: PreparedStatement = prepare(
            "SELECT log_entries FROM messages WHERE app_id = ? AND message_id = ?"
        )
        self._select_logs: PreparedStatement = prepare(
            "SELECT at_ms, entry_id, status, data FROM message_logs"
            " WHERE app_id = ? AND message_id = ?"
        )
        self._select_days: PreparedStatement = prepare(
            "SELECT day FROM app_message_days WHERE app_id = ? AND day <= ?"
        )
        self._select_day_listing: PreparedStatement = prepare(
            "SELECT created_ms, message_id FROM messages_by_app WHERE app_id = ? AND day = ?"
        )
        self._select_day_listing_after: PreparedStatement = prepare(
            "SELECT created_ms, message_id FROM messages_by_app WHERE app_id = ? AND day = ?"
            " AND (created_ms, message_id) < (?, ?)"
        )
        for statement in (self._select_days, self._select_day_listing):
            statement.fetch_size = _FETCH_SIZE
        # Prepared on first use: the services that never claim (releaser, dispatcher) start
        # on a keyspace that does not have the table yet.
        self._claim_key: PreparedStatement | None = None
        self._select_day_listing_after.fetch_size = _FETCH_SIZE

    # -- writes ---------------------------------------------------------------------------------

    def save(self, content: MessageContent, state: StatusUpdate, log: LogEntry) -> None:
        statements, _ = self._message_statements(content, state, log, set())
        _wait_all([self._session.execute_async(statement) for statement in statements])

    def save_many(
        self,
        items: Sequence[tuple[MessageContent, StatusUpdate, LogEntry]],
        in_flight: int = 64,
        per_batch: int = 1,
    ) -> None:
        """`save` for many messages, with far fewer requests: the statements of up to `per_batch`
        messages travel in one unlogged batch (the per-request cost of the Python driver is what
        limits a gateway), below MAX_BATCH_BYTES, and a listing day is written once per call.
        Not atomic, and need not be: every statement is idempotent and a failure raises, so the
        caller retries or reports.
        Statement-level timestamps (the status group's precedence) hold inside a batch that has
        no timestamp of its own."""
        errors: list[BaseException] = []
        pending: list[ResponseFuture] = []
        for request in self.save_requests(items, per_batch):
            if len(pending) >= in_flight:
                settle(pending.pop(0), errors)
            pending.append(self._session.execute_async(request))
        for future in pending:
            settle(future, errors)
        if errors:
            raise errors[0]

    def start_save_many(
        self, items: Sequence[tuple[MessageContent, StatusUpdate, LogEntry]], per_batch: int = 1
    ) -> list[ResponseFuture]:
        """`save_many` without waiting: the driver's futures, for a caller on an event loop."""
        return [self._session.execute_async(r) for r in self.save_requests(items, per_batch)]

    def save_requests(
        self, items: Sequence[tuple[MessageContent, StatusUpdate, LogEntry]], per_batch: int
    ) -> list[Statement]:
        """The requests `save_many` sends: batches of up to `per_batch` messages below
        MAX_BATCH_BYTES, a bigger message's statements one by one, each listing day once."""
        days: set[tuple[str, int]] = set()
        requests: list[Statement] = []
        batch: BatchStatement | None = None
        batch_messages = batch_bytes = 0
        for content, state, log in items:
            statements, stored_payload = self._message_statements(content, state, log, days)
            size = _stored_bytes(stored_payload) + _MESSAGE_OVERHEAD_BYTES
            if size > MAX_BATCH_BYTES:  # too big for any batch: its statements go one by one
                requests += statements
                continue
            if batch is None or batch_messages >= per_batch or batch_bytes + size > MAX_BATCH_BYTES:
                batch = BatchStatement(batch_type=BatchType.UNLOGGED)
                requests.append(batch)
                batch_messages = batch_bytes = 0
            for statement in statements:
                batch.add(statement)
            batch_messages += 1
            batch_bytes += size
        return requests

    def save_statements(
        self,
        items: Iterable[tuple[MessageContent, StatusUpdate, LogEntry]],
        days: set[tuple[str, int]] | None = None,
    ) -> Iterator[BoundStatement]:
        """The statements of `save` for many messages, for a caller that groups writes of several
        tables into batches itself (the bucketer). Each listing day is bound once: `days` holds
        the (app, day) rows already bound (by earlier calls for the same writes)."""
        days = set() if days is None else days
        for content, state, log in items:
            yield from self._message_statements(content, state, log, days)[0]

    def status_statement(
        self, app_id: str, message_id: str, state: StatusUpdate, log: LogEntry
    ) -> BoundStatement:
        """The statement of `update_status`, for a caller that batches it itself."""
        return self._update_status.bind(_status_values(app_id, message_id, state, log))

    def _message_statements(
        self,
        c: MessageContent,
        state: StatusUpdate,
        log: LogEntry,
        days: set[tuple[str, int]],
    ) -> tuple[list[BoundStatement], str]:
        """A new message's statements (its listing day only if not in `days`, which it joins),
        and its payload as stored."""
        day = day_of(c.created_ms)
        values = _record_values(c, state, log, self._cipher)
        statements = [
            self._insert_record.bind(values),
            self._insert_listing.bind((c.app_id, day, c.created_ms, c.message_id)),
        ]
        if (c.app_id, day) not in days:
            days.add((c.app_id, day))
            statements.append(self._insert_day.bind((c.app_id, day)))
        return statements, values[1]

    def update_status(
        self, app_id: str, message_id: str, state: StatusUpdate, log: LogEntry
    ) -> None:
        self._session.execute_async(self.status_statement(app_id, message_id, state, log)).result()

    def update_statuses(
        self,
        writes: Sequence[StatusWrite],
        per_batch: int = STATUS_BATCH_STATEMENTS,
        in_flight: int = STATUS_BATCH_IN_FLIGHT,
    ) -> None:
        """Unlogged batches grouped by replica (cassandra_batches.BatchExecutor): a record
        writer or a releaser settles hundreds of messages a second, and two requests per message
        cost more driver CPU than Cassandra spends applying them. The status statements carry
        their own timestamps (the precedence), which hold inside a batch without one."""
        statements = [self.status_statement(w.app_id, w.message_id, w.state, w.log) for w in writes]
        BatchExecutor(self._session, per_batch, MAX_BATCH_BYTES, in_flight).execute(statements)

    # -- idempotency keys -----------------------------------------------------------------------

    def claim_keys(self, claims: Sequence[KeyClaim], ttl_ms: int) -> builtins.list[KeyHolder]:
        return self.start_claim_keys(claims, ttl_ms).result()

    def start_claim_keys(
        self, claims: Sequence[KeyClaim], ttl_ms: int
    ) -> Future[builtins.list[KeyHolder]]:
        """`claim_keys` without blocking a thread: per distinct key, the record read and then,
        if there is no record, the conditional insert are chained in the driver's callbacks;
        the returned future completes when every key has its holder (a caller on an event
        loop awaits it with `asyncio.wrap_future`)."""
        if self._claim_key is None:
            statement = self._session.prepare(
                "INSERT INTO idempotency_keys (app_id, idempotency_key, message_id, fingerprint,"
                " created_ms) VALUES (?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?"
            )
            statement.serial_consistency_level = ConsistencyLevel.LOCAL_SERIAL
            self._claim_key = statement
        insert, ttl_s = self._claim_key, max(1, -(-ttl_ms // 1000))
        cipher = self._cipher
        done: Future[builtins.list[KeyHolder]] = Future()
        unique: dict[tuple[str, str], KeyClaim] = {}
        for claim in claims:
            unique.setdefault((claim.app_id, claim.idempotency_key), claim)
        held: dict[tuple[str, str], KeyHolder] = {}
        lock = threading.Lock()

        def settle(key: tuple[str, str], holder: KeyHolder) -> None:
            with lock:
                held[key] = holder
                if len(held) == len(unique) and not done.done():
                    done.set_result(_in_order(claims, held))

        def failed(exc: BaseException) -> None:
            with lock:
                if done.done():
                    return
                done.set_exception(exc)

        def start(key: tuple[str, str], claim: KeyClaim) -> None:
            def read(rows: Any) -> None:
                try:
                    claim_unless_recorded(rows)
                except Exception as exc:  # noqa: BLE001 - a driver callback must not raise
                    failed(exc)

            def claim_unless_recorded(rows: Any) -> None:
                view = _view(claim.app_id, claim.message_id, rows[0] if rows else None, cipher)
                if view is not None and view.state.stored:
                    self._start_shown(view).add_done_callback(held_by_shown)
                    return
                if view is not None:
                    settle(key, held_by_record(claim, view))
                    return
                values = (
                    claim.app_id,
                    claim.idempotency_key,
                    claim.message_id,
                    claim.fingerprint,
                    claim.created_ms,
                    ttl_s,
                )
                self._session.execute_async(insert, values).add_callbacks(inserted, failed)

            def held_by_shown(shown: Future[MessageView]) -> None:
                if (exc := shown.exception()) is not None:
                    failed(exc)
                else:
                    settle(key, held_by_record(claim, shown.result()))

            def inserted(rows: Any) -> None:
                try:
                    holder_from(rows[0])
                except Exception as exc:  # noqa: BLE001 - a driver callback must not raise
                    failed(exc)

            def holder_from(row: Any) -> None:
                if row.applied:
                    settle(key, KeyHolder(claim, won=True))
                    return
                holder = KeyClaim(
                    claim.app_id, claim.idempotency_key, row.message_id, row.fingerprint,
                    row.created_ms,
                )  # fmt: skip
                settle(key, KeyHolder(holder, won=False))

            future = self._session.execute_async(
                self._select_message, (claim.app_id, claim.message_id)
            )
            future.add_callbacks(read, failed)

        if not unique:
            done.set_result([])
        for key, claim in unique.items():
            start(key, claim)
        return done

    # -- reads ----------------------------------------------------------------------------------

    def get(self, app_id: str, message_id: str) -> MessageView | None:
        row = self._session.execute(self._select_message, (app_id, message_id)).one()
        return self._shown(_view(app_id, message_id, row, self._cipher))

    def recorded(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        unique = list(dict.fromkeys(keys))
        reads = [self._session.execute_async(self._select_recorded, key) for key in unique]
        found: set[tuple[str, str]] = set()
        for key, read in zip(unique, reads, strict=True):
            row = read.result().one()  # as in `_view`: content and a status written
            if row is not None and row.created_ms is not None and row.status is not None:
                found.add(key)
        return found

    def _shown(self, view: MessageView | None) -> MessageView | None:
        if view is None or not view.state.stored:
            return view
        return shown_view(view, self._release.released_up_to())

    def _start_shown(self, view: MessageView) -> Future[MessageView]:
        """`_shown` for a driver callback, which must not block on another request."""
        shown: Future[MessageView] = Future()

        def derive(found: Future[int]) -> None:
            if (exc := found.exception()) is not None:
                shown.set_exception(exc)
            else:
                shown.set_result(shown_view(view, found.result()))

        self._release.start_released_up_to().add_done_callback(derive)
        return shown

    def logs(self, app_id: str, message_id: str) -> list[LogEntry]:
        """The entries in the record, and the rows of `message_logs` that versions before
        migration 0011 wrote instead (an entry id in both counts once)."""
        key = (app_id, message_id)
        in_record = self._session.execute_async(self._select_log_entries, key)
        old_rows = self._session.execute_async(self._select_logs, key)
        found: dict[tuple[int, str], tuple[str, str | None]] = {}
        for row in old_rows.result():
            found[(row.at_ms, row.entry_id)] = (row.status, row.data)
        record = in_record.result().one()
        if record is not None and record.log_entries:
            found.update(record.log_entries)
        entries = [
            LogEntry(at_ms, entry_id, Status(status), json.loads(data) if data else {})
            for (at_ms, entry_id), (status, data) in sorted(found.items())
        ]
        return with_release_entries(entries, self._release.released_at)

    def list(
        self, app_id: str, status: Status | None, cursor: str | None, limit: int
    ) -> MessagePage:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        after = decode_cursor(cursor) if cursor else None
        found: list[MessageView] = []
        last_scanned: tuple[int, str] | None = None
        batch: list[tuple[int, str]] = []
        for scanned, entry in enumerate(self._listing(app_id, after), start=1):
            batch.append(entry)
            last_scanned = entry
            if len(batch) >= min(limit + 1, _FETCH_SIZE) or scanned >= self._scan_budget:
                found += self._fetch_views(app_id, batch, status)
                batch = []
                if len(found) > limit or scanned >= self._scan_budget:
                    break
        else:
            found += self._fetch_views(app_id, batch, status)
            last_scanned = None  # the listing is exhausted: no more pages
        if len(found) > limit:
            page = found[:limit]
            tail = page[-1].content
            return MessagePage(page, encode_cursor(tail.created_ms, tail.message_id))
        if last_scanned is not None:  # scan budget spent: continue after the last row read
            return MessagePage(found, encode_cursor(*last_scanned))
        return MessagePage(found, None)

    def _listing(self, app_id: str, after: tuple[int, str] | None) -> Iterator[tuple[int, str]]:
        """(created_ms, message_id) of the app's messages, newest first, strictly after `after`."""
        top_day = day_of(after[0]) if after else 2**31 - 1
        for day_row in self._session.execute(self._select_days, (app_id, top_day)):
            if after is not None and day_row.day == top_day:
                rows = self._session.execute(
                    self._select_day_listing_after, (app_id, day_row.day, after[0], after[1])
                )
            else:
                rows = self._session.execute(self._select_day_listing, (app_id, day_row.day))
            for row in rows:
                yield row.created_ms, row.message_id

    def _fetch_views(
        self, app_id: str, entries: Sequence[tuple[int, str]], status: Status | None
    ) -> builtins.list[MessageView]:
        futures = [
            (message_id, self._session.execute_async(self._select_message, (app_id, message_id)))
            for _, message_id in entries
        ]
        views = []
        for message_id, future in futures:
            view = self._shown(_view(app_id, message_id, future.result().one(), self._cipher))
            if view is not None and (status is None or view.state.status is status):
                views.append(view)
        return views


def _in_order(
    claims: Sequence[KeyClaim], held: dict[tuple[str, str], KeyHolder]
) -> list[KeyHolder]:
    """Holders in the order of the claims; a later claim of a key already answered in the same
    call gets the holder, never `won`."""
    holders, answered = [], set()
    for claim in claims:
        key = (claim.app_id, claim.idempotency_key)
        holder = held[key]
        if key in answered:
            holder = KeyHolder(holder.claim, False, holder.status)
        answered.add(key)
        holders.append(holder)
    return holders


def payload_cell(app_id: str, message_id: str) -> bytes:
    """Associated data of a record's payload."""
    return cell("messages.payload_json", app_id, message_id)


def _stored_bytes(payload: str) -> int:
    """An upper bound of a stored payload's UTF-8 size (an envelope is ASCII)."""
    return len(payload) if is_sealed(payload) else len(payload) * 4


def _record_values(
    c: MessageContent, state: StatusUpdate, log: LogEntry, cipher: ColumnCipher
) -> tuple[Any, ...]:
    """A new message's content with its first status. An absent optional content field is left
    unset, not written as null (a null would write a tombstone cell per message for nothing:
    content is never cleared)."""
    status = _status_values(c.app_id, c.message_id, state, log)
    return (
        status[0],
        cipher.seal_payload(c.payload_json, partial(payload_cell, c.app_id, c.message_id)),
        c.send_at_ms,
        c.created_ms,
        UNSET_VALUE if c.idempotency_key is None else c.idempotency_key,
        UNSET_VALUE if c.kafka_key is None else c.kafka_key,
        c.source,
        *status[1:],
    )


def _view(app_id: str, message_id: str, row: Any, cipher: ColumnCipher) -> MessageView | None:
    """A record is visible once both its content and a status have been written."""
    if row is None or row.created_ms is None or row.status is None:
        return None
    content = MessageContent(
        app_id=app_id,
        message_id=message_id,
        payload_json=cipher.open(row.payload_json, partial(payload_cell, app_id, message_id)),
        send_at_ms=row.send_at_ms,
        created_ms=row.created_ms,
        idempotency_key=row.idempotency_key,
        kafka_key=row.kafka_key,
        source=row.source,
    )
    status = Status(row.status)
    state = StatusUpdate(
        status=status,
        generation=row.generation,
        attempt=row.attempt,
        due_ms=row.due_ms,
        at_ms=row.updated_ms,
        lateness_ms=row.lateness_ms,
        http_status=row.last_http_status,
        error=row.last_error,
        stored=stored_ready(status, row.status_written),
    )
    return MessageView(content, state)


def _status_values(
    app_id: str, message_id: str, state: StatusUpdate, log: LogEntry
) -> tuple[Any, ...]:
    """The status write with its log entry: one statement, so one partition write."""
    data = json.dumps(log.data, separators=(",", ":"), sort_keys=True)
    return (
        state.precedence,
        state.status.value,
        state.generation,
        state.attempt,
        state.due_ms,
        state.at_ms,
        state.lateness_ms,
        state.http_status,
        state.error,
        (log.at_ms, log.entry_id),
        (log.status.value, data),
        app_id,
        message_id,
    )


def _wait_all(futures: Sequence[ResponseFuture]) -> None:
    """Wait for every write; raise the first failure (the others still completed or failed)."""
    errors: list[BaseException] = []
    for future in futures:
        try:
            future.result()
        except Exception as exc:  # noqa: BLE001 - collected, the first one is re-raised
            errors.append(exc)
    if errors:
        raise errors[0]
