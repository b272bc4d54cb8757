"""Ending an asyncio task from another one, without swallowing the caller's own cancel."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel `task` and wait until it has ended. The task's own failure (not its cancel) is
    raised here. A cancel of the caller that lands meanwhile ends the caller: awaiting the task
    under `suppress(CancelledError)` would swallow it with the task's, and the caller would go
    on as if it had not been cancelled."""
    task.cancel()
    outcomes = await asyncio.gather(task, return_exceptions=True)
    if isinstance(outcome := outcomes[0], Exception):
        raise outcome
