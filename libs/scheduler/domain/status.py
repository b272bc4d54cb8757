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
_RANK = {Status.READY: 1, Status.QUEUED: 2, Status.FAILED: 3, Status.ABORTED: 4, Status.SENT: 5}
MAX_GENERATION = (1 << 22) - 1
MAX_ATTEMPT = (1 << 16) - 1


def precedence(status: Status, generation: int, attempt: int) -> int:
    if not 0 <= generation <= MAX_GENERATION:
        raise ValueError(f"generation {generation} out of range")
    if not 0 <= attempt <= MAX_ATTEMPT:
        raise ValueError(f"attempt {attempt} out of range")
    terminal = 1 if status.terminal else 0
    effective_attempt = 0 if terminal else attempt
    return (generation << 25 | terminal << 24 | effective_attempt << 8 | _RANK[status]) + 1
