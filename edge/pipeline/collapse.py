"""Collapsed forwarding: one upstream fetch (or one transform) per key, however
many ask at once, in this worker and across the node's workers.

`Once` is the primitive every caller uses: `await once(key, make)` runs `make`
for the first to ask and gives the others its Fill. Underneath, a worker's
`CollapseTable.acquire(key)` answers "you lead" (a new Fill) or "you wait" (the
Fill in progress), and the store's fills (edge/store/fills.py) do the same
between workers. The
leader's Fill settles once with an outcome; if the leader vanishes without
settling, followers see ABANDONED and compete again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from enum import Enum, auto
from typing import Protocol

from multidict import CIMultiDict, CIMultiDictProxy

from pinedge.edge.store.entry import Entry
from pinedge.edge.store.fills import FillVerdict

HANDED_OVER = object()  # the position Fill.hold_start() holds


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


NO_FIELDS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())


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
        self.came_whole = False  # the body had all arrived when the head was read
        self.request_headers: CIMultiDictProxy[str] = NO_FIELDS
        self.followers = 0
        self.chunks: list[bytes | None] = []  # None: read by every reader, let go
        self.received = 0
        # Once a body is too large to store it is no longer kept whole: chunks every
        # reader has passed are dropped, and the fetch waits while the slowest
        # reader is more than OVERSIZED_WINDOW behind.
        self.oversized = False
        self.held = 0
        self.positions: dict[object, int] = {}
        self.done = False
        self.body_error: BaseException | None = None
        self.released = False  # the leader is done (and stored what it would)
        # Made when something first waits: most fills have nobody waiting on them.
        self._consumed: asyncio.Event | None = None
        self._settled: asyncio.Event | None = None
        self._released: asyncio.Event | None = None
        self._progress: asyncio.Event | None = None

    def node_outcome(self) -> FillVerdict:
        """What waiting workers are told when this fill ends."""
        if self.outcome is Outcome.UPDATED or self.stored:
            return FillVerdict.STORED
        if self.outcome is Outcome.ERROR:
            return FillVerdict.ERROR
        if self.outcome is Outcome.ABANDONED:
            return FillVerdict.ABANDONED
        return FillVerdict.PASS

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
        if self._settled is not None:
            self._settled.set()
        if outcome is not Outcome.STREAM:
            self.finish()

    async def wait(self, timeout: float) -> Outcome | None:
        """The outcome, or None if it did not come within `timeout` seconds."""
        if self.outcome is not None:
            return self.outcome
        if self._settled is None:
            self._settled = asyncio.Event()
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
            consumed = self._consumed = asyncio.Event()
            await consumed.wait()
            self.let_go()

    def hold_start(self) -> None:
        """Keep the body from its first chunk for a reader still to come (a request
        handed from the miss path to the general path), until that reader starts
        (body(handed_over=True)) or release_start()."""
        self.positions[HANDED_OVER] = 0

    def release_start(self) -> None:
        if self.positions.pop(HANDED_OVER, None) is not None:
            self._read()

    def finish(self, error: BaseException | None = None) -> None:
        if self.done:
            return
        self.body_error = error
        self.done = True
        self._wake()

    async def body(self, handed_over: bool = False) -> AsyncGenerator[bytes, None]:
        """Every chunk from the first, waiting for more until the fetch ends;
        `handed_over`: for the request hold_start() kept them for, which now reads."""
        reader = object()
        index = 0
        self.positions[reader] = 0
        if handed_over:
            self.positions.pop(HANDED_OVER, None)
        try:
            while True:
                while index < len(self.chunks):
                    chunk = self.chunks[index]
                    if chunk is None:
                        raise TruncatedFill("this reader joined after the body was let go")
                    yield chunk
                    index += 1
                    self.positions[reader] = index
                    self._read()
                if self.done:
                    if self.body_error is not None:
                        raise self.body_error
                    return
                if self._progress is None:
                    self._progress = asyncio.Event()
                await self._progress.wait()
        finally:
            del self.positions[reader]
            self._read()

    async def wait_released(self) -> None:
        """Until the leader is done with this fill (and stored what it would)."""
        if not self.released:
            if self._released is None:
                self._released = asyncio.Event()
            await self._released.wait()

    def release(self) -> None:
        self.released = True
        if self._released is not None:
            self._released.set()

    def _wake(self) -> None:
        """Tell the readers waiting for more that something came (a chunk, the end)."""
        progress, self._progress = self._progress, None
        if progress is not None:
            progress.set()

    def _read(self) -> None:
        """Tell until_read() that a reader moved on."""
        if self._consumed is not None:
            self._consumed.set()


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
        fill.release()
        if self.on_release is not None:
            self.on_release(fill)


class NodeLocks(Protocol):
    """Collapse across a node's workers (edge/store/fills.py)."""

    async def acquire(self, key: str, timeout: float) -> FillVerdict: ...

    def release(self, key: str, outcome: FillVerdict) -> None: ...


