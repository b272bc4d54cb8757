"""The failure notifier's core: one notice per dead letter, per-application lanes, retries.

    dead letter (read_committed) -> add() -> the app's lane -> start_due(): an attempt
        accepted | dropped | skipped  -> finished: its offset may be committed
        retry                         -> waits (backoff) in memory, holding its offset back

No Kafka here: the runtime (runtime.py) feeds `add()` and commits `offsets.commits()`; unit
tests use fakes and a ManualClock and call `start_due()` / `drain()` directly.

Isolation (docs/ARCHITECTURE.md, "Failure notices"): each application has a lane with at most
`per_app_concurrency` notices in flight and `per_app_max_pending` unfinished; notices of other
apps never wait behind it. A notice that fails waits for its retry in memory, not in partition
order, so a destination that is down delays only its own notices; what it holds back is the
dead-letter offset (committed only up to the oldest unfinished notice), which costs at most a
replay of the finished notices after it on a restart (at least once), never a skipped one. The
bounds (attempts, age, per-app and total unfinished) keep that hold and the memory finite.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from scheduler.clock import Clock
from scheduler.domain.backoff import Backoff
from scheduler.encryption import UnreadableValue
from scheduler.records import DeadLetter
from scheduler.store.ports import Application
from scheduler_releaser.dispatcher.verdict import jitter_draw
from scheduler_releaser.metrics import FailureNoticeMetrics
from scheduler_releaser.settings import FailureNoticeSettings

from .offsets import TP, NoticeOffsets
from .senders import Attempt, NoticeSender, Verdict

log = logging.getLogger(__name__)
UNKNOWN = "unknown"  # destination label before the app was read
APP_READ_RETRY_MAX_MS = 30_000  # an app that cannot be read (Cassandra) is asked again


class AppSource(Protocol):
    async def get(self, app_id: str) -> Application | None: ...


class NoticeEvents(Protocol):
    """What the notifier reports (the metrics; through a pipe from the child process)."""

    def sent(self, destination: str) -> None: ...

    def retried(self, destination: str, reason: str) -> None: ...

    def dropped(self, destination: str, reason: str) -> None: ...

    def skipped(self, reason: str) -> None: ...

    def pending(self, count: int) -> None: ...

    def lag(self, records: int) -> None: ...


class MetricsEvents:
    """NoticeEvents on the Prometheus metrics."""

    def __init__(self, metrics: FailureNoticeMetrics) -> None:
        self._m = metrics

    def sent(self, destination: str) -> None:
        self._m.sent.labels(destination).inc()

    def retried(self, destination: str, reason: str) -> None:
        self._m.retried.labels(destination, reason).inc()

    def dropped(self, destination: str, reason: str) -> None:
        self._m.dropped.labels(destination, reason).inc()

    def skipped(self, reason: str) -> None:
        self._m.skipped.labels(reason).inc()

    def pending(self, count: int) -> None:
        self._m.pending.set(count)

    def lag(self, records: int) -> None:
        self._m.lag.set(records)


@dataclass(eq=False)
class Notice:
    letter: DeadLetter
    tp: TP
    offset: int
    attempts: int = 0  # made so far (to the destination)
    app_read_failures: int = 0
    failed: bool = False  # an attempt failed: it waits for a retry, or did
    open: bool = True  # False once finished or abandoned (its partition revoked)


@dataclass
class _Lane:
    """One application's notices: ready to start, how many run, how many are unfinished, how
    many of those failed an attempt (its destination is failing)."""

    ready: deque[Notice] = field(default_factory=deque)
    in_flight: int = 0
    pending: int = 0
    failing: int = 0
    destination: str = UNKNOWN
    overflowing: bool = False


class FailureNotifier:
    def __init__(
        self,
        *,
        apps: AppSource,
        http: NoticeSender,
        kafka: NoticeSender,
        clock: Clock,
        settings: FailureNoticeSettings,
        events: NoticeEvents,
    ) -> None:
        self._apps = apps
        self._senders = {"REST": http, "KAFKA": kafka}
        self._clock = clock
        self._settings = settings
        self._events = events
        self._backoff = Backoff(
            max_attempts=settings.max_attempts,
            base_ms=settings.backoff_base_ms,
            max_delay_ms=settings.backoff_max_delay_ms,
        )
        self.offsets = NoticeOffsets()
        self._lanes: dict[str, _Lane] = {}
        self._runnable: dict[str, None] = {}  # apps with ready notices, in turn (insertion order)
        self._waiting: list[tuple[int, int, Notice]] = []  # (retry at, seq, notice): a heap
        self._seq = itertools.count()
        self._tasks: dict[asyncio.Task[None], Notice] = {}
        self.stopping = False  # set on shutdown: nothing new starts

    # -- intake ---------------------------------------------------------------------------

    def add(self, letter: DeadLetter | None, tp: TP, offset: int) -> None:
        """A dead letter read at `offset` of `tp` (None: undecodable, skipped)."""
        self.offsets.received(tp, offset)
        if letter is None:
            self._events.skipped("undecodable")
            self.offsets.finished(tp, offset)
            return
        lane = self._lanes.get(letter.app_id)
        if lane is None:
            lane = self._lanes[letter.app_id] = _Lane()
        if lane.pending >= self._settings.per_app_max_pending and lane.failing:
            # Its destination is failing and far behind: this app alone pays for it (not the
            # others, nor the notifier's memory). A burst to a destination that answers is
            # not dropped: the total bound pauses the reading instead (runtime.py).
            if not lane.overflowing:
                lane.overflowing = True
                log.warning(
                    "app %s has %d unfinished failure notices and its destination fails: its"
                    " further notices are dropped until it has fewer",
                    letter.app_id,
                    lane.pending,
                )
            self._events.dropped(lane.destination, "overflow")
            self.offsets.finished(tp, offset)
            return
        lane.overflowing = False
        lane.pending += 1
        lane.ready.append(Notice(letter, tp, offset))
        self._runnable[letter.app_id] = None

    @property
    def pending(self) -> int:
        """Unfinished notices in memory (in flight, ready or waiting for a retry)."""
        return sum(lane.pending for lane in self._lanes.values())

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def next_retry_ms(self) -> int | None:
        return self._waiting[0][0] if self._waiting else None

    # -- attempts -------------------------------------------------------------------------

    def start_due(self) -> int:
        """Start the attempts that may start now: retries that came due, then ready notices,
        the apps in turn, within the per-app and total concurrency. Returns how many."""
        if self.stopping:
            return 0
        now = self._clock.now_ms()
        while self._waiting and self._waiting[0][0] <= now:
            notice = heapq.heappop(self._waiting)[2]
            if notice.open:
                self._lanes[notice.letter.app_id].ready.append(notice)
                self._runnable[notice.letter.app_id] = None
        started = 0
        while self._runnable and len(self._tasks) < self._settings.concurrency:
            app_id = next(iter(self._runnable))
            del self._runnable[app_id]
            lane = self._lanes[app_id]
            if not lane.ready or lane.in_flight >= self._settings.per_app_concurrency:
                continue  # runnable again when one of its attempts ends
            notice = lane.ready.popleft()
            lane.in_flight += 1
            task = asyncio.create_task(self._attempt(notice))
            self._tasks[task] = notice
            task.add_done_callback(self._ended)
            started += 1
            if lane.ready:
                self._runnable[app_id] = None  # behind the other apps: they take turns
        return started

    def _ended(self, task: asyncio.Task[None]) -> None:
        notice = self._tasks.pop(task)
        app_id = notice.letter.app_id
        lane = self._lanes[app_id]
        lane.in_flight -= 1
        if not task.cancelled() and task.exception() is not None and notice.open:
            # A bug, not a destination's fault: the notice is retried like a failed attempt.
            log.error(
                "failure notice of %s failed", notice.letter.message_id, exc_info=task.exception()
            )
            self._retry_or_drop(notice, lane.destination, Attempt(Verdict.RETRY, "error"))
        if lane.ready:
            self._runnable[app_id] = None
        if lane.pending == 0 and lane.in_flight == 0 and self._lanes.get(app_id) is lane:
            del self._lanes[app_id]
        self.start_due()

    async def drain(self) -> None:
        """Wait until nothing is in flight (what ends may start more: until none is ready)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
            await asyncio.sleep(0)  # let the done callbacks run

    def cancel_in_flight(self) -> int:
        """Shutdown past its budget: the attempts in flight stay unfinished (read again)."""
        for task in self._tasks:
            task.cancel()
        return len(self._tasks)

    async def _attempt(self, notice: Notice) -> None:
        letter = notice.letter
        lane = self._lanes[letter.app_id]
        try:
            app = await self._apps.get(letter.app_id)
        except UnreadableValue as exc:
            log.error(
                "failure notice of %s skipped: the secrets of app %s do not decrypt (%s)",
                letter.message_id,
                letter.app_id,
                exc,
            )
            self._skip(notice, "secrets")
            return
        except Exception:
            # Cassandra unavailable: asked again later (within the age bound), not an attempt.
            log.exception("reading app %s failed; its failure notice waits", letter.app_id)
            notice.app_read_failures += 1
            delay = min(
                self._backoff.delay_ms(min(notice.app_read_failures, 30)), APP_READ_RETRY_MAX_MS
            )
            self._wait(notice, self._clock.now_ms() + delay)
            return
        if app is None or app.deleted_ms is not None:
            self._skip(notice, "app_gone")
            return
        if not app.failure_type or not app.failure_endpoint:
            self._skip(notice, "no_destination")
            return
        destination = app.failure_type
        sender = self._senders.get(destination)
        if sender is None:
            self._drop(notice, destination, Attempt(Verdict.DROP, "refused", "unknown type"))
            return
        lane.destination = destination
        if self._clock.now_ms() - letter.failed_ms > self._settings.max_age_ms:
            self._drop(notice, destination, Attempt(Verdict.DROP, "age", "read too late"))
            return
        notice.attempts += 1
        outcome = await sender.send(app, letter, notice.attempts)
        if outcome.verdict is Verdict.ACCEPTED:
            self._events.sent(destination)
            self._finish(notice)
        elif outcome.verdict is Verdict.DROP:
            self._drop(notice, destination, outcome)
        else:
            self._retry_or_drop(notice, destination, outcome)

    # -- endings --------------------------------------------------------------------------

    def _retry_or_drop(self, notice: Notice, destination: str, outcome: Attempt) -> None:
        letter = notice.letter
        now = self._clock.now_ms()
        attempts = max(notice.attempts, 1)
        retry_at = self._backoff.next_due_ms(
            attempts, now, jitter_draw(letter.message_id, attempts)
        )
        if retry_at is None:
            self._drop(notice, destination, Attempt(Verdict.DROP, "attempts", outcome.detail))
        elif retry_at - letter.failed_ms > self._settings.max_age_ms:
            self._drop(notice, destination, Attempt(Verdict.DROP, "age", outcome.detail))
        else:
            self._events.retried(destination, outcome.reason)
            if not notice.failed:
                notice.failed = True
                self._lanes[letter.app_id].failing += 1
            self._wait(notice, retry_at)

    def _wait(self, notice: Notice, at_ms: int) -> None:
        if notice.open:
            heapq.heappush(self._waiting, (at_ms, next(self._seq), notice))

    def _drop(self, notice: Notice, destination: str, outcome: Attempt) -> None:
        letter = notice.letter
        log.warning(
            "failure notice of %s (app %s, generation %d) dropped after %d attempt(s): %s%s",
            letter.message_id,
            letter.app_id,
            letter.generation,
            notice.attempts,
            outcome.reason,
            f" ({outcome.detail})" if outcome.detail else "",
        )
        self._events.dropped(destination, outcome.reason)
        self._finish(notice)

    def _skip(self, notice: Notice, reason: str) -> None:
        self._events.skipped(reason)
        self._finish(notice)

    def _finish(self, notice: Notice) -> None:
        if not notice.open:
            return
        self._close(notice)
        self.offsets.finished(notice.tp, notice.offset)

    def _close(self, notice: Notice) -> None:
        notice.open = False
        lane = self._lanes[notice.letter.app_id]
        lane.pending -= 1
        if notice.failed:
            lane.failing -= 1

    # -- partitions -----------------------------------------------------------------------

    def revoke(self, tps: Iterable[TP]) -> int:
        """Partitions taken away (a rebalance): their notices are abandoned, unfinished (the
        next owner reads them from the committed offset). Returns how many."""
        gone = set(tps)
        victims = [n for n in self._open_notices() if n.tp in gone]
        for notice in victims:
            self._close(notice)
        for task, notice in self._tasks.items():
            if notice.tp in gone:
                task.cancel()
        for app_id, lane in list(self._lanes.items()):
            lane.ready = deque(n for n in lane.ready if n.open)
            if not lane.ready:
                self._runnable.pop(app_id, None)
            if lane.pending == 0 and lane.in_flight == 0:
                del self._lanes[app_id]
        self._waiting = [entry for entry in self._waiting if entry[2].open]
        heapq.heapify(self._waiting)
        self.offsets.forget(gone)
        return len(victims)

    def _open_notices(self) -> list[Notice]:
        seen: dict[int, Notice] = {}
        for notice in self._tasks.values():
            seen[id(notice)] = notice
        for lane in self._lanes.values():
            for notice in lane.ready:
                seen[id(notice)] = notice
        for _, _, notice in self._waiting:
            seen[id(notice)] = notice
        return [n for n in seen.values() if n.open]
