"""What a reader of records derives from the release instead of a write per released message.

The releaser writes nothing per message (docs/ARCHITECTURE.md, "Released messages: no write per
message"): a record stays READY, stamped as stored by the write that put its row in a bucket,
and the release watermark and the bucket's release time say the rest. Both store adapters (and
their fakes) read through these two functions, so every reader shows the same thing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from scheduler.domain.status import Status, shown_status
from scheduler.store.ports import LogEntry, MessageView

RELEASED_EVENT = "released"


def shown_view(view: MessageView, released_up_to_ms: int) -> MessageView:
    """The view with the status a reader shows (domain.status.shown_status); the same view
    when that is the status written."""
    state = view.state
    status = shown_status(state.status, state.stored, state.due_ms, released_up_to_ms)
    if status is state.status:
        return view
    return MessageView(view.content, dataclasses.replace(state, status=status))


def with_release_entries(
    entries: Sequence[LogEntry], released_at: Callable[[int], int | None]
) -> list[LogEntry]:
    """The log with a "released" entry after each stored entry whose bucket was released after
    it was stored, unless its generation was aborted by then (the releaser aborts the messages
    of a deleted app instead of releasing them; an abort before the release wins too). A
    releaser of the previous version wrote that entry itself (same entry id): it is not added
    twice."""
    ids = {e.entry_id for e in entries}
    aborted: dict[str, int] = {}  # generation -> first abort
    for e in entries:
        if e.status is Status.ABORTED:
            generation = e.entry_id.split(":", 1)[0]
            aborted[generation] = min(e.at_ms, aborted.get(generation, e.at_ms))
    added = []
    for e in entries:
        bucket = e.data.get("bucket_ms") if e.entry_id.endswith(":stored") else None
        if not isinstance(bucket, int):
            continue
        generation, attempt = e.entry_id.split(":", 2)[:2]
        entry_id = f"{generation}:{attempt}:{RELEASED_EVENT}"
        released_ms = released_at(bucket)
        if entry_id in ids or released_ms is None or released_ms < e.at_ms:
            continue  # already there, not released, or released before this row was stored
        if aborted.get(generation, released_ms + 1) <= released_ms:
            continue
        ids.add(entry_id)
        added.append(LogEntry(released_ms, entry_id, Status.QUEUED, {}))
    if not added:
        return list(entries)
    return sorted([*entries, *added], key=lambda e: (e.at_ms, e.entry_id))
