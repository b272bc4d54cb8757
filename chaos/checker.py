"""The verdict of a campaign, from plain facts (no I/O, unit-tested on synthetic inputs): what
the clients were told (acknowledged messages, abort and redrive answers, idempotency keys), what
arrived at the destinations, what the API reports at the end, and when each fault happened.

Violations (any one fails a campaign):
- lost: acknowledged, not aborted with a 200, and never reached its destination (a message
  whose abort got no clear answer counts as lost only if it neither arrived nor ended ABORTED);
- early: any arrival before its sendAt;
- kafka_duplicates: a KAFKA destination saw a message more than once (read_committed);
- delivered_after_abort: a message whose abort was answered 200 reached its destination;
- not_terminal: the record is not SENT, FAILED or ABORTED at the end (or cannot be read);
- idempotency_split: one idempotency key answered with two message ids.
HTTP duplicates (a second 2xx-answered delivery) are counted, not failed: HTTP is at least once.
Each is explained by the fault that ended a dispatcher between the first delivery and the second
(a crash between a response and the commit of its result: the partition's next owner delivers
again), or by a retry (a later attempt: the dispatcher did not see the 2xx in time, its HTTP
timeout ran out first), or counted as unexplained: a finding to look into."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from scheduler.testing.receiver import Arrival

TERMINAL = ("SENT", "FAILED", "ABORTED")
RECOVERY_WINDOW_MS = 5_000  # lateness p99 is judged per window of due instants this long
RECOVERY_STEP_MS = RECOVERY_WINDOW_MS // 5  # windows start this far apart
BASELINE_MS = 30_000  # the pre-fault p99 is taken over the messages due this long before it
WARM_UP_TAIL_MS = 60_000  # the warm-up's p99 is its last minute's (JVMs are cold before that)
STEADY_FLOOR_MS = 50  # "within 2x of the pre-fault p99", but never tighter than this
# (a 10 ms p99 doubled is below the receivers' own jitter on a loaded host)
HOLD_MS = 10_000  # back to steady: every window from there on within the bound for this long
UNEXPLAINED = "unexplained"
RETRIED = "retried: the answer not seen in time"
# Faults that end a dispatcher process (its ring partitions go to a restarted or new owner).
ENDS_A_DISPATCHER = ("kill9", "rolling_restart", "rescale")
# A request in flight when its sender was killed still reaches the receiver, which stamps it
# when it reads it: up to this long after the kill (seed 2029: 17 ms on a loaded host).
IN_FLIGHT_MS = 1_000


@dataclass(frozen=True)
class Acked:
    """A message the client was told is scheduled (HTTP 200 or a flushed Kafka-native record).
    `flaky`: its endpoint refuses deliveries until the workload redrives it."""

    message_id: str
    destination: str  # "rest" | "kafka"
    send_at_ms: int
    sent_ms: int  # when the request was sent: a past sendAt is due from then
    flaky: bool = False


@dataclass(frozen=True)
class AbortAnswer:
    message_id: str
    status: int  # 0: no answer
    answered_ms: int


@dataclass(frozen=True)
class FaultSpan:
    kind: str
    target: str
    started_ms: int
    healed_ms: int


@dataclass
class Facts:
    acked: list[Acked]
    aborts: list[AbortAnswer]
    arrivals: list[Arrival]
    statuses: dict[str, str | None]  # message id -> status at the end (None: not readable)
    faults: list[FaultSpan]
    idempotency: dict[str, set[str]] = field(default_factory=dict)  # key -> ids answered
    redriven: set[str] = field(default_factory=set)  # redrives answered 200


@dataclass
class FaultStats:
    kind: str
    target: str
    started_ms: int
    healed_ms: int
    worst_lateness_ms: int  # of the messages due from the injection to the next fault
    baseline_p99_ms: int
    steady_after_heal_ms: int | None  # None: not back to steady before the next fault
    watched_ms: int  # how long after the heal a steady point could have been found
    http_duplicates: int


@dataclass
class Verdict:
    acked: int
    delivered: int
    lost: list[str]
    early: list[str]
    kafka_duplicates: list[str]
    delivered_after_abort: list[str]
    not_terminal: list[str]
    idempotency_split: list[str]
    http_duplicates: int
    # the fault that explains each (UNEXPLAINED: none ended a dispatcher in between)
    http_duplicates_by_fault: dict[str, int]
    aborted_200: int
    lateness: list[tuple[int, int]]  # (due ms, lateness ms) of each first delivery
    faults: list[FaultStats]

    VIOLATIONS = (
        "lost",
        "early",
        "kafka_duplicates",
        "delivered_after_abort",
        "not_terminal",
        "idempotency_split",
    )

    @property
    def violations(self) -> dict[str, int]:
        return {kind: len(getattr(self, kind)) for kind in self.VIOLATIONS}

    @property
    def ok(self) -> bool:
        return not any(self.violations.values())

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["violations"] = self.violations
        out["ok"] = self.ok
        return out


def check(facts: Facts) -> Verdict:
    planned = {a.message_id: a for a in facts.acked}
    answers: dict[str, set[int]] = defaultdict(set)
    for abort in facts.aborts:
        answers[abort.message_id].add(abort.status)
    aborted_200 = {m for m, s in answers.items() if 200 in s and m in planned}
    abort_unclear = {m for m, s in answers.items() if m in planned and m not in aborted_200}
    ours = [a for a in facts.arrivals if a.message_id in planned]
    reached = {a.message_id for a in ours}
    accepted = [a for a in ours if 200 <= a.status < 300]

    lost = []
    for m in planned:
        if m in aborted_200 or m in reached:
            continue
        if m in abort_unclear and facts.statuses.get(m) == "ABORTED":
            continue
        lost.append(m)
    early = sorted({a.message_id for a in ours if a.received_ms < planned[a.message_id].send_at_ms})
    counts = Counter(a.message_id for a in accepted)
    kafka_dups = sorted(m for m, n in counts.items() if n > 1 and planned[m].destination == "kafka")
    after_abort = sorted(aborted_200 & reached)
    not_terminal = sorted(m for m in planned if facts.statuses.get(m) not in TERMINAL)
    split = sorted(k for k, ids in facts.idempotency.items() if len(ids) > 1)

    first = _first_accepted(accepted)
    lateness = sorted(
        (due_ms(planned[m]), a.received_ms - due_ms(planned[m]))
        for m, a in first.items()
        if not planned[m].flaky and m not in facts.redriven
    )
    http_dups = _http_duplicates(accepted, planned)
    explained = [_explained_by(first, again, facts.faults) for first, again in http_dups]
    by_fault: Counter[str] = Counter(
        _label(f) if f else (RETRIED if again.attempt > first.attempt else UNEXPLAINED)
        for f, (first, again) in zip(explained, http_dups, strict=True)
    )
    return Verdict(
        acked=len(planned),
        delivered=len(first),
        lost=sorted(lost),
        early=early,
        kafka_duplicates=kafka_dups,
        delivered_after_abort=after_abort,
        not_terminal=not_terminal,
        idempotency_split=split,
        http_duplicates=len(http_dups),
        http_duplicates_by_fault=dict(by_fault),
        aborted_200=len(aborted_200),
        lateness=lateness,
        faults=fault_stats(lateness, facts.faults, [f for f in explained if f is not None]),
    )


def due_ms(acked: Acked) -> int:
    """A past sendAt is due when the request was sent."""
    return max(acked.send_at_ms, acked.sent_ms)


def _first_accepted(accepted: list[Arrival]) -> dict[str, Arrival]:
    first: dict[str, Arrival] = {}
    for a in sorted(accepted, key=lambda a: a.received_ms):
        first.setdefault(a.message_id, a)
    return first


def _http_duplicates(
    accepted: list[Arrival], planned: dict[str, Acked]
) -> list[tuple[Arrival, Arrival]]:
    """(the first, this one) for every 2xx-answered HTTP delivery after a message's first."""
    first: dict[str, Arrival] = {}
    out = []
    for a in sorted(accepted, key=lambda a: a.received_ms):
        if planned[a.message_id].destination != "rest":
            continue
        if a.message_id in first:
            out.append((first[a.message_id], a))
        first.setdefault(a.message_id, a)
    return out


