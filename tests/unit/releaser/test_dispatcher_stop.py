"""SIGTERM's stop (dispatcher.runtime._stop) is cut at SCHEDULER_DISPATCH_SHUTDOWN_TIMEOUT_MS
whichever step hangs: a delivery that never ends, or a transaction that never answers. What is
not committed is read again after the restart, so giving up is safe; waiting is not bounded."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

from scheduler_releaser.dispatcher.core import Dispatcher
from scheduler_releaser.dispatcher.runtime import _stop
from scheduler_releaser.dispatcher.sink import TransactionalSink
from scheduler_releaser.metrics import DispatchMetrics

pytestmark = pytest.mark.unit


async def forever() -> None:
    await asyncio.Event().wait()


async def at_once() -> None:
    return None


class Stub:
    def __init__(self, **attributes: Any) -> None:
        self.__dict__.update(attributes)


@pytest.mark.parametrize("hangs", ["drain", "flush"])
def test_a_stop_with_a_hanging_step_ends_at_the_timeout(hangs: str) -> None:
    dispatcher = Stub(in_flight=3, stopping=False, drain=forever if hangs == "drain" else at_once)
    sink = Stub(pending=2, flush=forever if hangs == "flush" else at_once)

    async def stop() -> tuple[bool, float]:
        loop = asyncio.get_running_loop()
        began = loop.time()
        done = await _stop(
            cast(Dispatcher, dispatcher),
            cast(TransactionalSink, sink),
            DispatchMetrics(CollectorRegistry()),
            timeout_ms=50,
        )
        return done, loop.time() - began

    done, took_s = asyncio.run(stop())
    assert done  # not fenced: the exit path still flushes and closes
    assert dispatcher.stopping  # no new delivery starts meanwhile
    assert took_s < 5  # cut at the timeout, not waiting on the step
