"""Storage ports. Cassandra adapters and in-memory fakes implement them; one contract suite per
port (tests/contract/) runs against both, so the fakes behave like the real thing.

Precedence (decision 1): every status write carries (status, generation, attempt); a store keeps,
per message, the status group with the highest `precedence(...)`, whatever the order the writes
arrive in. Content writes are idempotent (the same message id always carries the same content).
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from scheduler.domain.idempotency import KeyClaim, KeyHolder, fingerprint
from scheduler.domain.policy import DEFAULT_POLICY, DeliveryPolicy
from scheduler.domain.recurrence import Recurrence
from scheduler.domain.status import Status, precedence
from scheduler.records import DueMessage, ScheduleRequest


@dataclass(frozen=True)
class MessageContent:
    """What the client scheduled. Written once by ingest, again identically by the bucketer."""

    app_id: str
    message_id: str
    payload_json: str
    send_at_ms: int
    created_ms: int
    idempotency_key: str | None = None
    kafka_key: str | None = None
    source: str = "http"

    @classmethod
    def of_request(cls, r: ScheduleRequest) -> MessageContent:
        return cls(
            app_id=r.app_id,
            message_id=r.message_id,
            payload_json=r.payload_json,
            send_at_ms=r.send_at_ms,
            created_ms=r.created_ms,
            idempotency_key=r.idempotency_key,
            kafka_key=r.kafka_key,
            source=r.source,
        )


@dataclass(frozen=True)
class StatusUpdate:
    status: Status
    generation: int
    attempt: int
    due_ms: int
    at_ms: int
    lateness_ms: int | None = None
    http_status: int | None = None
    error: str | None = None
    # A READY written by the store that put the row in its bucket (domain.status.precedence);
    # on a read, whether the READY was so written.
    stored: bool = False

    @property
    def precedence(self) -> int:
        return precedence(self.status, self.generation, self.attempt, self.stored)


@dataclass(frozen=True)
class LogEntry:
    """One line of a message's log. `entry_id` is deterministic per event (replays upsert)."""

    at_ms: int
    entry_id: str
    status: Status
    data: dict[str, object] = field(default_factory=dict)


class StatusWrite(NamedTuple):
    """One `update_status` of many (`update_statuses`)."""

    app_id: str
    message_id: str
    state: StatusUpdate
    log: LogEntry


@dataclass(frozen=True)
class MessageView:
    content: MessageContent
    state: StatusUpdate


def held_by_record(claim: KeyClaim, view: MessageView) -> KeyHolder:
    """The holder of a key whose message record exists: the record, whatever claims say."""
    c = view.content
    recorded = KeyClaim(
        app_id=claim.app_id,
        idempotency_key=claim.idempotency_key,
        message_id=c.message_id,
        fingerprint=fingerprint(c.payload_json, c.send_at_ms, c.kafka_key),
        created_ms=c.created_ms,
    )
    return KeyHolder(recorded, won=False, status=view.state.status)


# A filtered list reads at most this many listing rows per page (per call), so a rare status
# never turns one request into a scan of the whole history; the page then ends early, short or
# even empty, with a cursor, and the client continues from there.
LIST_SCAN_BUDGET = 2_000


@dataclass(frozen=True)
class MessagePage:
    items: Sequence[MessageView]
    next_cursor: str | None  # opaque; pass back as `cursor` for the next (older) page


@dataclass(frozen=True)
class Application:
    """Where and how an app's due messages are delivered (table `applications`)."""

    app_id: str
    owner_id: str
    name: str
    type: str  # "REST" | "KAFKA"
    endpoint: str  # http(s) URL for REST, topic name for KAFKA
    description: str | None = None
    auth_header_name: str | None = None
    auth_header_value: str | None = None
    send_back_format: str = "payload_field"  # | "unwrap_json"
    signing_secret: str = ""
    previous_signing_secret: str | None = None
    previous_secret_valid_until_ms: int | None = None
    shards: int | None = None  # None: SchedulingSettings.shards_per_bucket
    created_ms: int = 0
    updated_ms: int = 0
    deleted_ms: int | None = None  # tombstone: pending messages are aborted lazily
    policy: DeliveryPolicy = DEFAULT_POLICY  # overrides of the dispatcher's settings
    # Set only by pause/resume (`AppStore.set_deliveries_paused`), never by `put_app`.
    deliveries_paused: bool = False
    # Where each message that ends FAILED is also sent (None: nowhere): REST URL or topic.
    failure_type: str | None = None  # "REST" | "KAFKA"
    failure_endpoint: str | None = None


@dataclass(frozen=True)
class Schedule:
    """A recurring schedule (docs/SCHEDULES.md): its timing, what each occurrence delivers, and
    where the occurrence runner is (`cursor_ms`: the last instant it created, None before the
    first)."""

    app_id: str
    schedule_id: str
    recurrence: Recurrence
    payload_json: str
    created_ms: int
    updated_ms: int
    kafka_key: str | None = None
    paused: bool = False
    deleted_ms: int | None = None
    cursor_ms: int | None = None
    # Each occurrence is delivered at an instant within [occurrence, occurrence + this]
    # (scheduler.domain.window); None: at the occurrence itself.
    flexible_window_ms: int | None = None