def _explained_by(first: Arrival, again: Arrival, faults: list[FaultSpan]) -> FaultSpan | None:
    """The last fault that ended a dispatcher between the two deliveries, if any: a kill -9
    ends one when it is injected (a first delivery received up to IN_FLIGHT_MS after it may
    have been sent before it); a rolling restart or a rescale stops instances one after
    another until its heal, so any of its span may lie between them (seed 2028: a delivery
    made 10 ms into a rolling restart, by an instance stopped a moment later)."""
    first_ms, again_ms = first.received_ms, again.received_ms

    def in_between(f: FaultSpan) -> bool:
        if f.kind == "kill9":
            return first_ms - IN_FLIGHT_MS <= f.started_ms <= again_ms
        return f.started_ms <= again_ms and first_ms <= f.healed_ms

    ending = [
        f
        for f in faults
        if f.kind in ENDS_A_DISPATCHER and f.target.startswith("dispatcher") and in_between(f)
    ]
    return max(ending, key=lambda f: f.started_ms, default=None)


def _label(f: FaultSpan) -> str:
    return f"{f.kind} {f.target} @{f.started_ms}"


def p99(values: list[int]) -> int:
    if not values:
        return 0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def steady_bound(before_p99: int | None, warm_up_p99: int | None) -> tuple[int, int]:
    """(the pre-fault p99, the bound a steady window's p99 must keep): the p99 of the messages
    due just before the injection, or the warm-up's if lower (a fault injected while an earlier
    one's backlog lasts would otherwise be measured against the backlog and read "steady" at
    once: seed 1919), doubled, and never below STEADY_FLOOR_MS. Shared with the live watch that
    paces the nemesis (chaos.steady)."""
    if before_p99 is None:
        base = warm_up_p99 or 0
    elif warm_up_p99:
        base = min(before_p99, warm_up_p99)
    else:
        base = before_p99
    return base, max(2 * base, STEADY_FLOOR_MS)


