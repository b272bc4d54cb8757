"""Admission: a due delivery passes its app's pause and rate limit before it is fired.

    due -> admit(app) -> [paused: wait] -> [rate limited: wait for a token] -> abort check -> fire

Messages of a paused app wait (they are not failed) until it is resumed; messages over an app's
rate wait for a token. Both keep the attempt held in the timer queue (its ring offset is not
committed, its copies are refused) and return at once on shutdown (the attempt is left
unsettled and read again after the restart). The abort check comes after admission, so an
abort acknowledged while a message waits still wins.

A message that has waited `park_after_ms` is **parked**: admit returns `Parked`, and the core
produces a copy of the attempt into the ring's current slot in the transaction that commits its
ring offset (core.py, `_park`). Its copy is read again at once and waits again, carrying the
time it waited uncounted. Without it, a held record would keep its partition's commit point
(every later record of the partition read again after a restart), and a wait longer than the
ring's retention followed by a restart would find its record deleted.

One gate per app that needs one, created on its first held message: a token bucket (GCRA)
with `ratePerSecond / instances` per dispatcher instance and a depth of
`ceil(burst / instances)`, and a FIFO of waiters released by one pump task, which reads the
app (through the 1 s cache) at each step: an edited rate or a resume applies within a second.
An app's due messages are spread over the instances by the hash of their ids, so the app's
total rate is at most its limit (plus up to n - 1 tokens of burst), and below it while one
instance has more of that app's backlog than another.
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from scheduler.clock import Clock
from scheduler.store.ports import Application

from .apps import AppCache

PAUSE_POLL_S = 0.25  # how often a paused app is read again (through the cache)
# While a backlog waits, tokens that accrued while the pump overslept (a busy event loop) are
# kept up to this much beyond the bucket's depth, so the limit is met on average instead of
# losing every oversleep; it allows at most this many ms worth of deliveries more at once.
CATCH_UP_MS = 100


@dataclass(frozen=True)
class Admitted:
    app: Application
    # Time this attempt waited that does not count toward the app's maxEventAgeMs: its pause,
    # and its rate limit unless the app counts it (rateHoldCountsTowardAge).
    uncounted_ms: int


@dataclass(frozen=True)
class Parked:
    """Waited `park_after_ms`: to go back into the ring (uncounted_ms as in Admitted)."""

    uncounted_ms: int


@dataclass
class _Waiter:
    entered_ms: int
    waited_before_ms: int  # before its last park (the gauge of the longest wait counts it)
    paused_total_ms: int  # the gate's paused total when it entered
    done: asyncio.Future[Admitted | Parked | None]


class _Gate:
    def __init__(self, app_id: str, instances: int) -> None:
        self.app_id = app_id
        self.instances = instances
        self.tokens = 0.0
        self.refilled_ms: int | None = None
        self.paused_total_ms = 0
        self.waiters: collections.deque[_Waiter] = collections.deque()
        self.last_app: Application | None = None  # as the latest admit saw it
        self.pump: asyncio.Task[None] | None = None

    def rate(self, app: Application) -> tuple[float, int] | None:
        per_second = app.policy.rate_per_second
        if per_second is None:
            return None
        depth = max(1, math.ceil(app.policy.burst() / self.instances))
        return per_second / self.instances, depth

    def refill(self, now_ms: int, per_second: float, depth: int, catch_up: bool = False) -> None:
        if self.refilled_ms is None:
            self.tokens = float(depth)
        else:
            elapsed = max(0, now_ms - self.refilled_ms)
            cap = depth + (per_second * CATCH_UP_MS / 1000 if catch_up else 0.0)
            self.tokens = min(cap, self.tokens + elapsed * per_second / 1000)
        self.refilled_ms = now_ms


class Admission:
    def __init__(
        self,
        apps: AppCache,
        clock: Clock,
        instances: int,
        stopping: Callable[[], bool],
        park_after_ms: int,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        waiting: Callable[[int], None] = lambda n: None,
        oldest_wait: Callable[[float], None] = lambda s: None,
    ) -> None:
        self._apps = apps
        self._clock = clock
        self._instances = instances
        self._stopping = stopping
        self._park_after_ms = park_after_ms
        self._sleep = sleep
        self._waiting_gauge = waiting
        self._oldest_gauge = oldest_wait
        self._gates: dict[str, _Gate] = {}

    @property
    def waiting(self) -> int:
        return sum(len(g.waiters) for g in self._gates.values())

    def _report(self) -> None:
        """The gauges: how many wait, and for how long the longest waiting has (seconds; 0:
        none), its waits before its parks included."""
        self._waiting_gauge(self.waiting)
        now = self._clock.now_ms()
        # (the head of each app's queue: it entered first; not a scan of every waiter)
        heads = [g.waiters[0] for g in self._gates.values() if g.waiters]
        waited = [now - w.entered_ms + w.waited_before_ms for w in heads]
        self._oldest_gauge(max(0, max(waited)) / 1000 if waited else 0.0)

    def open(self, app: Application) -> bool:
        """Would `admit` let a delivery of `app` go at once, taking nothing (no pause, no rate
        limit, nobody waiting before it)? Then a batch of its deliveries needs no admit each."""
        if app.deliveries_paused or app.policy.rate_per_second is not None:
            return False
        gate = self._gates.get(app.app_id)
        return gate is None or not gate.waiters

    async def admit(self, app: Application, waited_before_ms: int = 0) -> Admitted | Parked | None:
        """The app as it stands when this delivery may go; Parked once it has waited
        `park_after_ms`; None on shutdown. `waited_before_ms`: before its last park."""
        gate = self._gates.get(app.app_id)
        if gate is None:
            if not app.deliveries_paused and app.policy.rate_per_second is None:
                return Admitted(app, 0)  # the common case: no gate, no wait
            gate = self._gates[app.app_id] = _Gate(app.app_id, self._instances)
        gate.last_app = app
        if not gate.waiters and not app.deliveries_paused:
            rate = gate.rate(app)
            if rate is None:
                return Admitted(app, 0)
            gate.refill(self._clock.now_ms(), *rate)
            if gate.tokens >= 1:
                gate.tokens -= 1
                return Admitted(app, 0)
        waiter = _Waiter(
            self._clock.now_ms(),
            waited_before_ms,
            gate.paused_total_ms,
            asyncio.get_running_loop().create_future(),
        )
        gate.waiters.append(waiter)
        self._report()
        if gate.pump is None or gate.pump.done():
            gate.pump = asyncio.create_task(self._pump(gate))
        return await asyncio.shield(waiter.done)

    async def _pump(self, gate: _Gate) -> None:
        try:
            await self._run(gate)
        finally:
            for waiter in gate.waiters:  # only on shutdown or an unexpected error
                if not waiter.done.done():
                    waiter.done.set_result(None)
            gate.waiters.clear()
            self._report()

    async def _run(self, gate: _Gate) -> None:
        while gate.waiters and not self._stopping():
            # (None only for an app that never existed: the fire check settles those)
            app = await self._apps.get(gate.app_id) or gate.last_app
            now = self._clock.now_ms()
            if app is None:
                return
            counts = app.policy.rate_hold_counts_toward_age
            while gate.waiters and now - gate.waiters[0].entered_ms >= self._park_after_ms:
                self._release(gate, app, now, counts, park=True)
            if not gate.waiters:
                return
            if app.deliveries_paused:
                self._report()
                await self._sleep(PAUSE_POLL_S)
                gate.paused_total_ms += self._clock.now_ms() - now
                continue
            rate = gate.rate(app)
            if rate is None:
                while gate.waiters:
                    self._release(gate, app, now, counts=False)
                return
            gate.refill(now, *rate, catch_up=True)
            if gate.tokens >= 1:
                gate.tokens -= 1
                self._release(gate, app, now, counts)
                continue
            # (bounded, so a shutdown or an edited rate is seen soon)
            await self._sleep(min(PAUSE_POLL_S, (1 - gate.tokens) / rate[0]))

    def _release(
        self, gate: _Gate, app: Application, now: int, counts: bool, park: bool = False
    ) -> None:
        waiter = gate.waiters.popleft()
        self._report()
        if waiter.done.done():
            return
        paused = gate.paused_total_ms - waiter.paused_total_ms
        uncounted = max(0, paused if counts else now - waiter.entered_ms)
        waiter.done.set_result(Parked(uncounted) if park else Admitted(app, uncounted))