@dataclass(frozen=True)
class ScheduleTiming:
    """What the occurrence runner needs of a schedule to know when to look at it again: a
    schedule without its payload, which a pass over every schedule need not read."""

    app_id: str
    schedule_id: str
    recurrence: Recurrence
    paused: bool = False
    cursor_ms: int | None = None
    deleted_ms: None = None  # a timing is only read for a live schedule


@dataclass(frozen=True, order=True)
class ScheduleChange:
    written_ms: int  # the writer's clock when it wrote the change
    app_id: str
    schedule_id: str


@dataclass(frozen=True)
class SchedulePage:
    items: Sequence[Schedule]
    next_cursor: str | None


class ScheduleStore(Protocol):
    def put(self, schedule: Schedule) -> None:
        """Create or update the definition (and the paused flag), ordered by `updated_ms`: like
        every write of the control plane, one issued before the stored cells' last change is
        dropped. `deleted_ms` and `cursor_ms` are not written: the stored ones stay (a put never
        undeletes, and never moves the runner's cursor)."""

    def update_definition(self, schedule: Schedule) -> None:
        """Write the timing, payload, Kafka key and `updated_ms` of an existing schedule, and
        nothing else: a pause that lands between the caller's read and this write stays."""

    def get(self, app_id: str, schedule_id: str) -> Schedule | None:
        """The schedule, a deleted one too (check `deleted_ms`); None if it never existed."""

    def list(self, app_id: str, cursor: str | None, limit: int) -> SchedulePage:
        """The app's schedules that are not deleted, by id, `limit` at most per page. Raises
        ValueError for a cursor this store did not make."""

    def set_paused(self, app_id: str, schedule_id: str, paused: bool, at_ms: int) -> None:
        """Pause or resume an existing schedule; nothing for an unknown one. Changes are ordered
        by `at_ms`, not by arrival: one issued before the stored flag's last change is dropped
        (a tie: paused wins)."""

    def delete(self, app_id: str, schedule_id: str, at_ms: int) -> None:
        """Mark it deleted (the row stays, so the runner sees it); nothing for an unknown one."""

    def advance_cursor(self, app_id: str, schedule_id: str, cursor_ms: int) -> None:
        """Store the runner's cursor. It never moves back: a lower value than the stored one,
        arriving in any order, changes nothing. Nothing for an unknown schedule."""

    def get_many(self, app_id: str, schedule_ids: Sequence[str]) -> dict[str, Schedule]:
        """`get` of several schedules of one app, in as few reads as the store can: the ones
        that exist (deleted ones too), by id. A stored timing this version cannot read is left
        out, as in `scan_timings`."""

    def advance_cursors(self, app_id: str, cursors: Mapping[str, int]) -> None:
        """`advance_cursor` of several schedules of one app (schedule id: cursor) at once."""

    def scan_timings(self) -> Iterator[ScheduleTiming]:
        """The timing of every schedule that is not deleted, of every app, in no particular
        order (the occurrence runner's pass; payloads are not read). A stored timing this
        version cannot read (written by a newer one) is skipped, not raised."""

    def changed_since(self, since_ms: int) -> Iterator[ScheduleChange]:
        """The changes written at `since_ms` or later, by the clock of this store's process:
        one per `put`, `update_definition`, `set_paused` and `delete` (not per cursor), each
        recorded after the schedule's own write, kept for an hour at least. The occurrence
        runner reads them to re-read only the schedules that changed."""


class AppLookup(Protocol):
    """What the pipeline needs of applications (ingest owns the full control-plane store)."""

    def get_app(self, app_id: str) -> Application | None:
        """The app, including a deleted one (check `deleted_ms`); None if it never existed."""


