"""Worker processes that share a port (SO_REUSEPORT): started, replaced when they die, stopped.

A `WorkerPool` knows nothing of what a worker runs: `start_process(slot)`
returns a started process for a slot (a small number a worker keeps for its
life, e.g. its row in a shared table; a replacement takes its predecessor's).
The service calls `replace_dead()` every CHECK_EVERY seconds. A worker that
dies at start-up (within STARTUP_WINDOW of starting) is replaced only after a
pause that doubles with each such death in a row (BACKOFF_FIRST up to
BACKOFF_MAX); after CRASH_LIMIT of them in a row the pool gives up:
`replace_dead()` logs why and returns False, and the service exits non-zero.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess

log = logging.getLogger("pinedge.workers")

SPAWN = multiprocessing.get_context("spawn")
CHECK_EVERY = 0.2
STARTUP_WINDOW = 10.0  # a worker that dies sooner than this after starting died at start-up
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 4.0
CRASH_LIMIT = 5  # start-up deaths in a row before the pool gives up


@dataclass(slots=True)
class Worker:
    process: BaseProcess
    slot: int
    started: float = field(default_factory=time.monotonic)
    replace_at: float | None = None  # once dead: when its replacement may start


class WorkerPool:
    def __init__(
        self, start_process: Callable[[int], BaseProcess], slots: int, stop_timeout: float
    ) -> None:
        self.start_process = start_process
        self.slots = slots
        self.stop_timeout = stop_timeout  # after SIGTERM, how long a worker may drain
        self.workers: list[Worker] = []
        self.slots_in_use: set[int] = set()
        self.restarts = 0
        self.startup_deaths = 0  # in a row
        self.stopping = False

    def alive(self) -> int:
        return sum(worker.process.is_alive() for worker in self.workers)

    def spawn(self, slot: int | None = None) -> Worker:
        """A new worker (not yet in `workers`), in `slot` or the lowest free one."""
        if slot is None:
            free = set(range(self.slots)) - self.slots_in_use
            if not free:
                raise RuntimeError(f"all {self.slots} worker slots are in use")
            slot = min(free)
        self.slots_in_use.add(slot)
        return Worker(self.start_process(slot), slot)

    def start(self, count: int) -> None:
        self.workers.extend(self.spawn() for _ in range(count))

    def replace_dead(self) -> bool:
        """Start a worker in the place of each that died (after a pause if it died
        at start-up); False, having said why, once they keep dying at start-up."""
        now = time.monotonic()
        for index, worker in enumerate(self.workers):
            if self.stopping or worker.process.is_alive():
                continue
            if worker.replace_at is None:
                at_startup = now - worker.started < STARTUP_WINDOW
                self.startup_deaths = self.startup_deaths + 1 if at_startup else 0
                code = worker.process.exitcode
                if self.startup_deaths >= CRASH_LIMIT:
                    log.error(
                        "workers keep dying at start-up (%d in a row, the last pid %s with "
                        "code %s): giving up",
                        self.startup_deaths,
                        worker.process.pid,
                        code,
                    )
                    return False
                pause = backoff(self.startup_deaths) if at_startup else 0.0
                worker.replace_at = now + pause
                log.warning(
                    "worker pid %s exited with code %s; starting another%s",
                    worker.process.pid,
                    code,
                    f" in {pause:.1f}s" if pause else "",
                )
            if now < worker.replace_at:
                continue
            self.slots_in_use.discard(worker.slot)
            self.restarts += 1
            self.workers[index] = self.spawn(worker.slot)
        return True

    async def stop_worker(self, worker: Worker) -> None:
        """SIGTERM, `stop_timeout` seconds to drain, then SIGKILL."""
        process = worker.process
        if process.is_alive():
            process.terminate()
        deadline = time.monotonic() + self.stop_timeout
        while process.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if process.is_alive():
            log.warning("worker pid %s did not drain in time; killing it", process.pid)
            process.kill()
        process.join(1)
        if not process.is_alive():
            self.slots_in_use.discard(worker.slot)

    async def stop(self) -> None:
        """Stop every worker at once; none is replaced from now on."""
        self.stopping = True
        await asyncio.gather(*(self.stop_worker(worker) for worker in self.workers))


def backoff(deaths_in_a_row: int) -> float:
    """The pause before replacing a worker that died at start-up, the n-th time in a row."""
    return min(BACKOFF_FIRST * 2 ** max(deaths_in_a_row - 1, 0), BACKOFF_MAX)
