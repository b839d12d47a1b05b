"""A bounded thread pool for CPU work off the event loop (imgproxy's `workers`).

At most `threads` jobs run and `queue` more wait; one more is refused at once
with PoolFull, never queued. A place is freed when the job itself ends, not
when its awaiting task does: a cancelled request whose transform still runs
keeps its place, so cancellations cannot grow a hidden backlog. A job still
waiting when its task is cancelled is dropped unrun.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class PoolFull(Exception):
    """Every thread is busy and the queue is full; ask again in `retry_after` seconds."""

    def __init__(self, retry_after: int = 1) -> None:
        super().__init__(f"the transform pool is full; retry after {retry_after}s")
        self.retry_after = retry_after


class TransformPool:
    """`threads` workers and at most `queue` waiting jobs."""

    def __init__(self, threads: int = 2, queue: int = 16, retry_after: int = 1) -> None:
        if threads < 1 or queue < 0:
            raise ValueError("a pool needs at least one thread and a queue of zero or more")
        self.threads = threads
        self.capacity = threads + queue
        self.retry_after = retry_after
        self._places = threading.BoundedSemaphore(self.capacity)
        self._taken = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="pinedge-transform")

    @property
    def in_flight(self) -> int:
        """Jobs running or waiting now."""
        return self._taken

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on a worker thread; PoolFull at once if no place is free."""
        if not self._places.acquire(blocking=False):
            raise PoolFull(self.retry_after)
        with self._lock:
            self._taken += 1
        try:
            future = self._executor.submit(fn, *args)
        except BaseException:
            self._release(None)
            raise
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def _release(self, _future: Future[Any] | None) -> None:
        with self._lock:
            self._taken -= 1
        self._places.release()

    def close(self) -> None:
        """Stop taking jobs; waiting ones are cancelled, running ones finish in the background."""
        self._executor.shutdown(wait=False, cancel_futures=True)
