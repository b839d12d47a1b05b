"""Running a service: uvloop, start, wait for a signal, drain within a deadline, exit code.

`run(services, ...)` starts each service in order (`await start()`), waits for
SIGTERM or SIGINT (or a service's own `Stop.request`), then stops them in
reverse (`await stop()`, which drains) within `deadline` seconds. SIGHUP calls
`reload` where the service has one, and keeps its default action (end the
process) where it has none. The exit code says how it went: EXIT_OK after a
clean stop, EXIT_FAILED when a service asked to stop because it failed or the
drain overran its deadline; EXIT_USAGE is for configuration errors, before any
of this runs.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol, TypeVar

log = logging.getLogger("pinedge.runner")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

T = TypeVar("T")


class Service(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Stop:
    """The request to end the run: from a signal, or from a service that cannot go on."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.exit_code = EXIT_OK
        self.reason = ""

    def request(self, exit_code: int = EXIT_OK, reason: str = "") -> None:
        """End the run with `exit_code` (the first request decides it)."""
        if not self.requested.is_set():
            self.exit_code, self.reason = exit_code, reason
            self.requested.set()

    async def wait(self) -> None:
        await self.requested.wait()


async def serve(
    services: Sequence[Service],
    *,
    stop: Stop | None = None,
    reload: Callable[[], object] | None = None,
    deadline: float = 30.0,
) -> int:
    """Start `services`, run until asked to stop, stop them; the exit code."""
    stop = stop or Stop()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.request, EXIT_OK, signal.Signals(signum).name)
    if reload is not None:
        loop.add_signal_handler(signal.SIGHUP, reload)
    started: list[Service] = []
    try:
        for service in services:
            await service.start()
            started.append(service)
        await stop.wait()
        if stop.exit_code == EXIT_OK:
            log.info("%s received, shutting down", stop.reason or "stop")
        else:
            log.error("stopping: %s", stop.reason)
    finally:  # also when a start failed: what started is stopped, then it raises
        try:
            async with asyncio.timeout(deadline):
                for service in reversed(started):
                    await service.stop()
        except TimeoutError:
            log.error("did not finish stopping within %gs; exiting anyway", deadline)
            stop.exit_code = EXIT_FAILED
        for signum in (*STOP_SIGNALS, *((signal.SIGHUP,) if reload is not None else ())):
            loop.remove_signal_handler(signum)
    return stop.exit_code


def watch(work: Coroutine[Any, Any, None], stop: Stop) -> asyncio.Task[None]:
    """`work` as a task that ends the run (EXIT_FAILED) if it fails, saying why."""

    name = getattr(work, "__qualname__", repr(work))

    def ended(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", name, exc_info=task.exception())
            stop.request(EXIT_FAILED, f"{name} failed: {task.exception()!r}")

    task = asyncio.create_task(work)
    task.add_done_callback(ended)
    return task


def run(
    services: Sequence[Service],
    *,
    stop: Stop | None = None,
    reload: Callable[[], object] | None = None,
    deadline: float = 30.0,
) -> int:
    """`serve` on a new event loop (uvloop where it is installed); the exit code."""
    return run_loop(serve(services, stop=stop, reload=reload, deadline=deadline))


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to its end on a new event loop: uvloop where it is installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
