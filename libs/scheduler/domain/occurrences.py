"""One tick of a recurring schedule's runner: which occurrences to create, and the cursor to
store once they are created (docs/SCHEDULES.md, "When occurrences are created").

Pure: the runner (services/releaser, `releaser/occurrences.py`) does the I/O.

- A tick creates the due occurrences that the catch-up policy keeps
  (`Recurrence.catch_up_now`) and the upcoming ones up to `now + lookahead`, ahead of their
  instant, as ordinary messages whose sendAt is the occurrence: the delivery path then delivers
  each at its instant, never early.
- The cursor is stored only after every occurrence of the tick was created. A crash in between
  repeats the tick from the old cursor, which creates the same instants again under the same
  message ids (`occurrence_message_id`): still one message each. Nothing is skipped either: the
  old cursor still covers only what was created before.
- A tick never moves the cursor back.
- A paused schedule creates nothing and keeps its cursor. On resume, what came due meanwhile was
  missed and follows the policy, as after an outage.
- Bounded: the upcoming occurrences of one tick are at most `limit` (the due ones are already
  bounded by the policy's limit and the grace). The cursor then stops at the last one created
  and the next tick goes on from there.
"""

from __future__ import annotations

from dataclasses import dataclass

from .recurrence import DEFAULT_GRACE_MS, Recurrence


@dataclass(frozen=True, slots=True)
class Tick:
    create: tuple[int, ...]  # occurrence instants to create, increasing
    cursor_ms: int | None  # to store once all of them are created
    skipped: bool  # missed occurrences were dropped (by the policy or its bound)


def plan_tick(
    recurrence: Recurrence,
    cursor_ms: int | None,
    now_ms: int,
    *,
    paused: bool,
    lookahead_ms: int,
    limit: int,
    grace_ms: int = DEFAULT_GRACE_MS,
) -> Tick:
    if lookahead_ms < 0 or limit < 0:
        raise ValueError("look-ahead and limit must not be negative")
    if paused:
        return Tick((), cursor_ms, False)
    due = recurrence.catch_up_now(cursor_ms, now_ms, grace_ms)
    # Everything at or before now is handled (created or dropped) up to due.cursor_ms; with no
    # cursor and nothing due, nothing at or before now exists.
    after = now_ms if due.cursor_ms is None else due.cursor_ms
    ahead = recurrence.occurrences_between(after, now_ms + lookahead_ms, limit)
    return Tick(due.create + tuple(ahead), ahead[-1] if ahead else due.cursor_ms, due.skipped)
