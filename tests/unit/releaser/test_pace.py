"""The pace of the dispatcher's questions to Kafka (pace.py): seldom while the firing loop is
quiet, at once when it leaves quiet, and never a reason to fire with a stale commands view."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx
import pytest

from scheduler_releaser.dispatcher import feeds
from scheduler_releaser.dispatcher.commands import CommandView
from scheduler_releaser.dispatcher.feeds import CommandsFeed
from scheduler_releaser.dispatcher.pace import Pace

from .harness import SCHEDULING, build

pytestmark = pytest.mark.unit
T = TypeVar("T")
HOUR_S = 3_600.0
PROMPTLY_S = 5.0  # far more than an event-driven wake-up takes, far less than HOUR_S


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def _waits(pace: Pace, ticket: asyncio.Event, stop: asyncio.Event) -> None:
    await pace.wait(ticket, 0.0, stop, active_s=0.001, quiet_s=HOUR_S)


async def _still_waiting_after_a_while(pace: Pace, ticket: asyncio.Event) -> bool:
    """Whether a quiet wait on `ticket` is still going after 50 ms (active: it ends in 1 ms)."""
    waiting = asyncio.create_task(_waits(pace, ticket, asyncio.Event()))
    done, _ = await asyncio.wait([waiting], timeout=0.05)
    waiting.cancel()
    return not done


def test_a_quiet_pace_waits_its_quiet_interval() -> None:
    async def scenario() -> None:
        pace = Pace()
        pace.set_quiet(True)
        assert await _still_waiting_after_a_while(pace, pace.ticket())

    run(scenario())


def test_leaving_quiet_ends_a_wait_at_once() -> None:
    async def scenario() -> None:
        pace = Pace()
        pace.set_quiet(True)
        waiting = asyncio.create_task(_waits(pace, pace.ticket(), asyncio.Event()))
        await asyncio.sleep(0)
        pace.set_quiet(False)
        await asyncio.wait_for(waiting, PROMPTLY_S)

    run(scenario())


def test_a_wake_up_while_the_question_is_asked_is_not_missed() -> None:
    """The loop leaves quiet while a question is under way and goes quiet again before the wait
    after it begins: that wait still ends at once, so the question is asked again now."""

    async def scenario() -> None:
        pace = Pace()
        pace.set_quiet(True)
        ticket = pace.ticket()  # taken before asking
        pace.set_quiet(False)  # a record read while asking
        pace.set_quiet(True)
        await asyncio.wait_for(_waits(pace, ticket, asyncio.Event()), PROMPTLY_S)
        # a later ticket is not woken by that one
        assert await _still_waiting_after_a_while(pace, pace.ticket())

    run(scenario())


def test_stop_ends_a_quiet_wait() -> None:
    async def scenario() -> None:
        pace = Pace()
        pace.set_quiet(True)
        stop = asyncio.Event()
        waiting = asyncio.create_task(_waits(pace, pace.ticket(), stop))
        await asyncio.sleep(0)
        stop.set()
        await asyncio.wait_for(waiting, PROMPTLY_S)

    run(scenario())


class CountingFeed(CommandsFeed):
    """Confirmations counted, with no Kafka behind them."""

    def __init__(self) -> None:
        self.view = CommandView(0)
        self._confirm_ms = 1
        self._on_lag = lambda _: None
        self._clock = build(lambda r: httpx.Response(204)).clock
        self.asked = asyncio.Queue[int]()
        self._count = 0

    async def confirm_once(self) -> None:
        self._count += 1
        self.asked.put_nowait(self._count)


def test_the_commands_view_is_confirmed_seldom_while_quiet_and_at_once_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(feeds, "QUIET_CONFIRM_S", HOUR_S)

    async def scenario() -> None:
        feed = CountingFeed()
        pace = Pace()
        pace.set_quiet(True)
        stop = asyncio.Event()
        confirmer = asyncio.create_task(feed.confirm(stop, pace))
        assert await asyncio.wait_for(feed.asked.get(), PROMPTLY_S) == 1
        with pytest.raises(TimeoutError):  # active: one every millisecond
            await asyncio.wait_for(feed.asked.get(), 0.05)
        pace.set_quiet(False)  # a record was read
        assert await asyncio.wait_for(feed.asked.get(), PROMPTLY_S) == 2
        assert await asyncio.wait_for(feed.asked.get(), PROMPTLY_S) == 3  # active again
        stop.set()
        await asyncio.wait_for(confirmer, PROMPTLY_S)

    run(scenario())


def test_a_view_left_to_age_while_nothing_is_due_does_not_report_that_age() -> None:
    """SchedulerCommandsLagging fires on the gauge: a quiet dispatcher lets its view age (no
    message can fire), and the gauge must not say it lags while nothing is due. Once a message
    is due, the lag is what decides, and what the gauge shows."""
    h = build(lambda r: httpx.Response(204))
    h.commands.arrive()  # not at the end any more: the view ages from here
    h.clock.advance(10_000)
    assert h.dispatcher.start_due() == 0
    assert h.metric("scheduler_dispatch_commands_lag_seconds") == 0
    h.dispatcher.accept(h.message(due_in_ms=0), None)
    assert h.dispatcher.start_due() == 0  # held: the view lags beyond the guard
    assert h.metric("scheduler_dispatch_commands_lag_seconds") > SCHEDULING.cancel_guard_ms / 1000


def test_a_cancel_that_lands_while_a_wait_ends_is_not_swallowed() -> None:
    """A wait that is ending cancels and awaits its own waiters: a cancel of the task that comes
    in at that moment must still end the task. (Swallowed, the commands feed's task outlived
    the firing loop's stop, and a fenced dispatcher went on looking ready until SIGTERM.)"""

    async def main() -> list[int]:
        swallowed = []
        for steps in range(8):  # where the cancel lands, one loop step at a time
            ticket, stop = asyncio.Event(), asyncio.Event()
            waiting = asyncio.create_task(_waits(Pace(), ticket, stop))
            await asyncio.sleep(0)  # it waits now
            ticket.set()  # the wait ends...
            for _ in range(steps):
                await asyncio.sleep(0)
            if waiting.done():
                continue
            waiting.cancel()  # ...and its task is cancelled meanwhile
            await asyncio.wait([waiting], timeout=PROMPTLY_S)
            if not waiting.cancelled():
                swallowed.append(steps)
        return swallowed

    assert run(main()) == []
