"""The one Bearer-token check of every admin and control listener (RFC 6750 §2.1)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused: 401 (no, malformed or wrong token; carries
    `WWW-Authenticate: Bearer`) or 403 (no token configured)."""

    status: int
    reason: str
    headers: Mapping[str, str] = field(default_factory=dict)

    def response(self, body: Mapping[str, Any] | None = None) -> web.Response:
        """A JSON answer: `body`, by default `{"error": reason}`."""
        answer = {"error": self.reason} if body is None else body
        return web.json_response(answer, status=self.status, headers=dict(self.headers))


class BearerToken:
    """Checks `Authorization: Bearer TOKEN` against the configured token.

    `check(request)` returns None (let it through) or a Refusal. The comparison is
    constant-time (of digests, so the length does not show either); a header that
    is not UTF-8, has another scheme or no token is a 401, never an error. With no
    token configured, `unset` is the 403's reason, or None to let every request
    through (a listener that is open unless a token is set).
    """

    def __init__(self, token: str | None, *, realm: str, ask: str, unset: str | None) -> None:
        self.expected = _digest(token) if token else None
        self.ask = ask
        self.unset = unset
        self.challenge = {
            "WWW-Authenticate": f'Bearer realm="{realm}"',
            "Cache-Control": "no-store",
        }

    def check(self, request: web.BaseRequest) -> Refusal | None:
        if self.expected is None:
            if self.unset is None:
                return None
            return Refusal(403, self.unset, {"Cache-Control": "no-store"})
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        sent = given.strip()
        if scheme.lower() != "bearer" or not sent:
            return Refusal(401, self.ask, self.challenge)
        if not hmac.compare_digest(_digest(sent), self.expected):
            return Refusal(401, f"the token is wrong: {self.ask}", self.challenge)
        return None


def _digest(token: str) -> bytes:
    # Header values hold bytes that are not UTF-8 as surrogates; surrogatepass
    # encodes any string, so equal strings, and only they, give equal digests.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
