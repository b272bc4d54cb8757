"""Admission: a due delivery passes its app's pause and rate limit before it is fired.

    due -> admit(app) -> [paused: wait] -> [rate limited: wait for a token] -> abort check -> fire

Messages of a paused app wait (they are not failed) until it is resumed; messages over an app's
rate wait for a token. Both keep the attempt held in the timer queue (its ring offset is not
committed, its copies are refused) and return at once on shutdown (the attempt is left
unsettled and read again after the restart). The abort check comes after admission, so an
abort acknowledged while a message waits still wins.

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


@dataclass
class _Waiter:
    entered_ms: int
    paused_total_ms: int  # the gate's paused total when it entered
    done: asyncio.Future[Admitted | None]


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
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        waiting: Callable[[int], None] = lambda n: None,
        oldest_wait: Callable[[float], None] = lambda s: None,
    ) -> None:
        self._apps = apps
        self._clock = clock
        self._instances = instances
        self._stopping = stopping
        self._sleep = sleep
        self._waiting_gauge = waiting
        self._oldest_gauge = oldest_wait
        self._gates: dict[str, _Gate] = {}

    @property
    def waiting(self) -> int:
        return sum(len(g.waiters) for g in self._gates.values())

    def _report(self) -> None:
        """The gauges: how many wait, and for how long the oldest has (seconds; 0: none). A
        waiting message's ring record must outlive its wait (the ring's retention), or a
        restart of this dispatcher would no longer find it (docs/API.md, "Limits of a pause")."""
        self._waiting_gauge(self.waiting)
        entered = [g.waiters[0].entered_ms for g in self._gates.values() if g.waiters]
        self._oldest_gauge(max(0, self._clock.now_ms() - min(entered)) / 1000 if entered else 0.0)

    async def admit(self, app: Application) -> Admitted | None:
        """The app as it stands when this delivery may go, or None on shutdown."""
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
                self._release(gate, app, now, counts=app.policy.rate_hold_counts_toward_age)
                continue
            # (bounded, so a shutdown or an edited rate is seen soon)
            await self._sleep(min(PAUSE_POLL_S, (1 - gate.tokens) / rate[0]))

    def _release(self, gate: _Gate, app: Application, now: int, counts: bool) -> None:
        waiter = gate.waiters.popleft()
        self._report()
        if waiter.done.done():
            return
        paused = gate.paused_total_ms - waiter.paused_total_ms
        held = paused if counts else now - waiter.entered_ms
        waiter.done.set_result(Admitted(app, max(0, held)))