class MessageStore(Protocol):
    def save(self, content: MessageContent, state: StatusUpdate, log: LogEntry) -> None:
        """Upsert the record (content + status by precedence), its listing entry and a log entry."""

    def update_status(
        self, app_id: str, message_id: str, state: StatusUpdate, log: LogEntry
    ) -> None:
        """Write a status by precedence and a log entry. Unknown messages are not created: a
        status that overtakes its content is kept, but invisible until the content is saved."""

    def update_statuses(self, writes: Sequence[StatusWrite]) -> None:
        """`update_status` for many messages, in far fewer requests. Not atomic: every write is
        tried, then the first failure is raised; each is idempotent, so the caller retries all."""

    def get(self, app_id: str, message_id: str) -> MessageView | None:
        """The record once content and a status are written; a stored READY below the release
        watermark shows as QUEUED (domain.status.shown_status)."""

    def recorded(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Of these (app id, message id) keys, those whose record `get` would show: one
        round trip for all (the reads travel concurrently), not one per key."""

    def logs(self, app_id: str, message_id: str) -> list[LogEntry]:
        """Log entries in time order (then entry id). A stored entry whose bucket was released
        since is followed by its "released" entry, from the bucket's release time."""

    def list(
        self, app_id: str, status: Status | None, cursor: str | None, limit: int
    ) -> MessagePage:
        """The app's messages, newest (by created_ms, then id) first, optionally of one status.
        A page may be short, even empty, and still carry a cursor: a page scans at most the
        store's scan budget of listing rows (LIST_SCAN_BUDGET by default)."""

    def claim_keys(self, claims: Sequence[KeyClaim], ttl_ms: int) -> builtins.list[KeyHolder]:
        """Claim idempotency keys; per claim, in order, who holds its key.

        A key whose message record exists is held by that record (`won` False, the record's
        status; the claim rebuilt from its content). Otherwise the claim is inserted only if
        no live claim holds the key (a conditional write: of concurrent claimers of one key,
        in this process or any other, exactly one gets `won` True); a claim is kept `ttl_ms`.
        Claims of one key within one call: the first is tried, the others get its holder."""


class BucketStore(Protocol):
    """Long-horizon storage: messages in (bucket, app, shard) partitions, the index of non-empty
    buckets, and the release state (progress watermark and claim).

    The release protocol (docs/ARCHITECTURE.md, "The release path: claim, index, fencing"):
    - a store writes the row, its partition listing and its index entries (`store`), waits
      until they are durable, then reads `claimed_up_to` and sends the message directly if its
      bucket is claimed;
    - the releaser raises the claim (`claim`) before it reads the index or lists a bucket.
    """

    def store(self, bucket_ms: int, shard: int, message: DueMessage) -> None:
        """Idempotent: the row, its partition listing and the index entries of its bucket and
        day, all durable when this returns. Storing the same message twice keeps one row."""

    def partitions(self, bucket_ms: int) -> list[tuple[str, int]]:
        """The (app_id, shard) partitions that bucket has, sorted."""

    def read(self, bucket_ms: int, app_id: str, shard: int) -> Iterator[DueMessage]:
        """A partition's messages in (due_ms, message_id) order, paged (bounded memory)."""

    def remove(self, bucket_ms: int, shard: int, message: DueMessage) -> None:
        """Delete one stored message (abort, reschedule)."""

    def drop_partition(self, bucket_ms: int, app_id: str, shard: int) -> None:
        """Delete a released partition and its listing entry."""

    # -- the index of non-empty buckets ----------------------------------------------------

    def stored_buckets(self, from_ms: int, until_ms: int, limit: int) -> list[int]:
        """Up to `limit` indexed buckets in [from_ms, until_ms), ascending. Reads only the days
        and buckets that have entries: the cost follows what is stored, not the range."""

    def forget_day(self, day: int) -> None:
        """Drop the index entries of a UTC day whose buckets are all claimed and released."""

    def listed_buckets(self) -> Iterator[int]:
        """Every bucket with a partition listing (a full scan: the upgrade backfill only)."""

    def index_bucket(self, bucket_ms: int) -> None:
        """Write the index entries of one bucket (the upgrade backfill)."""

    def index_complete(self) -> bool:
        """Whether every stored bucket is known to be indexed (a fresh keyspace, or the
        upgrade backfill ran after the last writer of the previous version stopped)."""

    def mark_index_complete(self, now_ms: int) -> None: ...

    def mark_index_incomplete(self) -> None:
        """Writers of a version without the index ran again (a rollback): walk until the next
        backfill."""

    # -- release state ---------------------------------------------------------------------

    def watermark(self) -> int:
        """Released-up-to: every bucket starting before it was released. 0 if nothing yet."""

    def advance_watermark(self, released_up_to_ms: int, now_ms: int) -> None:
        """Move the watermark forward (never backwards)."""

    def claimed_up_to(self) -> int:
        """Every bucket starting before it is claimed by a releaser (being or already released):
        the larger of the claim and the watermark. 0 if nothing yet."""

    def claim_only(self) -> int:
        """The claim row alone (0 if none). Below the watermark only if a releaser of a version
        without claims has led since (a rollback)."""

    def claim(self, up_to_ms: int, now_ms: int) -> None:
        """Raise the claim (never lowers it); durable when this returns."""

    def mark_released(self, bucket_ms: int, now_ms: int) -> None:
        """Record when a bucket was released into the ring (before the watermark passes it):
        a message's "released" log entry comes from here, not from a write per message."""


class ReleaseProgress(Protocol):
    """What readers of records need of the release: how far it went, and when."""

    def released_up_to(self) -> int:
        """The release watermark (0 if none), possibly a moment old: it only grows, so an old
        value shows a released message as READY for a moment, never the reverse."""

    def released_at(self, bucket_ms: int) -> int | None:
        """When the bucket was released (`BucketStore.mark_released`), None if not recorded."""
