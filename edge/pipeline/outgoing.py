"""What goes upstream for a client's request, and what comes back before its
body: the client's end-to-end fields with the edge's forwarding fields, interim
responses passed on, and the response head as the pipeline reads it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from pinedge.edge.http.forwarding import TrustedPeers, forward
from pinedge.edge.http.freshness import format_http_date
from pinedge.edge.http.headers import without_hop_by_hop
from pinedge.edge.pipeline.collapse import Head
from pinedge.edge.upstream.client import Interim, UpstreamResponse

Headers = CIMultiDict[str] | CIMultiDictProxy[str]


def upstream_headers(
    request: web.BaseRequest,
    host: str,
    trusted: TrustedPeers,
    name: str,
    also: tuple[str, ...] = (),
) -> CIMultiDict[str]:
    """The client's end-to-end fields for upstream; the sender sets Host per upstream.
    Framing fields are never copied: the upstream request is framed by what is sent."""
    return forwarded_fields(
        request.headers, request.remote, request.scheme, host, trusted, name, also
    )


def forwarded_fields(
    received: Headers,
    peer: str | None,
    scheme: str,
    host: str,
    trusted: TrustedPeers,
    name: str,
    also: tuple[str, ...] = (),
) -> CIMultiDict[str]:
    """upstream_headers for a request known by its fields, peer and scheme."""
    headers = without_hop_by_hop(received, also=("Host", "Expect", "Content-Length", *also))
    forward(headers, received, peer, trusted, host, scheme, name)
    return headers


def interim_to(request: web.BaseRequest) -> Interim | None:
    """Pass an upstream's interim responses (103 Early Hints) on to this client as
    they arrive: never to an HTTP/1.0 client (RFC 9110 §15.2), never stored."""
    if request.version < aiohttp.HttpVersion11:
        return None
    return interim_writer(lambda: request.transport)


def interim_writer(transport_of: Callable[[], asyncio.BaseTransport | None]) -> Interim:
    """Interim responses written to an HTTP/1.1 client's connection, while it is open."""

    def write(code: int, reason: str, fields: CIMultiDictProxy[str]) -> None:
        transport = transport_of()
        if transport is None or transport.is_closing():
            return
        kept = without_hop_by_hop(fields, also=("Content-Length",))
        head = f"HTTP/1.1 {code} {reason or 'Informational'}\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in kept.items()
        )
        cast(asyncio.WriteTransport, transport).write(head.encode("latin-1", "replace") + b"\r\n")

    return write


def response_head(response: UpstreamResponse, response_time: float) -> Head:
    # The fields are read-only, the parser's own.
    return head_of(response.status, response.reason or "", response.headers, response_time)


def head_of(status: int, reason: str, headers: Headers, response_time: float) -> Head:
    """An upstream response's head as the pipeline reads it: with a Date (the time it
    came) if it came without one (RFC 9110 §6.6.1)."""
    if "Date" not in headers:
        headers = CIMultiDict(headers)
        headers["Date"] = format_http_date(response_time)
    if not isinstance(headers, CIMultiDictProxy):
        headers = CIMultiDictProxy(headers)
    return Head(status, reason, headers, response_time)


def upstream_age(head: Head) -> float | None:
    value = head.headers.get("Age")
    return float(value) if value and value.isdigit() else None
