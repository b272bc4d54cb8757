"""Concurrent Cassandra writes for one batch: start them all, wait for all, raise the first error.

The storage ports are synchronous; a small thread pool overlaps them (each call itself issues
its statements asynchronously through the driver). A failure leaves the batch uncommitted; every
write is idempotent by message id, so the retry simply writes everything again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor


class Writer:
    def __init__(self, concurrency: int) -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="bucketer-write"
        )

    def run(self, writes: Sequence[Callable[[], None]]) -> None:
        if len(writes) == 1:
            writes[0]()
            return
        futures: list[Future[None]] = [self._pool.submit(write) for write in writes]
        first_error: BaseException | None = None
        for future in futures:
            error = future.exception()
            if error is not None and first_error is None:
                first_error = error
        if first_error is not None:
            raise first_error

    def close(self) -> None:
        self._pool.shutdown(wait=True)
