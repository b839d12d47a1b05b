"""Requests to an origin: one pooled client, timeouts, and errors mapped to 502/504."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from pinedge.edge.errors import UpstreamError


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
    ) -> tuple[aiohttp.ClientResponse, float, float]:
        """(response, request_time, response_time); the body is left to read."""
        request_time = time.time()
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
        return response, request_time, time.time()


def body_error(exc: BaseException) -> UpstreamError:
    """The error for a body that broke off after the response headers arrived."""
    if isinstance(exc, TimeoutError):
        return UpstreamError(504, "the origin stalled mid-body", "upstream-body-timeout", repr(exc))
    return UpstreamError(502, "the origin broke off mid-body", "upstream-body", repr(exc))
