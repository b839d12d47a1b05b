"""Fixtures: a scripted origin, a raw one, edges on both HTTP paths, and a client, all
on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from edge_support import NAME, RunningEdge, Scripted, StartEdge

from pinedge.core.config import build
from pinedge.edge.node.config import EdgeConfig
from pinedge.edge.node.server import EdgeServer


@pytest.fixture
async def scripted() -> AsyncIterator[Scripted]:
    origin = Scripted()
    server = web.Server(origin.dispatch, auto_decompress=False)  # type: ignore[arg-type]  # reads a BaseRequest's
    runner = web.ServerRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    origin.url = f"http://127.0.0.1:{port}"
    yield origin
    await runner.cleanup()


# An origin below HTTP: a test's own handler of each connection's bytes.
Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def raw_origin() -> AsyncIterator[Callable[[Answer], Awaitable[str]]]:
    """Start a TCP server that answers with whatever bytes the test writes."""
    servers: list[asyncio.Server] = []
    writers: list[asyncio.StreamWriter] = []

    async def start(answer: Answer) -> str:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            await answer(reader, writer)

        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    yield start
    for writer in writers:
        writer.transport.abort()
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.fixture(params=["fast", "plain"])
async def start_edge(request: pytest.FixtureRequest) -> AsyncIterator[StartEdge]:
    """Every edge test runs twice: with the hit path answering plain hits straight
    from the parsed request, and with every request going through Edge.handle."""
    started: list[EdgeServer] = []
    fast_path = request.param == "fast"

    async def start(origin: str | None = None, **settings: Any) -> RunningEdge:
        values: dict[str, Any] = {
            "listen": "127.0.0.1:0",
            "admin": "127.0.0.1:0",
            "name": NAME,
            "drain_time": "2s",
            "fast_path": fast_path,
            "probe_interval": "0s",  # tests of probes turn them on
        }
        if origin is not None:
            values["origin"] = origin
        values.update(settings)
        server = EdgeServer(build(EdgeConfig, values))
        await server.start()
        started.append(server)
        return RunningEdge(
            server, f"http://127.0.0.1:{server.port}", f"http://127.0.0.1:{server.admin_port}"
        )

    yield start
    for server in reversed(started):
        await server.stop()


@pytest.fixture
async def edge(scripted: Scripted, start_edge: StartEdge) -> RunningEdge:
    """An edge in front of the scripted origin, with default settings."""
    return await start_edge(scripted.url)


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        yield session
