"""What edge tests share: a scripted origin, a started edge, and a client's view of a reply.

`Scripted` is an origin each test programs like a Varnish `txresp`: a path, a
status, headers and a body (or a handler of its own), and it counts what
reached it. The fixtures that start them are in conftest.py.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from multidict import CIMultiDictProxy
from support import PHOTOS

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


@dataclass
class RunningEdge:
    server: EdgeServer
    url: str
    admin_url: str

    async def metrics(self, session: aiohttp.ClientSession) -> str:
        async with session.get(self.admin_url + "/metrics") as response:
            return await response.text()


StartEdge = Callable[..., Awaitable[RunningEdge]]


def serve_photo(scripted: Scripted, name: str) -> None:
    """Script `/img/NAME` as the sample origin's photo NAME, cacheable for ten minutes."""
    photo = (PHOTOS / name).read_bytes()
    scripted.reply(
        f"/img/{name}",
        photo,
        headers={"Content-Type": "image/jpeg", "Cache-Control": "max-age=600"},
    )
