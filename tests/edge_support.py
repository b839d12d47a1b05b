"""What edge tests share: a scripted origin, a started edge, a client's view of a reply."""

from __future__ import annotations

import asyncio
import collections
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDictProxy, MultiMapping
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
    """A programmable origin, like a Varnish `txresp`: `reply(path, body, status,
    headers)` or `handle(path, handler)`; it counts what reached it in `hits`."""

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


async def raw_head(edge: RunningEdge, payload: bytes) -> bytes:
    """Send `payload` as it is on a new connection; the head of the answer as received."""
    host, port = edge.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(payload)
    await writer.drain()
    async with asyncio.timeout(3):
        head = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    return head


@dataclass(frozen=True)
class NotStored:
    """A row of a not-stored table: what the origin answers, how the client asks and
    how the edge is set; the edge must then reach the origin for every request."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)  # the origin's
    body: bytes = b"body"
    handler: Handler | None = None  # answers instead of status, headers and body
    request: Mapping[str, str] = field(default_factory=dict)  # the request's headers
    later: Mapping[str, str] | None = None  # the later requests' headers, if not the same
    settings: Mapping[str, Any] = field(default_factory=dict)  # the edge's
    requests: int = 2


async def check_not_stored(
    row: NotStored, scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    """Script the reply, send the requests: each gets the origin's answer as a miss
    (fwd=miss, never a hit), none asked as `row.request` is stored, and the origin saw
    every one."""
    path = "/not-stored"
    if row.handler is None:
        scripted.reply(path, row.body, row.status, dict(row.headers))
    else:
        scripted.handle(path, row.handler)
    edge = await start_edge(scripted.url, **row.settings)
    for number in range(row.requests):
        as_the_row_asks = number == 0 or row.later is None
        headers = row.request if as_the_row_asks or row.later is None else row.later
        reply = await send(client, edge.url + path, dict(headers))
        assert (reply.status, reply.body) == (row.status, row.body)
        assert reply.cache.get("fwd") == "miss", reply.headers["Cache-Status"]
        if as_the_row_asks:
            assert "stored" not in reply.cache, reply.headers["Cache-Status"]
    assert scripted.hits[path] == row.requests


def our_entry(headers: MultiMapping[str]) -> list[str]:
    """This node's (the last) Cache-Status entry, split into name and parameters."""
    value = ", ".join(headers.getall("Cache-Status", ()))
    entries = [e.strip() for e in value.split(",") if e.strip()]
    assert entries, "no Cache-Status on the response"
    params = [p.strip() for p in entries[-1].split(";")]
    assert params[0] == NAME, entries
    return params


def ttl(entry: list[str]) -> int:
    """The ttl parameter of a Cache-Status entry split by our_entry."""
    return int(next(p for p in entry if p.startswith("ttl=")).removeprefix("ttl="))


# An origin's answer with a field of each kind an edge treats apart: its own
# (Surrogate-Key), a validator, one it keeps, another cache's Cache-Status.
VARIED_FIELDS = {
    "Cache-Control": "max-age=60",
    "ETag": '"v1"',
    "Surrogate-Key": "a b",
    "X-Custom": "kept",
    "Cache-Status": "upstream; hit",
}
IGNORED = {"date", "server", "age"}  # age: the two edges may straddle a second


def comparable(headers: object) -> set[tuple[str, str]]:
    """A response's fields for comparing two edges: without the clock's (Date, Age,
    the ttl in Cache-Status, which may straddle a second between them)."""
    return {
        (k.lower(), re.sub(r"; ttl=-?\d+", "", v) if k.lower() == "cache-status" else v)
        for k, v in headers.items()  # type: ignore[attr-defined]  # a multidict
        if k.lower() not in IGNORED
    }


async def raw_exchange(edge: RunningEdge, payload: bytes, responses: int) -> list[bytes]:
    """Send `payload` on one connection and read `responses` HTTP responses back."""
    host, port = edge.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(payload)
    await writer.drain()
    out = []
    async with asyncio.timeout(5):
        for _ in range(responses):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            out.append(head + await reader.readexactly(length))
    writer.close()
    return out
