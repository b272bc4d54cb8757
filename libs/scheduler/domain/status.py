"""Message statuses, the transitions between them, and record precedence (decision 1).

Every writer of a message record (ingest, bucketer, releaser, dispatcher, abort/redrive) stamps
its status write with `precedence(...)` as the Cassandra cell timestamp. Cassandra keeps the cell
with the highest timestamp, so writes commute: a replay after a crash, or a late write from a
slower component, can never move a record backwards (SENT back to READY, or a redriven message
back to its old FAILED generation).
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    READY = "READY"  # stored, waiting for its bucket to be released
    QUEUED = "QUEUED"  # in its due-minute topic, waiting to fire
    SENT = "SENT"
    FAILED = "FAILED"
    ABORTED = "ABORTED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Status.SENT, Status.FAILED, Status.ABORTED})
FIRST_ATTEMPT = 1  # attempts count from 1 in every generation
ABORTABLE = frozenset({Status.READY, Status.QUEUED})

# Allowed moves. READY -> SENT/FAILED happens when the QUEUED write is overtaken by the delivery
# result; QUEUED -> READY is a retry that was rescheduled beyond the look-ahead; FAILED -> READY is
# a redrive (new generation). SENT and ABORTED are final.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.READY: frozenset({Status.QUEUED, Status.SENT, Status.FAILED, Status.ABORTED}),
    Status.QUEUED: frozenset(
        {Status.READY, Status.QUEUED, Status.SENT, Status.FAILED, Status.ABORTED}
    ),
    Status.FAILED: frozenset({Status.READY}),
    Status.SENT: frozenset(),
    Status.ABORTED: frozenset(),
}


class TransitionError(ValueError):
    pass


def check_transition(current: Status, target: Status) -> None:
    if target not in TRANSITIONS[current]:
        raise TransitionError(f"a message cannot go from {current.value} to {target.value}")


# Precedence layout of the 63-bit cell timestamp, highest field first:
#   generation (22 bits) | terminal (1) | attempt (16) | rank (8)
# A higher generation always wins; within one, any terminal status beats any non-terminal one;
# among non-terminal ones a later attempt wins, then the rank. Among terminal ones the rank
# decides: SENT beats ABORTED beats FAILED, so a record never hides a delivery that happened.
# READY has two ranks: written by a store (the message's row is in its bucket: rank 1) and
# written before that (ingest's acceptance, a redrive or reschedule: rank 0). A reader tells a
# stored READY from the cell timestamp; one whose bucket lies below the release watermark reads
# as QUEUED (`shown_status`), so the releaser writes nothing per message.
_RANK = {Status.READY: 1, Status.QUEUED: 2, Status.FAILED: 3, Status.ABORTED: 4, Status.SENT: 5}
_ACCEPTED_READY_RANK = 0
MAX_GENERATION = (1 << 22) - 1
MAX_ATTEMPT = (1 << 16) - 1


def precedence(status: Status, generation: int, attempt: int, stored: bool = False) -> int:
    """The cell timestamp of a status write. `stored`: a READY written by the store that put
    the message's row in its bucket (ignored for any other status)."""
    if not 0 <= generation <= MAX_GENERATION:
        raise ValueError(f"generation {generation} out of range")
    if not 0 <= attempt <= MAX_ATTEMPT:
        raise ValueError(f"attempt {attempt} out of range")
    terminal = 1 if status.terminal else 0
    effective_attempt = 0 if terminal else attempt
    rank = _RANK[status]
    if status is Status.READY and not stored:
        rank = _ACCEPTED_READY_RANK
    return (generation << 25 | terminal << 24 | effective_attempt << 8 | rank) + 1


def stored_ready(status: Status, cell_timestamp: int) -> bool:
    """Whether a READY record's status was written by a store (see `precedence`). A writer of
    the version before the two ranks wrote every READY with rank 1: an accepted READY of an old
    ingest reads as stored until the bucketer writes the message's row."""
    return status is Status.READY and (cell_timestamp - 1) & 0xFF == _RANK[Status.READY]


def shown_status(status: Status, stored: bool, due_ms: int, released_up_to_ms: int) -> Status:
    """The status a reader shows: a stored READY whose due instant lies below the release
    watermark is QUEUED (every bucket that starts before the watermark was released into the
    ring, and a row stored after its bucket's claim is sent there by its store)."""
    if status is Status.READY and stored and due_ms < released_up_to_ms:
        return Status.QUEUED
    return status
