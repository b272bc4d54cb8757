"""scheduler.tasks.cancel_and_wait: the task ends, its failure is raised, the caller's own cancel
is never swallowed wherever it lands."""

from __future__ import annotations

import asyncio

import pytest

from scheduler.tasks import cancel_and_wait

pytestmark = pytest.mark.unit


async def _slow_to_stop(stopped: list[str]) -> None:
    """A task that takes a few loop steps to end once cancelled (a flush, a close)."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        for _ in range(3):
            await asyncio.sleep(0)
        stopped.append("stopped")
        raise


def test_a_cancel_of_the_caller_is_never_swallowed_wherever_it_lands() -> None:
    async def main() -> list[int]:
        swallowed = []
        for steps in range(8):  # where the caller's cancel lands, one loop step at a time
            stopped: list[str] = []
            task = asyncio.create_task(_slow_to_stop(stopped))
            went_on: list[str] = []

            async def caller(task: asyncio.Task[None] = task, went_on: list[str] = went_on) -> None:
                await asyncio.sleep(0)
                await cancel_and_wait(task)
                went_on.append("after")  # must not run once the caller is cancelled

            calling = asyncio.create_task(caller())
            for _ in range(steps):
                await asyncio.sleep(0)
            if calling.done():
                continue
            calling.cancel()
            await asyncio.wait([calling], timeout=1.0)
            if not calling.cancelled() or went_on:
                swallowed.append(steps)
            task.cancel()  # the caller may have been cancelled before it got to its call
            await asyncio.wait([task], timeout=1.0)
            assert task.cancelled()
        return swallowed

    assert asyncio.run(main()) == []


def test_the_task_ends_and_only_its_own_failure_is_raised() -> None:
    async def fails_on_cancel() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("close failed") from None

    async def main() -> None:
        stopped: list[str] = []
        quiet = asyncio.create_task(_slow_to_stop(stopped))
        await asyncio.sleep(0)
        await cancel_and_wait(quiet)  # its cancel is not raised
        assert quiet.cancelled() and stopped == ["stopped"]
        done = asyncio.create_task(asyncio.sleep(0))
        await done
        await cancel_and_wait(done)  # already ended: nothing to do
        failing = asyncio.create_task(fails_on_cancel())
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="close failed"):
            await cancel_and_wait(failing)

    asyncio.run(main())