def fault_stats(
    lateness: list[tuple[int, int]], faults: list[FaultSpan], http_dups: list[FaultSpan]
) -> list[FaultStats]:
    """Per fault: worst lateness of the messages due between its injection and the next fault,
    and how long after the heal the lateness is back to steady: the first window of due
    instants (RECOVERY_WINDOW_MS long, one every RECOVERY_STEP_MS) from which every window for
    HOLD_MS has its p99 within `steady_bound` (a single good window between two bad ones is
    not a recovery). Windows end before the next fault. `http_dups`: the fault that explains
    each HTTP duplicate. `lateness` is sorted by due instant."""
    ordered = sorted(faults, key=lambda f: f.started_ms)
    dues = [due for due, _ in lateness]

    def window(start: int, end: int) -> list[int]:
        return [late for _, late in lateness[bisect_left(dues, start) : bisect_left(dues, end)]]

    last_due = dues[-1] if dues else 0
    first = ordered[0].started_ms if ordered else 2**62
    warm_up = p99(window(first - WARM_UP_TAIL_MS, first)) or None
    out = []
    for i, f in enumerate(ordered):
        until = ordered[i + 1].started_ms if i + 1 < len(ordered) else 2**62
        before = window(f.started_ms - BASELINE_MS, f.started_ms)
        during = window(f.started_ms, until)
        base, bound = steady_bound(p99(before) if before else None, warm_up)
        end = min(until, last_due + 1)
        steady, ok_since = None, None
        start = f.healed_ms
        while start + RECOVERY_WINDOW_MS <= end:
            lates = window(start, start + RECOVERY_WINDOW_MS)
            if lates and p99(lates) > bound:
                ok_since = None
            elif ok_since is None:
                ok_since = start
            if ok_since is not None and start - ok_since >= HOLD_MS:
                steady = ok_since - f.healed_ms
                break
            start += RECOVERY_STEP_MS
        watched = max(0, end - RECOVERY_WINDOW_MS - HOLD_MS - f.healed_ms)
        dups = sum(1 for explaining in http_dups if explaining == f)
        out.append(
            FaultStats(
                f.kind,
                f.target,
                f.started_ms,
                f.healed_ms,
                max(during, default=0),
                base,
                steady,
                watched,
                dups,
            )
        )
    return out
