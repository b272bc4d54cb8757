"""Blocking store calls run on a bounded thread pool, off the event loop; Cassandra driver
futures can also be awaited on the loop directly (`driver_results`).

The pool is made on first use and released at application shutdown; an app that is started
again (tests run the lifespan more than once) gets a fresh pool.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from cassandra.cluster import ResponseFuture

P = ParamSpec("P")
R = TypeVar("R")


class BlockingIo:
    def __init__(self, threads: int) -> None:
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self._threads, thread_name_prefix="ingest-io"
                )
            return self._pool

    async def __call__(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor(), functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


async def driver_results(futures: Sequence[ResponseFuture]) -> None:
    """Await Cassandra driver futures on the event loop (no thread parked per request);
    raise the first failure once all settled."""
    loop = asyncio.get_running_loop()
    waiters = []
    for future in futures:
        waiter: asyncio.Future[None] = loop.create_future()

        def ok(_rows: object, waiter: asyncio.Future[None] = waiter) -> None:
            loop.call_soon_threadsafe(_resolve, waiter, None)

        def failed(exc: BaseException, waiter: asyncio.Future[None] = waiter) -> None:
            loop.call_soon_threadsafe(_resolve, waiter, exc)

        future.add_callbacks(ok, failed)
        waiters.append(waiter)
    outcomes = await asyncio.gather(*waiters, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


def _resolve(waiter: asyncio.Future[None], exc: BaseException | None) -> None:
    if waiter.done():
        return
    if exc is None:
        waiter.set_result(None)
    else:
        waiter.set_exception(exc)
