"""Fault injection, scripted over HTTP: latency, errors, a dead origin, cut bodies.

`POST /_origin/faults` on the control listener (control.py) replaces the whole
fault set with its JSON body (keys left out take their defaults), `GET` reads
it, `DELETE` clears it. Faults apply to the public listener only, and only to
paths under `prefix` when one is given.
In order, a faulty request: waits `latency` seconds; if `down`, loses its
connection with no response; gets `error_status` on a fixed share of requests
(`error_rate`); if `truncate`, gets its headers and half its body, then the
connection closes.

The error pattern is counted, not random: with rate r, request n errs when
floor(n·r) moves, so 1 always errs, 0 never does, 0.5 errs every other time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import struct
from contextlib import suppress
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

log = logging.getLogger("pinedge.origin")

MAX_LATENCY = 600.0


@dataclass(frozen=True)
class Faults:
    latency: float = 0.0
    error_rate: float = 0.0
    error_status: int = 503
    down: bool = False
    truncate: bool = False
    prefix: str | None = None

    def applies_to(self, path: str) -> bool:
        return self.prefix is None or path.startswith(self.prefix)


def _number(key: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number, got {json_type(value)}")
    if not low <= value <= high:
        raise ValueError(f"{key} must be between {low:g} and {high:g}, got {value}")
    return float(value)


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, got {json_type(value)}")
    return value


def _status(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 400 <= value <= 599:
        raise ValueError(f"{key} must be an HTTP error status from 400 to 599, got {value!r}")
    return value


def _prefix(key: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"{key} must be a path starting with /, got {value!r}")
    return value


_CHECKS = {
    "latency": lambda k, v: _number(k, v, 0, MAX_LATENCY),
    "error_rate": lambda k, v: _number(k, v, 0, 1),
    "error_status": _status,
    "down": _flag,
    "truncate": _flag,
    "prefix": _prefix,
}


def json_type(value: Any) -> str:
    names = {bool: "a boolean", str: "a string", list: "a list", dict: "an object"}
    return "null" if value is None else names.get(type(value), repr(value))


def parse(document: Any) -> Faults:
    """A fault set from a decoded JSON body; ValueError with the reason if it is wrong."""
    if not isinstance(document, dict):
        raise ValueError(f"expected a JSON object, got {json_type(document)}")
    unknown = sorted(set(document) - set(_CHECKS))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (known keys: {', '.join(_CHECKS)})")
    checked = {key: _CHECKS[key](key, value) for key, value in document.items()}
    return Faults(**checked)  # type: ignore[arg-type]  # each value of the type its key's check gives


class FaultState:
    """The active faults and the count that drives the error pattern."""

    def __init__(self) -> None:
        self.set(Faults())

    def set(self, faults: Faults) -> None:
        self.faults = faults
        self._rate = Fraction(faults.error_rate).limit_denominator(1_000_000)
        self._seen = 0

    def next_errs(self) -> bool:
        """Whether the next faulty request gets the error status."""
        before = self._seen * self._rate
        self._seen += 1
        return int(self._seen * self._rate) > int(before)


FAULTS = web.AppKey("faults", FaultState)


def abort_connection(request: web.BaseRequest) -> None:
    """Drop the connection at once (with a TCP reset where the socket allows it)."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with suppress(OSError, AttributeError, TypeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def send_truncated(request: web.BaseRequest, response: web.Response) -> web.StreamResponse:
    """Headers with the full Content-Length, half the body, then close the connection."""
    body = bytes(response.body)  # type: ignore[arg-type]  # bytes: the caller checked
    cut = web.StreamResponse(status=response.status, reason=response.reason)
    cut.headers.extend(response.headers)
    cut.content_length = len(body)
    await cut.prepare(request)
    await cut.write(body[: len(body) // 2])
    if request.transport is not None:
        request.transport.close()  # flushes what was written, then closes
    return cut


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[FAULTS]
    faults = state.faults
    if not faults.applies_to(request.path):
        return await handler(request)
    if faults.latency:
        await asyncio.sleep(faults.latency)
    if faults.down:
        abort_connection(request)
        return web.Response(status=503)  # never sent: aiohttp drops it quietly
    if faults.error_rate and state.next_errs():
        return web.Response(
            status=faults.error_status,
            text=f"origin fault: injected {faults.error_status}\n",
            headers={"Cache-Control": "no-store", "X-Origin-Fault": "error"},
        )
    response = await handler(request)
    truncatable = isinstance(response, web.Response) and isinstance(response.body, bytes)
    if faults.truncate and truncatable and response.body and request.method != "HEAD":  # type: ignore[attr-defined]  # a Response, checked above
        return await send_truncated(request, response)  # type: ignore[arg-type]  # checked above
    return response


def _as_json(faults: Faults) -> web.Response:
    return web.json_response(dataclasses.asdict(faults))


async def read(request: web.Request) -> web.Response:
    return _as_json(request.app[FAULTS].faults)


async def replace(request: web.Request) -> web.Response:
    try:
        document = await request.json()
    except ValueError:
        return _bad_request(request, "body is not valid JSON")
    except RecursionError:
        return _bad_request(request, "body nests arrays or objects too deeply")
    try:
        faults = parse(document)
    except ValueError as exc:
        return _bad_request(request, str(exc))
    request.app[FAULTS].set(faults)
    log.info("faults set by %s: %s", request.remote, dataclasses.asdict(faults))
    return _as_json(faults)


def _bad_request(request: web.Request, reason: str) -> web.Response:
    log.warning("faults from %s refused: %s", request.remote, reason)
    return web.json_response({"status": 400, "error": "bad request", "reason": reason}, status=400)


async def clear(request: web.Request) -> web.Response:
    request.app[FAULTS].set(Faults())
    return _as_json(request.app[FAULTS].faults)


def setup(app: web.Application) -> None:
    """Register the fault state of the public app; the middleware is added by app.py."""
    app[FAULTS] = FaultState()


def add_routes(control: web.Application, state: FaultState) -> None:
    """Serve `state` at `/_origin/faults` on the control app."""
    control[FAULTS] = state
    control.router.add_get("/_origin/faults", read)
    control.router.add_post("/_origin/faults", replace)
    control.router.add_delete("/_origin/faults", clear)
