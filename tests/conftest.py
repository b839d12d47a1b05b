"""Shared fixtures: real servers on loopback ports and real HTTP clients.

`scripted` is an origin each test programs like a Varnish `txresp`: a path, a
status, headers and a body (or a handler of its own), and it counts what
reached it. `start_edge` starts a real edge node in front of any origin.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

from pinedge.core.config import build
from pinedge.edge.node.config import EdgeConfig
from pinedge.edge.node.server import EdgeServer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
NAME = "pinedge-test"


@dataclass
class Reply:
    """A response as a client saw it, with our Cache-Status entry parsed."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def cache(self) -> dict[str, str | bool]:
        """Our entry in Cache-Status (the last one): bare parameters map to True."""
        last = self.headers["Cache-Status"].split(",")[-1]
        name, *params = (part.strip() for part in last.split(";"))
        assert name == NAME
        out: dict[str, str | bool] = {}
        for param in params:
            key, eq, value = param.partition("=")
            out[key] = value if eq else True
        return out

    @property
    def hit(self) -> bool:
        return "hit" in self.cache

    @property
    def ttl(self) -> int:
        return int(self.cache["ttl"])

    @property
    def age(self) -> int:
        return int(self.headers["Age"])


async def send(
    client: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str] | None = None,
    *,
    method: str = "GET",
    data: bytes | None = None,
) -> Reply:
    async with client.request(
        method, url, headers=headers, data=data, allow_redirects=False
    ) as response:
        return Reply(response.status, response.headers, await response.read())


@dataclass
class Scripted:
    """A programmable origin: `reply(path, ...)` or `handle(path, handler)`."""

    url: str = ""
    hits: collections.Counter[str] = field(default_factory=collections.Counter)
    requests: list[web.Request] = field(default_factory=list)
    routes: dict[str, Handler] = field(default_factory=dict)

    def reply(
        self,
        path: str,
        body: bytes | str = b"hello",
        status: int = 200,
        headers: dict[str, str] | list[tuple[str, str]] | None = None,
        delay: float = 0.0,
    ) -> None:
        payload = body.encode() if isinstance(body, str) else body

        async def handler(request: web.Request) -> web.StreamResponse:
            if delay:
                await asyncio.sleep(delay)
            return web.Response(status=status, body=payload, headers=headers or {})

        self.routes[path] = handler

    def handle(self, path: str, handler: Handler) -> None:
        self.routes[path] = handler

    def last(self, path: str) -> web.Request:
        return [r for r in self.requests if r.path == path][-1]

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        self.hits[request.path] += 1
        self.requests.append(request)
        handler = self.routes.get(request.path)
        if handler is None:
            return web.Response(status=404, text="no script for this path")
        return await handler(request)


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


@dataclass
class RunningEdge:
    server: EdgeServer
    url: str
    admin_url: str

    async def metrics(self, session: aiohttp.ClientSession) -> str:
        async with session.get(self.admin_url + "/metrics") as response:
            return await response.text()


StartEdge = Callable[..., Awaitable[RunningEdge]]


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
            "name": "pinedge-test",
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
