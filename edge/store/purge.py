"""Purge: what an operator asks to remove (or mark stale), and the admin endpoint.

`POST /purge` on the admin listener takes JSON
`{"tags": [...], "urls": [...], "prefixes": [...], "all": false, "soft": false}`
with `Authorization: Bearer $PINEDGE_ADMIN_TOKEN`. A URL or prefix may be absolute
(`http://host/path`) or a path (`/path`, for every host of every site). The
store's owner applies it (owner.py): a hard purge makes the objects unreachable at
once and removes their files after; a soft purge marks them stale, so the next
request revalidates them and stale-while-revalidate and stale-if-error still apply.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from yarl import URL

from pinedge.core.auth import BearerToken
from pinedge.edge.http.key import check_target, primary_key, split_host

log = logging.getLogger("pinedge.purge")

MAX_BODY = 1024 * 1024
MAX_ITEMS = 10_000
SCHEMES = ("http", "https")


class PurgeError(ValueError):
    """A purge request that cannot be carried out; its reason goes to the client."""


@dataclass(frozen=True, slots=True)
class Selection:
    """Which stored objects a purge covers: by tag, by cache key (a URL, with its
    Vary variants and derived variants), by cache-key prefix, or all of them."""

    tags: frozenset[str] = frozenset()
    keys: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    everything: bool = False

    def matches(self, key: str, tags: frozenset[str]) -> bool:
        if self.everything or not tags.isdisjoint(self.tags):
            return True
        source = key.partition("#")[0]  # a derived variant goes with its source
        return source in self.keys or source.startswith(self.prefixes)

    @property
    def names_anything(self) -> bool:
        return bool(self.everything or self.tags or self.keys or self.prefixes)

    @property
    def kinds(self) -> list[str]:
        """What the purge names, for metrics and logs: tag, url, prefix, all."""
        named = [("tag", self.tags), ("url", self.keys), ("prefix", self.prefixes)]
        return ["all"] if self.everything else [kind for kind, items in named if items]


@dataclass(frozen=True, slots=True)
class Ban:
    """A purge remembered for a while, so that responses fetched before it but
    stored after it (fills and variants in flight) are purged as well."""

    at: float
    selection: Selection
    soft: bool


@dataclass(slots=True)
class PurgeRequest:
    selection: Selection
    soft: bool
    asked: dict[str, Any] = field(default_factory=dict)  # as given, for the log


def parse_request(body: bytes, hosts: Iterable[str]) -> PurgeRequest:
    """The purge a request body asks for; PurgeError says why it cannot be one."""
    try:
        asked = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PurgeError(f"the body is not JSON: {exc}") from None
    except RecursionError:
        raise PurgeError("the body nests arrays or objects too deeply to be a purge") from None
    if not isinstance(asked, dict):
        raise PurgeError("the body must be a JSON object")
    unknown = set(asked) - {"tags", "urls", "prefixes", "all", "soft"}
    if unknown:
        raise PurgeError(f"unknown field(s): {', '.join(sorted(unknown))}")
    tags = _strings(asked, "tags")
    urls = _strings(asked, "urls")
    prefixes = _strings(asked, "prefixes")
    everything = _flag(asked, "all")
    soft = _flag(asked, "soft")
    if not (tags or urls or prefixes or everything):
        raise PurgeError('name what to purge: "tags", "urls", "prefixes" or "all": true')
    host_list = sorted(set(hosts))
    keys = frozenset(key for url in urls for key in _keys(url, host_list, "urls"))
    starts = tuple(sorted({k for p in prefixes for k in _keys(p, host_list, "prefixes")}))
    selection = Selection(frozenset(tags), keys, starts, everything)
    return PurgeRequest(selection, soft, asked)


def _strings(asked: dict[str, Any], name: str) -> list[str]:
    value = asked.get(name, [])
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise PurgeError(f"{name!r} must be a list of non-empty strings")
    if len(value) > MAX_ITEMS:
        raise PurgeError(f"{name!r} has {len(value)} items; at most {MAX_ITEMS} per purge")
    return value


def _flag(asked: dict[str, Any], name: str) -> bool:
    value = asked.get(name, False)
    if not isinstance(value, bool):
        raise PurgeError(f"{name!r} must be true or false")
    return value


def _keys(text: str, hosts: list[str], name: str) -> list[str]:
    """The cache keys (or key prefixes) a URL or path names: for a path, its key
    under every scheme and host the node answers for."""
    url = URL(text)
    if url.is_absolute():
        if url.scheme not in SCHEMES or not url.raw_authority:
            raise PurgeError(f"{name}: {text!r} is not an http(s) URL or a path")
        pairs = [(url.scheme, split_host(url.raw_authority))]
        target = url.raw_path_qs
    elif text.startswith("/"):
        pairs = [(scheme, host) for scheme in SCHEMES for host in hosts]
        target = text
    else:
        raise PurgeError(f"{name}: {text!r} is neither an absolute URL nor a path")
    try:
        check_target(target.partition("?")[0])
    except ValueError as exc:
        raise PurgeError(f"{name}: {text!r}: {exc}") from None
    if name == "prefixes":
        return [f"{scheme}://{host}{target}" for scheme, host in pairs]
    return [primary_key(scheme, host, target) for scheme, host in pairs]


class PurgeEndpoint:
    """`POST /purge` for a node: checks the token, parses, hands it to `apply`."""

    def __init__(
        self,
        token: str | None,
        hosts: Iterable[str],
        apply: Callable[[Selection, bool], int],
        before: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`before`: awaited before each purge is applied (the supervisor gathers what
        workers hold, for the purge to count it)."""
        self.token = BearerToken(
            token,
            realm="pinedge admin",
            ask="send the admin token as Authorization: Bearer TOKEN",
            unset="purging needs an admin token: start the node with PINEDGE_ADMIN_TOKEN set "
            "and send it as Authorization: Bearer TOKEN",
        )
        self.hosts = list(hosts)
        self.apply = apply
        self.before = before

    async def handle(self, request: web.Request) -> web.Response:
        who = request.remote or "?"
        refused = self.token.check(request)
        if refused is not None:
            log.warning("purge from %s refused: %s", who, refused.reason)
            return refused.response()
        body = await read_body(request)
        if body is None:
            log.warning("purge from %s refused: body over %d bytes", who, MAX_BODY)
            return _error(413, f"the purge body is over {MAX_BODY} bytes")
        try:
            asked = parse_request(body, self.hosts)
        except PurgeError as exc:
            log.warning("purge from %s refused: %s", who, exc)
            return _error(400, str(exc))
        started = time.perf_counter()
        if self.before is not None:
            await self.before()
        count = self.apply(asked.selection, asked.soft)
        took = time.perf_counter() - started
        mode = "soft" if asked.soft else "hard"
        log.info(
            "purge from %s: %s %s -> %d objects in %.1f ms",
            who,
            mode,
            json.dumps({k: v for k, v in asked.asked.items() if k != "soft"}),
            count,
            took * 1000,
        )
        answer = {"purged": count, "mode": mode, "took_ms": round(took * 1000, 3)}
        return web.json_response(answer, headers={"Cache-Control": "no-store"})


async def read_body(request: web.Request) -> bytes | None:
    """The whole request body, however it arrives (in pieces, chunked), or None
    as soon as it is known to be over MAX_BODY."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        return None
    body = bytearray()
    while len(body) <= MAX_BODY:
        piece = await request.content.read(MAX_BODY + 1 - len(body))
        if not piece:
            return bytes(body)
        body += piece
    return None


def _error(status: int, reason: str) -> web.Response:
    return web.json_response(
        {"error": reason}, status=status, headers={"Cache-Control": "no-store"}
    )
