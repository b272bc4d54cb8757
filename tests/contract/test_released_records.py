"""Contract of what readers derive from the release (scheduler.store.release_view), for the fakes
and the Cassandra adapters: the releaser writes nothing per message, a stored READY below the
watermark reads QUEUED, and a message's log gets its "released" entry from its bucket's release.
"""

from __future__ import annotations

from scheduler.domain.idempotency import KeyClaim
from scheduler.domain.status import Status
from scheduler.store.ports import LogEntry, MessageContent, StatusUpdate

from .conftest import ReleaseWorld

MINUTE = 60_000
T0 = 1_893_499_200_000  # a bucket boundary
APP = "app-a"


def content(message_id: str, due: int) -> MessageContent:
    return MessageContent(
        app_id=APP,
        message_id=message_id,
        payload_json="{}",
        send_at_ms=due,
        created_ms=T0 - MINUTE,
        idempotency_key=None,
        kafka_key=None,
        source="http",
    )


def accept(w: ReleaseWorld, message_id: str, due: int, generation: int = 0) -> None:
    """What ingest writes (and a redrive or reschedule): READY, not stored yet."""
    ready = StatusUpdate(Status.READY, generation, 1, due, T0 - MINUTE)
    entry = LogEntry(T0 - MINUTE, f"{generation}:1:scheduled", Status.READY, {})
    w.messages.save(content(message_id, due), ready, entry)


def store(w: ReleaseWorld, message_id: str, due: int, at: int = T0 - MINUTE) -> None:
    """What the bucketer writes with the row in its bucket: a stored READY."""
    bucket = due - due % MINUTE
    ready = StatusUpdate(Status.READY, 0, 1, due, at, stored=True)
    entry = LogEntry(at, "0:1:scheduled:stored", Status.READY, {"due_ms": due, "bucket_ms": bucket})
    w.messages.save(content(message_id, due), ready, entry)


def status(w: ReleaseWorld, message_id: str) -> Status:
    view = w.messages.get(APP, message_id)
    assert view is not None
    return view.state.status


def listed(w: ReleaseWorld, wanted: Status) -> list[str]:
    return [v.content.message_id for v in w.messages.list(APP, wanted, None, 50).items]


def test_a_stored_message_reads_queued_once_the_watermark_passes_its_bucket(
    release_world: ReleaseWorld,
) -> None:
    w = release_world
    store(w, "01ARZ3NDEKTSV4RRFFQ69G5FA1", T0 + 30_000)
    store(w, "01ARZ3NDEKTSV4RRFFQ69G5FA2", T0 + MINUTE + 30_000)
    assert status(w, "01ARZ3NDEKTSV4RRFFQ69G5FA1") is Status.READY
    w.buckets.advance_watermark(T0 + MINUTE, T0)
    assert status(w, "01ARZ3NDEKTSV4RRFFQ69G5FA1") is Status.QUEUED
    assert status(w, "01ARZ3NDEKTSV4RRFFQ69G5FA2") is Status.READY
    assert listed(w, Status.QUEUED) == ["01ARZ3NDEKTSV4RRFFQ69G5FA1"]
    assert listed(w, Status.READY) == ["01ARZ3NDEKTSV4RRFFQ69G5FA2"]


def test_a_message_accepted_but_not_stored_reads_ready_below_the_watermark(
    release_world: ReleaseWorld,
) -> None:
    w = release_world
    w.buckets.advance_watermark(T0 + MINUTE, T0)
    accept(w, "01ARZ3NDEKTSV4RRFFQ69G5FA3", T0 + 30_000)
    assert status(w, "01ARZ3NDEKTSV4RRFFQ69G5FA3") is Status.READY
    assert listed(w, Status.QUEUED) == []


def test_the_store_wins_over_the_acceptance_whatever_the_order(
    release_world: ReleaseWorld,
) -> None:
    w = release_world
    w.buckets.advance_watermark(T0 + MINUTE, T0)
    store(w, "01ARZ3NDEKTSV4RRFFQ69G5FA4", T0 + 30_000)
    accept(w, "01ARZ3NDEKTSV4RRFFQ69G5FA4", T0 + 30_000)  # ingest's write lands after
    assert status(w, "01ARZ3NDEKTSV4RRFFQ69G5FA4") is Status.QUEUED


def test_a_new_generation_not_yet_stored_reads_ready(release_world: ReleaseWorld) -> None:
    w = release_world
    w.buckets.advance_watermark(T0 + MINUTE, T0)
    store(w, "01ARZ3NDEKTSV4RRFFQ69G5FA5", T0 + 30_000)
    accept(w, "01ARZ3NDEKTSV4RRFFQ69G5FA5", T0 + 40_000, generation=1)  # a reschedule
    assert status(w, "01ARZ3NDEKTSV4RRFFQ69G5FA5") is Status.READY