class Role(Enum):
    """How a caller of `Once` got its Fill."""

    LED = auto()  # it ran `make`
    FOLLOWED = auto()  # another request in this worker ran it: the fill is settled
    SHARED = auto()  # another worker stored it: `fill.entry` is what it stored
    TIMED_OUT = auto()  # the leader did not settle within the collapse timeout
    ABANDONED = auto()  # every attempt's leader went away without settling


# `make(fill)` settles the fill; True when it hands the fill's release on (to a
# task still reading the body or writing the store), False when it is done with it.
Make = Callable[[Fill], Awaitable[bool]]


class Once:
    """One `make` per key however many ask: the collapse primitive of fills and variants."""

    def __init__(self, node: NodeLocks | None, timeout: float) -> None:
        self.node = node
        self.timeout = timeout
        self.table = CollapseTable(on_release=self._release_node)

    async def __call__(
        self,
        key: str,
        make: Make,
        stored: Callable[[], Awaitable[Entry | None]],
        *,
        attempts: int = 1,
        alone: bool = False,
    ) -> tuple[Fill, Role]:
        """The fill of `key` and how this caller got it. `stored` loads what another
        worker stored under `key` (None when it is not usable); `alone` runs `make`
        without collapsing (a request whose answer is its own, e.g. authorised);
        a follower whose leader abandoned competes again, up to `attempts` times."""
        fill: Fill | None = None
        for _attempt in range(attempts):
            if alone:
                fill, leader = Fill(key), True
            else:
                fill, leader = self.table.acquire(key)
            if not leader:
                outcome = await fill.wait(self.timeout)
                if outcome is None:
                    return fill, Role.TIMED_OUT
                if outcome is Outcome.ABANDONED:
                    continue
                return fill, Role.FOLLOWED
            handed_on = False
            try:
                if not alone and await self._join_node(fill, stored):
                    return fill, Role.SHARED
                handed_on = await make(fill)
            finally:
                if not handed_on:
                    self.table.release(fill)
            return fill, Role.LED
        assert fill is not None, "attempts is at least 1"
        return fill, Role.ABANDONED

    def release(self, fill: Fill) -> None:
        """Let a handed-on fill go (its body is read, its entry stored)."""
        self.table.release(fill)

    def lead_if_idle(self, key: str) -> Fill | None:
        """A fill to lead when nothing in this worker is fetching `key` (a background
        refresh, which nobody waits for); None otherwise."""
        if self.table.in_progress(key):
            return None
        fill, leader = self.table.acquire(key)
        return fill if leader else None

    async def _join_node(self, fill: Fill, stored: Callable[[], Awaitable[Entry | None]]) -> bool:
        """Collapse across the node's workers: True when another worker stored the key
        (the fill settles with it); otherwise this worker makes it, holding the
        node-wide lock when it got it (released with the fill)."""
        if self.node is None:
            return False
        for _attempt in range(2):
            verdict = await self.node.acquire(fill.key, self.timeout)
            if verdict is FillVerdict.LEAD:
                fill.node_lock = True
                return False
            if verdict is FillVerdict.STORED:
                entry = await stored()
                if entry is None:
                    return False
                fill.settle(Outcome.UPDATED, entry=entry)
                return True
            if verdict is not FillVerdict.ABANDONED:
                return False
        return False

    def _release_node(self, fill: Fill) -> None:
        if fill.node_lock and self.node is not None:
            fill.node_lock = False
            self.node.release(fill.key, fill.node_outcome())
