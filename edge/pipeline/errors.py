"""Errors that carry their answer: a status, a public reason and a Cache-Status detail."""

from __future__ import annotations


class EdgeError(Exception):
    """A request the edge answers itself with `status` and a one-line `reason`.

    `detail` is a short token for Cache-Status' detail parameter and metrics;
    `log` is extra context for the log line, never shown to the client; `close` ends
    the connection after the answer (the request's framing cannot be trusted).
    """

    def __init__(
        self,
        status: int,
        reason: str,
        detail: str,
        log: str = "",
        headers: dict[str, str] | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.log = log
        self.headers = headers or {}
        self.close = close


class UpstreamError(EdgeError):
    """The upstream could not give a usable response (502) or not in time (504)."""
