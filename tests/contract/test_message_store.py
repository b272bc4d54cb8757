"""Contract of MessageStore (scheduler.store.ports), for the fake and the Cassandra adapter."""

from __future__ import annotations

from dataclasses import replace

from scheduler.domain.status import Status
from scheduler.store.ports import (
    LogEntry,
    MessageContent,
    MessageStore,
    StatusUpdate,
    StatusWrite,
)

DAY = 86_400_000
T0 = 1_893_499_200_000


def content(
    message_id: str, app: str = "app-a", created: int = T0, payload: str = '{"n":1}'
) -> MessageContent:
    return MessageContent(
        app_id=app,
        message_id=message_id,
        payload_json=payload,
        send_at_ms=created + 60_000,
        created_ms=created,
        idempotency_key=None,
        kafka_key=None,
        source="http",
    )


def state(
    status: Status, generation: int = 0, attempt: int = 1, at: int = T0, **kw: object
) -> StatusUpdate:
    return StatusUpdate(status, generation, attempt, due_ms=T0 + 60_000, at_ms=at, **kw)  # type: ignore[arg-type]


def log(status: Status, entry: str, at: int = T0) -> LogEntry:
    return LogEntry(at_ms=at, entry_id=entry, status=status, data={"note": entry})


def test_save_then_get(message_store: MessageStore) -> None:
    c = content("01ARZ3NDEKTSV4RRFFQ69G5FAV", payload="0")
    message_store.save(c, state(Status.READY), log(Status.READY, "0:1:scheduled"))
    view = message_store.get("app-a", c.message_id)
    assert view is not None
    assert view.content == c
    assert view.state == state(Status.READY)


def test_unknown_and_other_apps_messages_are_not_found(message_store: MessageStore) -> None:
    c = content("01ARZ3NDEKTSV4RRFFQ69G5FAW")
    message_store.save(c, state(Status.READY), log(Status.READY, "0:1:scheduled"))
    assert message_store.get("app-b", c.message_id) is None
    assert message_store.get("app-a", "01ARZ3NDEKTSV4RRFFQ69G5FAX") is None
    assert message_store.logs("app-b", c.message_id) == []


def test_status_never_moves_backwards_whatever_the_arrival_order(
    message_store: MessageStore,
) -> None:
    c = content("01ARZ3NDEKTSV4RRFFQ69G5FB0")
    message_store.save(c, state(Status.READY), log(Status.READY, "0:1:scheduled"))
    sent = state(Status.SENT, at=T0 + 61_000, lateness_ms=12, http_status=204)
    message_store.update_status(
        "app-a", c.message_id, sent, log(Status.SENT, "0:1:sent", T0 + 61_000)
    )
    # late and replayed writes from slower components
    message_store.update_status(
        "app-a", c.message_id, state(Status.QUEUED), log(Status.QUEUED, "0:1:queued")
    )
    message_store.save(c, state(Status.READY), log(Status.READY, "0:1:scheduled"))
    view = message_store.get("app-a", c.message_id)
    assert view is not None and view.state == sent


def test_a_later_attempt_beats_an_earlier_one(message_store: MessageStore) -> None:
    c = content("01ARZ3NDEKTSV4RRFFQ69G5FB1")
    message_store.save(c, state(Status.QUEUED, attempt=2), log(Status.QUEUED, "0:2:queued"))
    message_store.update_status(
        "app-a", c.message_id, state(Status.QUEUED, attempt=1), log(Status.QUEUED, "0:1:queued")
    )
    view = message_store.get("app-a", c.message_id)
    assert view is not None and view.state.attempt == 2


def test_redrive_generation_beats_the_failed_one(message_store: MessageStore) -> None:
    c = content("01ARZ3NDEKTSV4RRFFQ69G5FB2")
    failed = state(Status.FAILED, attempt=5, http_status=500, error="server error")
    message_store.save(c, failed, log(Status.FAILED, "0:5:failed"))
    redriven = state(Status.READY, generation=1, attempt=1, at=T0 + 5)
    message_store.update_status(
        "app-a", c.message_id, redriven, log(Status.READY, "1:1:redriven", T0 + 5)
    )
    message_store.update_status("app-a", c.message_id, failed, log(Status.FAILED, "0:5:failed"))
    view = message_store.get("app-a", c.message_id)
    assert view is not None and view.state == redriven


def test_optional_fields_are_cleared_by_a_winning_write(message_store: MessageStore) -> None:
    c = content("01ARZ3NDEKTSV4RRFFQ69G5FB3")
    message_store.save(
        c, state(Status.FAILED, http_status=500, error="boom"), log(Status.FAILED, "0:1:failed")
    )
    message_store.update_status(
        "app-a", c.message_id, state(Status.READY, generation=1), log(Status.READY, "1:1:redriven")
    )
    view = message_store.get("app-a", c.message_id)
    assert view is not None
    assert (view.state.http_status, view.state.error, view.state.lateness_ms) == (None, None, None)


