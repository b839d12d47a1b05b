"""Fixtures for the upstream client on its own: the client, and origins on raw
sockets that answer as each test scripts them. Each test runs on asyncio's own loop
and on uvloop, the loop the edge runs on: their transports differ in what they
accept and when they call back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvloop

from pinedge.edge.upstream.client import Timeouts, Upstream

TIMEOUTS = Timeouts(connect=2.0, first_byte=2.0, total=10.0)

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@dataclass
class RawOrigin:
    """A TCP server on loopback; `answer(reader, writer, n)` serves its n-th connection."""

    url: str = ""
    connections: int = 0
    open: int = 0  # connections open now
    most_open: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)  # one closed, by either side


@pytest.fixture
async def upstream() -> AsyncIterator[Callable[..., Upstream]]:
    """Make a client (TIMEOUTS unless told otherwise); all are closed after the test."""
    made: list[Upstream] = []

    def make(timeouts: Timeouts = TIMEOUTS, **settings: Any) -> Upstream:
        client = Upstream(timeouts, **settings)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


@pytest.fixture
async def raw_origin() -> AsyncIterator[Callable[[Answer], Awaitable[RawOrigin]]]:
    servers: list[asyncio.Server] = []
    writers: list[asyncio.StreamWriter] = []
    tasks: set[asyncio.Task[None]] = set()

    async def start(answer: Answer) -> RawOrigin:
        origin = RawOrigin()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            writers.append(writer)
            origin.connections += 1
            origin.open += 1
            origin.most_open = max(origin.most_open, origin.open)
            try:
                await answer(reader, writer, origin.connections)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                origin.open -= 1
                origin.closed.set()
                writer.close()
                tasks.discard(task)

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(server)
        origin.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        return origin

    yield start
    for writer in writers:
        writer.transport.abort()
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for server in servers:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)
