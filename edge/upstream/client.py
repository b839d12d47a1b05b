"""Requests to an origin: one pooled client, timeouts, errors mapped to 502/504, and
interim (1xx) responses reported as they arrive."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import ClientResponse
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from pinedge.edge.node.aiohttp_private import Connection
from pinedge.edge.pipeline.errors import UpstreamError

# Told of each interim response (1xx other than 100 and 101) to the request being sent
# in this context: (status, reason, fields).
Interim = Callable[[int, str, CIMultiDictProxy[str]], None]
INTERIM: ContextVar[Interim | None] = ContextVar("interim", default=None)


class InterimReportingResponse(ClientResponse):
    """aiohttp reads interim responses and drops them; this one reports each to the
    INTERIM callback of the context that sent the request (103 Early Hints are what
    browsers use for preload hints), then lets aiohttp go on. The aiohttp internals
    this relies on are named in aiohttp_private.CLIENT_PARTS."""

    async def start(self, connection: Connection) -> ClientResponse:
        report = INTERIM.get()
        protocol = connection.protocol
        if report is None or protocol is None:
            return await super().start(connection)
        read = protocol.read

        async def read_reporting() -> Any:
            message, payload = await read()
            if 100 < message.code < 200 and message.code != 101:
                report(message.code, message.reason, message.headers)
            return message, payload

        protocol.read = read_reporting  # type: ignore[method-assign]  # wrapped for this one start()
        try:
            return await super().start(connection)
        finally:
            del protocol.read


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float
    first_byte: float
    total: float


class Upstream:
    """The HTTP client the edge uses for every origin; created inside the event loop."""

    def __init__(self, timeouts: Timeouts) -> None:
        self.timeouts = timeouts
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=256, ttl_dns_cache=60)
        self.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar(),
            response_class=InterimReportingResponse,
            timeout=aiohttp.ClientTimeout(
                total=timeouts.total, connect=timeouts.connect, sock_read=timeouts.first_byte
            ),
        )

    async def close(self) -> None:
        await self.session.close()

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | CIMultiDict[str],
        body: AsyncIterable[bytes] | None = None,
        interim: Interim | None = None,
    ) -> tuple[aiohttp.ClientResponse, float, float]:
        """(response, request_time, response_time); the body is left to read.
        `interim` is told of interim responses as they arrive."""
        request_time = time.time()
        token = INTERIM.set(interim)
        try:
            response = await self.session.request(
                method,
                URL(url, encoded=True),  # as the client sent it: yarl would re-quote
                headers=headers,
                data=body,
                allow_redirects=False,
                compress=None,
                chunked=None,
            )
        except aiohttp.ConnectionTimeoutError as exc:
            raise UpstreamError(
                504,
                "the origin did not accept the connection in time",
                "upstream-connect-timeout",
                repr(exc),
            ) from exc
        except TimeoutError as exc:
            raise UpstreamError(
                504,
                "the origin did not send response headers in time",
                "upstream-timeout",
                repr(exc),
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamError(
                502, "the origin refused or dropped the connection", "upstream-connect", str(exc)
            ) from exc
        except aiohttp.ServerDisconnectedError as exc:
            raise UpstreamError(
                502,
                "the origin closed the connection without a response",
                "upstream-closed",
                repr(exc),
            ) from exc
        except (aiohttp.ClientResponseError, aiohttp.ClientPayloadError) as exc:
            raise UpstreamError(
                502, "the origin sent a malformed response", "upstream-malformed", repr(exc)
            ) from exc
        except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as exc:
            raise UpstreamError(
                502, "the origin could not be reached", "upstream-error", repr(exc)
            ) from exc
        finally:
            INTERIM.reset(token)
        return response, request_time, time.time()


def body_error(exc: BaseException) -> UpstreamError:
    """The error for a body that broke off after the response headers arrived."""
    if isinstance(exc, TimeoutError):
        return UpstreamError(504, "the origin stalled mid-body", "upstream-body-timeout", repr(exc))
    return UpstreamError(502, "the origin broke off mid-body", "upstream-body", repr(exc))