def test_update_of_an_unknown_message_creates_nothing(message_store: MessageStore) -> None:
    message_store.update_status(
        "app-a", "01ARZ3NDEKTSV4RRFFQ69G5FB4", state(Status.SENT), log(Status.SENT, "0:1:sent")
    )
    assert message_store.get("app-a", "01ARZ3NDEKTSV4RRFFQ69G5FB4") is None


def test_a_status_that_overtakes_its_content_is_kept(message_store: MessageStore) -> None:
    c = content("01ARZ3NDEKTSV4RRFFQ69G5FB6")
    sent = state(Status.SENT, lateness_ms=3)
    message_store.update_status("app-a", c.message_id, sent, log(Status.SENT, "0:1:sent"))
    assert message_store.get("app-a", c.message_id) is None
    message_store.save(c, state(Status.READY), log(Status.READY, "0:1:scheduled"))
    view = message_store.get("app-a", c.message_id)
    assert view is not None and view.state == sent


def test_recorded_finds_the_records_get_shows_in_one_call(message_store: MessageStore) -> None:
    saved = content("01ARZ3NDEKTSV4RRFFQ69G5FR1")
    message_store.save(saved, state(Status.READY), log(Status.READY, "0:1:scheduled"))
    status_only = "01ARZ3NDEKTSV4RRFFQ69G5FR2"  # a status that overtook its content: not shown
    message_store.update_status("app-a", status_only, state(Status.SENT), log(Status.SENT, "s"))
    keys = [
        ("app-a", saved.message_id),
        ("app-b", saved.message_id),
        ("app-a", status_only),
        ("app-a", "01ARZ3NDEKTSV4RRFFQ69G5FR3"),
        ("app-a", saved.message_id),
    ]
    assert message_store.recorded(keys) == {("app-a", saved.message_id)}
    assert {k for k in keys if message_store.get(*k) is not None} == {("app-a", saved.message_id)}
    assert message_store.recorded([]) == set()


def test_logs_are_ordered_and_replays_do_not_duplicate(message_store: MessageStore) -> None:
    c = content("01ARZ3NDEKTSV4RRFFQ69G5FB5")
    message_store.save(c, state(Status.READY), log(Status.READY, "0:1:scheduled", T0))
    message_store.update_status(
        "app-a", c.message_id, state(Status.SENT), log(Status.SENT, "0:1:sent", T0 + 20)
    )
    message_store.update_status(
        "app-a", c.message_id, state(Status.QUEUED), log(Status.QUEUED, "0:1:queued", T0 + 10)
    )
    message_store.save(c, state(Status.READY), log(Status.READY, "0:1:scheduled", T0))
    entries = message_store.logs("app-a", c.message_id)
    assert [e.entry_id for e in entries] == ["0:1:scheduled", "0:1:queued", "0:1:sent"]
    assert entries[0] == log(Status.READY, "0:1:scheduled", T0)


def test_many_status_writes_in_one_call_act_as_one_by_one(message_store: MessageStore) -> None:
    """update_statuses, across several batches: each write by precedence whatever its place in
    the call, its log entry kept, an unknown message not created."""
    ids = _ids(60, "01ARZ3NDEKTSV4RRFFQ69M")
    for message_id in ids:
        message_store.save(content(message_id), state(Status.READY), log(Status.READY, "0:1:s"))
    unknown = "01ARZ3NDEKTSV4RRFFQ69MZZZZ"
    sent = state(Status.SENT, lateness_ms=4)
    writes = [StatusWrite("app-a", i, sent, log(Status.SENT, "0:1:sent", T0 + 9)) for i in ids]
    # A QUEUED of the first message after its SENT in the same call: SENT still wins.
    writes.append(
        StatusWrite("app-a", ids[0], state(Status.QUEUED), log(Status.QUEUED, "0:1:q", T0 + 5))
    )
    writes.append(StatusWrite("app-a", unknown, sent, log(Status.SENT, "0:1:sent")))
    message_store.update_statuses(writes)
    for message_id in ids:
        view = message_store.get("app-a", message_id)
        assert view is not None and view.state == sent, message_id
    assert [e.entry_id for e in message_store.logs("app-a", ids[0])] == [
        "0:1:s",
        "0:1:q",
        "0:1:sent",
    ]
    assert [e.entry_id for e in message_store.logs("app-a", ids[-1])] == ["0:1:s", "0:1:sent"]
    assert message_store.get("app-a", unknown) is None
    message_store.update_statuses([])


def _ids(n: int, prefix: str) -> list[str]:
    return [f"{prefix}{i:05d}".ljust(26, "0")[:26] for i in range(n)]


