"""How often the dispatcher's background questions to Kafka are asked: often while firing may
be needed, seldom while the dispatcher is quiet (ARCHITECTURE.md, "Idle cost").

The commands view is confirmed and the record writers' progress asked so that a message can
fire on time. While the firing loop is quiet (nothing held due within a second, nothing read
within one) no message can fire, so nothing needs a fresh answer: the questions slow down to
`QUIET_CONFIRM_S` and `QUIET_PROGRESS_S`. When the loop leaves quiet (a record read, a held
message coming due) every waiter asks at once, so the first message after a quiet spell waits
one round trip, not an interval.
Nothing here decides whether a message may fire: that stays the view's own lag (decision 5).
"""

from __future__ import annotations

import asyncio

QUIET_CONFIRM_S = 1.0  # the commands view, while quiet (100 ms otherwise: commands_confirm_ms)
QUIET_PROGRESS_S = 5.0  # the record writers' progress, while quiet (1 s otherwise)


class Pace:
    def __init__(self) -> None:
        self._quiet = False
        self._woken = asyncio.Event()

    def set_quiet(self, quiet: bool) -> None:
        """The firing loop's state; leaving quiet wakes every waiter."""
        if self._quiet and not quiet:
            woken, self._woken = self._woken, asyncio.Event()
            woken.set()
        self._quiet = quiet

    def ticket(self) -> asyncio.Event:
        """Taken before a question is asked: a wake-up that comes while it is being asked ends
        the wait after it at once (it is not missed)."""
        return self._woken

    async def wait(
        self,
        ticket: asyncio.Event,
        spent_s: float,
        stop: asyncio.Event,
        *,
        active_s: float,
        quiet_s: float,
    ) -> None:
        """Until the next question: the interval (`quiet_s` while quiet, never shorter than
        `active_s`) less what the last one took, or sooner when the loop leaves quiet or
        `stop` is set."""
        interval = max(active_s, quiet_s) if self._quiet else active_s
        timeout = max(0.0, interval - spent_s)
        if ticket.is_set() or stop.is_set() or timeout == 0:
            return
        waiters = [asyncio.ensure_future(ticket.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            # Their cancellations come back as results; a cancel of this task, even one that
            # lands now, is raised (suppressing CancelledError here swallowed it).
            await asyncio.gather(*waiters, return_exceptions=True)