def test_a_delivery_or_an_abort_reads_as_written(release_world: ReleaseWorld) -> None:
    w = release_world
    w.buckets.advance_watermark(T0 + MINUTE, T0)
    for message_id, final in (
        ("01ARZ3NDEKTSV4RRFFQ69G5FA6", Status.SENT),
        ("01ARZ3NDEKTSV4RRFFQ69G5FA7", Status.ABORTED),
    ):
        store(w, message_id, T0 + 30_000)
        done = StatusUpdate(final, 0, 1, T0 + 30_000, T0 + 31_000)
        w.messages.update_status(APP, message_id, done, LogEntry(T0 + 31_000, "0:1:x", final))
        assert status(w, message_id) is final


def test_the_log_says_when_the_bucket_was_released(release_world: ReleaseWorld) -> None:
    w = release_world
    message_id = "01ARZ3NDEKTSV4RRFFQ69G5FA8"
    store(w, message_id, T0 + 30_000)
    assert [e.entry_id for e in w.messages.logs(APP, message_id)] == ["0:1:scheduled:stored"]
    w.buckets.mark_released(T0, T0 - 30_000)
    w.buckets.advance_watermark(T0 + MINUTE, T0 - 30_000)
    entries = w.messages.logs(APP, message_id)
    assert [(e.entry_id, e.at_ms, e.status) for e in entries] == [
        ("0:1:scheduled:stored", T0 - MINUTE, Status.READY),
        ("0:1:released", T0 - 30_000, Status.QUEUED),
    ]


def test_no_released_entry_for_a_bucket_released_before_the_row_was_stored(
    release_world: ReleaseWorld,
) -> None:
    """Such a row was sent directly by its store (its own "queued" entry says so)."""
    w = release_world
    message_id = "01ARZ3NDEKTSV4RRFFQ69G5FA9"
    w.buckets.mark_released(T0, T0 - 240_000)
    store(w, message_id, T0 + 30_000, at=T0 - 100_000)  # its request came after the release
    assert [e.entry_id for e in w.messages.logs(APP, message_id)] == ["0:1:scheduled:stored"]


def test_no_released_entry_for_a_message_aborted_before_the_release(
    release_world: ReleaseWorld,
) -> None:
    w = release_world
    message_id = "01ARZ3NDEKTSV4RRFFQ69G5FAA"
    store(w, message_id, T0 + 30_000)
    aborted = StatusUpdate(Status.ABORTED, 0, 1, T0 + 30_000, T0 - 50_000)
    entry = LogEntry(T0 - 50_000, "0:aborted", Status.ABORTED, {"by": "api"})
    w.messages.update_status(APP, message_id, aborted, entry)
    w.buckets.mark_released(T0, T0 - 30_000)
    ids = [e.entry_id for e in w.messages.logs(APP, message_id)]
    assert ids == ["0:1:scheduled:stored", "0:aborted"]


def test_a_release_the_previous_version_logged_is_not_logged_twice(
    release_world: ReleaseWorld,
) -> None:
    """An old releaser marked the message QUEUED and wrote the "released" entry itself."""
    w = release_world
    message_id = "01ARZ3NDEKTSV4RRFFQ69G5FAB"
    store(w, message_id, T0 + 30_000)
    queued = StatusUpdate(Status.QUEUED, 0, 1, T0 + 30_000, T0 - 29_000)
    entry = LogEntry(T0 - 29_000, "0:1:released", Status.QUEUED, {})
    w.messages.update_status(APP, message_id, queued, entry)
    w.buckets.mark_released(T0, T0 - 30_000)
    entries = [(e.entry_id, e.at_ms) for e in w.messages.logs(APP, message_id)]
    assert entries == [("0:1:scheduled:stored", T0 - MINUTE), ("0:1:released", T0 - 29_000)]
    assert status(w, message_id) is Status.QUEUED


def test_a_repeated_key_answers_with_the_status_a_reader_shows(
    release_world: ReleaseWorld,
) -> None:
    w = release_world
    message_id = "01ARZ3NDEKTSV4RRFFQ69G5FAC"
    store(w, message_id, T0 + 30_000)
    w.buckets.advance_watermark(T0 + MINUTE, T0)
    claim = KeyClaim(APP, "order-1", message_id, "fingerprint", T0 - MINUTE)
    [holder] = w.messages.claim_keys([claim], ttl_ms=60_000)
    assert (holder.won, holder.status) == (False, Status.QUEUED)
