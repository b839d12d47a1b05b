"""Collapsed forwarding: one upstream fetch per key, however many ask at once.

`acquire(key)` answers "you fetch" (a new Fill, you lead) or "you wait" (the
Fill in progress). The leader's Fill settles once with an outcome; if the
leader vanishes without settling, followers see ABANDONED and compete again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from enum import Enum

from multidict import CIMultiDict, CIMultiDictProxy

from pinedge.edge.store.entry import Entry


class Outcome(Enum):
    STREAM = "stream"  # a storable response; read its body from the Fill as it arrives
    UPDATED = "updated"  # a 304 refreshed the stored entry; serve `entry`
    PASS = "pass"  # not storable: followers go upstream on their own
    ERROR = "error"  # upstream failed; followers answer from `error` (or stale)
    ABANDONED = "abandoned"  # the leader went away; followers compete again


@dataclass(slots=True)
class Head:
    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    response_time: float


class Fill:
    """One upstream fetch that several clients may read while it arrives."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.outcome: Outcome | None = None
        self.head: Head | None = None
        self.entry: Entry | None = None
        self.error: BaseException | None = None
        self.no_store: str | None = None
        self.node_lock = False  # this fill holds the node-wide fetch of its key
        self.stored = False
        self.request_headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())
        self.followers = 0
        self.chunks: list[bytes | None] = []  # None: read by every reader, let go
        self.received = 0
        # Once a body is too large to store it is no longer kept whole: chunks every
        # reader has passed are dropped, and the fetch waits while the slowest
        # reader is more than OVERSIZED_WINDOW behind.
        self.oversized = False
        self.held = 0
        self.positions: dict[object, int] = {}
        self._consumed = asyncio.Event()
        self.done = False
        self.body_error: BaseException | None = None
        self._settled = asyncio.Event()
        self.released = asyncio.Event()  # set once the leader is done (and stored what it would)
        self._progress = asyncio.Event()

    def node_outcome(self) -> str:
        """What waiting workers are told when this fill ends."""
        if self.outcome is Outcome.UPDATED or self.stored:
            return "stored"
        if self.outcome is Outcome.ERROR:
            return "error"
        if self.outcome is Outcome.ABANDONED:
            return "abandoned"
        return "pass"

    def settle(
        self,
        outcome: Outcome,
        *,
        head: Head | None = None,
        entry: Entry | None = None,
        error: BaseException | None = None,
    ) -> None:
        if self.outcome is not None:
            return
        self.outcome, self.head, self.entry, self.error = outcome, head, entry, error
        self._settled.set()
        if outcome is not Outcome.STREAM:
            self.finish()

    async def wait(self, timeout: float) -> Outcome | None:
        """The outcome, or None if it did not come within `timeout` seconds."""
        try:
            await asyncio.wait_for(self._settled.wait(), timeout)
        except TimeoutError:
            return None
        return self.outcome

    def feed(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.received += len(chunk)
        self.held += len(chunk)
        self._wake()

    def let_go(self) -> None:
        """Drop the chunks every reader has passed (an oversized body's memory)."""
        self.oversized = True
        upto = min(self.positions.values(), default=len(self.chunks))
        for index in range(upto):
            chunk = self.chunks[index]
            if chunk is None:
                continue
            self.held -= len(chunk)
            self.chunks[index] = None

    async def until_read(self, window: int) -> None:
        """Wait while more than `window` bytes wait for the slowest reader."""
        while self.positions and self.held > window:
            self._consumed.clear()
            await self._consumed.wait()
            self.let_go()

    def finish(self, error: BaseException | None = None) -> None:
        if self.done:
            return
        self.body_error = error
        self.done = True
        self._wake()

    async def body(self) -> AsyncIterator[bytes]:
        """Every chunk from the first, waiting for more until the fetch ends."""
        reader = object()
        index = 0
        self.positions[reader] = 0
        try:
            while True:
                while index < len(self.chunks):
                    chunk = self.chunks[index]
                    if chunk is None:
                        raise TruncatedFill("this reader joined after the body was let go")
                    yield chunk
                    index += 1
                    self.positions[reader] = index
                    self._consumed.set()
                if self.done:
                    if self.body_error is not None:
                        raise self.body_error
                    return
                await self._progress.wait()
        finally:
            del self.positions[reader]
            self._consumed.set()

    def _wake(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()


class TruncatedFill(Exception):
    """A reader that came too late for an oversized body's first chunks."""


class CollapseTable:
    """Fills in progress, by key. `on_release` hears of every fill that ends."""

    def __init__(self, on_release: Callable[[Fill], None] | None = None) -> None:
        self._fills: dict[str, Fill] = {}
        self.collapsed = 0
        self.on_release = on_release

    def acquire(self, key: str) -> tuple[Fill, bool]:
        """(fill, True) if the caller leads a new fetch, (fill, False) if it should wait."""
        fill = self._fills.get(key)
        joinable = fill is not None and not fill.oversized and not fill.done
        if fill is not None and joinable and fill.outcome in (None, Outcome.STREAM):
            fill.followers += 1
            self.collapsed += 1
            return fill, False
        fill = Fill(key)
        self._fills[key] = fill
        return fill, True

    def in_progress(self, key: str) -> bool:
        """Whether a fetch of `key` is under way, its response not yet stored: until
        the fill is released, a lookup may still find the version it replaces."""
        return key in self._fills

    def release(self, fill: Fill) -> None:
        """Forget `fill` (its leader is done with it); waiters keep their reference."""
        if fill.outcome is None:
            fill.settle(Outcome.ABANDONED)
        fill.finish()
        if self._fills.get(fill.key) is fill:
            del self._fills[fill.key]
        fill.released.set()
        if self.on_release is not None:
            self.on_release(fill)
