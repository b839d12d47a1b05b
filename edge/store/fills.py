"""Node-wide collapsed forwarding: one worker fetches a key, the others wait for its verdict."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import StrEnum


class FillVerdict(StrEnum):
    """What the owner tells a worker that asks to fetch a key. The values are what
    travels between workers and the owner."""

    LEAD = "lead"  # fetch it, then release it with how the fetch ended
    STORED = "stored"  # the worker that fetched it stored it: look it up
    PASS = "pass"  # it was not storable: fetch it alone
    ERROR = "error"  # its fetch failed: fetch it alone
    ABANDONED = "abandoned"  # its worker went away without saying: ask again
    TIMEOUT = "timeout"  # no verdict in time, or no owner to ask: fetch it alone


# A verdict from its value on the wire by a dict lookup: FillVerdict(value) took
# 400 ns (Python 3.11), 20 times the str() a worker's link called before.
VERDICTS: dict[str, FillVerdict] = {verdict.value: verdict for verdict in FillVerdict}


@dataclass(slots=True)
class Waiters:
    leader: object
    futures: list[asyncio.Future[FillVerdict]] = field(default_factory=list)


class Fills:
    """The keys being fetched somewhere in the node, each with the worker fetching
    it (`who`, any object that stands for the worker) and the workers waiting."""

    def __init__(self) -> None:
        self.fetching: dict[str, Waiters] = {}

    def claim(self, key: str, who: object) -> asyncio.Future[FillVerdict] | None:
        """None when `who` now leads the fetch of `key`; otherwise a future of how the
        fetching worker's fetch ends."""
        waiting = self.fetching.get(key)
        if waiting is None:
            self.fetching[key] = Waiters(who)
            return None
        future: asyncio.Future[FillVerdict] = asyncio.get_running_loop().create_future()
        waiting.futures.append(future)
        return future

    async def acquire(self, key: str, who: object, timeout: float) -> FillVerdict:
        """LEAD if `who` should fetch `key`; otherwise, once the fetching worker
        releases it, how its fetch ended (STORED, PASS, ERROR, ABANDONED), or
        TIMEOUT after `timeout` seconds."""
        waiting = self.claim(key, who)
        if waiting is None:
            return FillVerdict.LEAD
        try:
            return await asyncio.wait_for(waiting, timeout)
        except TimeoutError:
            return FillVerdict.TIMEOUT

    def release(self, key: str, outcome: FillVerdict, who: object) -> None:
        waiting = self.fetching.get(key)
        if waiting is None or waiting.leader is not who:
            return
        del self.fetching[key]
        for future in waiting.futures:
            if not future.done():
                future.set_result(outcome)

    def release_all(self, who: object) -> None:
        """A worker went away: whatever it was fetching is abandoned."""
        for key in [k for k, w in self.fetching.items() if w.leader is who]:
            self.release(key, FillVerdict.ABANDONED, who)