def test_list_is_newest_first_paged_filtered_and_app_scoped(message_store: MessageStore) -> None:
    ids = _ids(23, "01BX")
    for i, message_id in enumerate(ids):
        # spread over several UTC days, newest last
        created = T0 - 3 * DAY + i * (DAY // 7)
        status = Status.SENT if i % 3 == 0 else Status.READY
        message_store.save(content(message_id, created=created), state(status), log(status, "x"))
    message_store.save(
        content(_ids(1, "01BY")[0], app="app-b"), state(Status.READY), log(Status.READY, "x")
    )

    seen: list[str] = []
    cursor = None
    while True:
        page = message_store.list("app-a", None, cursor, 5)
        assert len(page.items) <= 5
        seen += [v.content.message_id for v in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == list(reversed(ids))

    sent = message_store.list("app-a", Status.SENT, None, 100)
    assert [v.content.message_id for v in sent.items] == [ids[i] for i in reversed(range(0, 23, 3))]
    assert sent.next_cursor is None

    first = message_store.list("app-a", Status.SENT, None, 2)
    rest = message_store.list("app-a", Status.SENT, first.next_cursor, 100)
    assert [v.content.message_id for v in [*first.items, *rest.items]] == [
        v.content.message_id for v in sent.items
    ]

    assert message_store.list("app-c", None, None, 10).items == []


def test_equal_precedence_writes_merge_cell_by_cell_whatever_the_order(
    message_store: MessageStore,
) -> None:
    # Terminal statuses ignore the attempt, so two aborts of one generation tie: an API abort
    # and the app-deletion abort of a later attempt. Cassandra keeps, cell by cell, the larger
    # value, and a null (tombstone) beats a value; the outcome must not depend on the order.
    by_client = state(Status.ABORTED, attempt=1, at=T0 + 100, lateness_ms=4, error="by client")
    by_deletion = state(Status.ABORTED, attempt=2, at=T0 + 50, error="app deleted")
    merged = state(Status.ABORTED, attempt=2, at=T0 + 100, lateness_ms=None, error="by client")
    for message_id, writes in (
        ("01ARZ3NDEKTSV4RRFFQ69G5FC0", (by_client, by_deletion)),
        ("01ARZ3NDEKTSV4RRFFQ69G5FC1", (by_deletion, by_client)),
    ):
        message_store.save(content(message_id), state(Status.READY), log(Status.READY, "r"))
        for write in writes:
            message_store.update_status("app-a", message_id, write, log(Status.ABORTED, "a"))
        view = message_store.get("app-a", message_id)
        assert view is not None and view.state == merged, message_id


def test_a_content_write_keeps_the_optional_fields_it_does_not_carry(
    message_store: MessageStore,
) -> None:
    # Absent optional content is left unset (no tombstone), so an earlier value survives.
    keyed = replace(content("01ARZ3NDEKTSV4RRFFQ69G5FC2"), idempotency_key="k-1", kafka_key="kk")
    message_store.save(keyed, state(Status.READY), log(Status.READY, "r"))
    message_store.save(
        replace(keyed, idempotency_key=None, kafka_key=None),
        state(Status.READY),
        log(Status.READY, "r"),
    )
    view = message_store.get("app-a", keyed.message_id)
    assert view is not None and view.content == keyed


def _page_through(
    store: MessageStore, status: Status | None, limit: int
) -> tuple[list[str], list[int]]:
    """Every id the pages give, and the size of each page that came with a cursor."""
    seen: list[str] = []
    continued: list[int] = []
    cursor = None
    for _ in range(100):
        page = store.list("app-a", status, cursor, limit)
        assert len(page.items) <= limit
        seen += [v.content.message_id for v in page.items]
        cursor = page.next_cursor
        if cursor is None:
            return seen, continued
        continued.append(len(page.items))
    raise AssertionError("the cursor never ran out")


def test_a_spent_scan_budget_ends_the_page_early_and_the_cursor_goes_on(
    budgeted_message_store: MessageStore,
) -> None:
    store = budgeted_message_store  # scans SMALL_SCAN_BUDGET (7) listing rows per page
    ids = _ids(23, "01CX")
    rare = {0, 11, 22}
    for i, message_id in enumerate(ids):
        created = T0 - 2 * DAY + i * (DAY // 9)
        status = Status.SENT if i in rare else Status.READY
        store.save(content(message_id, created=created), state(status), log(status, "x"))

    sent, continued = _page_through(store, Status.SENT, 2)
    assert sent == [ids[i] for i in sorted(rare, reverse=True)]
    # rows 22..16 hold one SENT, 15..9 one, 8..2 none: short pages, one empty, all with a cursor
    assert continued == [1, 1, 0]

    everything, continued = _page_through(store, None, 10)
    assert everything == list(reversed(ids))
    assert continued == [7, 7, 7]
