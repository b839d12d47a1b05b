"""Responses to clients: from a stored entry, or from an upstream head as it streams.

Client preconditions (304/412) and byte ranges (206/416) are answered here,
from the stored representation, so they behave the same on a hit and a miss.
"""

from __future__ import annotations

import math
import re
import secrets
from http import HTTPStatus

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from pinedge.edge.http import ranges
from pinedge.edge.http.cachecontrol import Directives
from pinedge.edge.http.freshness import parse_http_date
from pinedge.edge.http.headers import HOP_BY_HOP, with_via, without_hop_by_hop
from pinedge.edge.http.status import CacheStatus, append_entry
from pinedge.edge.http.validation import evaluate_preconditions, not_modified_response_headers
from pinedge.edge.store.entry import Entry
from pinedge.edge.store.tags import TAG_FIELDS

Headers = CIMultiDict[str] | CIMultiDictProxy[str]
# Large bodies go out a slice at a time: a client that stops reading holds one slice.
SLICE = 256 * 1024
AGE = b"Age: "  # a Wire's head ends with it
AGE_TEXT = AGE.decode()
# A Connection line that nominates more than Keep-Alive (a hop-by-hop field anyway).
NOMINATING = re.compile(r"(?i)\r\nConnection:[ \t]*+(?!keep-alive[ \t]*(?:\r\n|$))")


class Wire:
    """A stored response's head for the fast path: everything up to the value of Age,
    then the start of our Cache-Status entry; a hit fills in the two numbers. The
    last head made is kept, since both numbers change once a second."""

    __slots__ = ("head", "last", "last_numbers", "miss_status", "status_prefix")

    def __init__(self, head: bytes, status_prefix: bytes, miss_status: bytes) -> None:
        self.head = head
        self.status_prefix = status_prefix
        self.miss_status = miss_status
        self.last_numbers = (-1, 0)
        self.last = b""

    def response_head(self, age: float, ttl: float) -> bytes:
        numbers = (int(age), math.floor(ttl))
        if numbers != self.last_numbers:
            self.last = b"%s%d\r\nCache-Status: %s%d\r\n\r\n" % (
                self.head,
                numbers[0],
                self.status_prefix,
                numbers[1],
            )
            self.last_numbers = numbers
        return self.last

    def miss_head(self) -> bytes:
        """The head of the answer to the request whose fetch stored this response, from
        an upstream that sent no Age (the general path sends none then either)."""
        return b"%sCache-Status: %s\r\n\r\n" % (self.head[: -len(AGE)], self.miss_status)


async def send_sliced(
    request: web.BaseRequest, response: web.Response, body: bytes | bytearray
) -> web.StreamResponse:
    """`response`, its body written a SLICE at a time, each once the client has taken
    enough of the last (a client that stops reading holds one slice, not the body)."""
    out = web.StreamResponse(status=response.status, reason=response.reason)
    out.headers.update(response.headers)
    out.content_length = len(body)
    if response.keep_alive is False:
        out.force_close()
    try:
        await out.prepare(request)
        if request.method != "HEAD":
            view = memoryview(body)
            for start in range(0, len(view), SLICE):
                await out.write(view[start : start + SLICE])
        await out.write_eof()
    except ConnectionError:
        pass  # the client went away (or was cut off for not reading)
    return out


class FileBody:
    """A stored body the hit path may send straight from its file (sendfile); `data`
    is the same bytes, for when the socket cannot take it all at once."""

    __slots__ = ("data", "fd", "offset")

    def __init__(self, fd: int, offset: int, data: bytes) -> None:
        self.fd = fd
        self.offset = offset
        self.data = data


def _needs_validation(directives: Directives, no_cache_fields: frozenset[str]) -> bool:
    """A response that has no prepared head: no-cache, of the whole or of fields."""
    return bool(no_cache_fields) or directives.field_names("no-cache") is not None


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class Delivery:
    """What every response to a client gets: our Via and Cache-Status entries."""

    def __init__(
        self,
        name: str,
        targeted_fields: tuple[str, ...],
        accept_ch: str | None = None,
        shield: bool = False,
    ) -> None:
        self.name = name
        # A shield's clients are edges: they need the tags (to purge) and the
        # fields aimed at CDN caches as much as the shield did.
        kept_for_edges = () if shield else (*TAG_FIELDS, *targeted_fields)
        self.private_fields = (*kept_for_edges, "Cache-Status")
        self.accept_ch = accept_ch
        # Our Cache-Status entry on a prepared hit (before its ttl) and on the miss
        # that stored it.
        self.ours = (f"{name}; hit; ttl=", f"{name}; fwd=miss; stored")
        self.ours_bytes = tuple(part.encode("utf-8", "surrogateescape") for part in self.ours)
        # For relayed_head(): the lines client_headers() leaves out, and the fields
        # that need more than that (folded with ours, or a Date to add).
        dropped = "|".join(re.escape(name) for name in (*HOP_BY_HOP, *self.private_fields))
        self.dropped_lines = re.compile(rf"(?i)\r\n(?:{dropped}):[^\r]*")
        self.folded_lines = re.compile(r"(?i)\r\n(?:via|accept-ch|cache-status):")
        self.date_line = re.compile(r"(?i)\r\ndate:")

    def client_headers(self, headers: Headers, also: tuple[str, ...] = ()) -> CIMultiDict[str]:
        """End-to-end fields for a client: no hop-by-hop, tags or targeted fields; on
        pages, Accept-CH asks browsers for the Client Hints that pick image widths."""
        out = without_hop_by_hop(headers, also=(*self.private_fields, *also))
        with_via(out, self.name)
        if self.accept_ch and out.get("Content-Type", "").startswith("text/html"):
            out.setdefault("Accept-CH", self.accept_ch)
        return out

    def miss_head(
        self,
        status: int,
        reason: str,
        headers: Headers,
        length: int,
        directives: Directives,
        no_cache_fields: frozenset[str],
        lines: str,
    ) -> bytes | None:
        """wire_for()'s head with a miss's Cache-Status (Wire.miss_head()), for the
        miss that stored the response; made from its field lines as they came
        (`lines`, whole.py's) where relayed_head() can. None where wire_for() gives
        none."""
        if _needs_validation(directives, no_cache_fields):
            return None
        relayed = self.relayed_head(status, reason, lines, headers.get("Content-Type", ""))
        if relayed is not None:
            return relayed
        wire = self.wire_for(status, reason, headers, length, directives, no_cache_fields)
        return None if wire is None else wire.miss_head()

    def relayed_head(self, status: int, reason: str, lines: str, content_type: str) -> bytes | None:
        """A miss's answer head made from the field lines of a response stored as it
        came (whole.py's, each after a CR LF), as Wire.miss_head() would give it:
        those client_headers() keeps, in their order, then Via (and Accept-CH on a
        page) and a miss's Cache-Status. None where the lines need more than lines
        left out: a Via, Cache-Status or Accept-CH to fold or keep, a field that
        Connection nominates, no Date (the pipeline adds one). The caller has
        checked that the hit path would send the response as it is (no variants,
        no no-cache)."""
        if (
            self.folded_lines.search(lines)
            or NOMINATING.search(lines)
            or not self.date_line.search(lines)
        ):
            return None
        kept = self.dropped_lines.sub("", lines)
        accept_ch = ""
        if self.accept_ch and content_type.startswith("text/html"):
            accept_ch = f"\r\nAccept-CH: {self.accept_ch}"
        head = (
            f"HTTP/1.1 {status} {reason or _phrase(status)}{kept}\r\nVia: 1.1 {self.name}"
            f"{accept_ch}\r\nCache-Status: {self.ours[1]}\r\n\r\n"
        )
        return head.encode("utf-8", "surrogateescape")

    def wire(self, entry: Entry) -> Wire | None:
        """The bytes of a hit's response head, prepared once when the entry is stored,
        or None when a hit on it needs the general path (no-cache, partial fields)."""
        fresh = entry.fresh
        return self.wire_for(
            entry.status,
            entry.reason,
            entry.headers,
            len(entry.body),
            fresh.directives,
            fresh.no_cache_fields,
        )

    def wire_for(
        self,
        status: int,
        reason: str,
        headers: Headers,
        length: int,
        directives: Directives,
        no_cache_fields: frozenset[str],
    ) -> Wire | None:
        """wire() for a stored response's parts, before (or without) its entry."""
        if _needs_validation(directives, no_cache_fields):
            return None
        out = self.client_headers(headers, ("Age",))
        out["Content-Length"] = str(length)
        fields = "\r\n".join(map(": ".join, out.items()))
        head = f"HTTP/1.1 {status} {reason or _phrase(status)}\r\n{fields}\r\n{AGE_TEXT}"
        upstream = ", ".join(headers.getall("Cache-Status")) if "Cache-Status" in headers else ""
        if upstream:
            hit, miss = (
                f"{upstream}, {part}".encode("utf-8", "surrogateescape") for part in self.ours
            )
        else:
            hit, miss = self.ours_bytes
        return Wire(head.encode("utf-8", "surrogateescape"), hit, miss)

    def finish_headers(
        self,
        out: CIMultiDict[str],
        upstream: Headers,
        status: CacheStatus,
        sent_status: int,
        age: float | None,
    ) -> None:
        if age is not None:
            out["Age"] = str(max(0, int(age)))
        entry = status.render(self.name, sent_status)
        out["Cache-Status"] = append_entry(", ".join(upstream.getall("Cache-Status", ())), entry)

    def precondition(
        self, request: web.BaseRequest, headers: Headers, status_code: int
    ) -> int | None:
        """304 or 412 when the client's conditional request is answered without a body."""
        if status_code != 200 or not conditional(request.headers):
            return None
        return evaluate_preconditions(
            request.method,
            request.headers,
            headers.get("ETag"),
            parse_http_date(headers.get("Last-Modified")),
            parse_http_date(headers.get("Date")),
        )

    def not_modified(
        self, code: int, headers: Headers, status: CacheStatus, age: float | None
    ) -> web.Response:
        if code == 304:
            out = self.client_headers(not_modified_response_headers(headers))
        else:
            out = self.client_headers(CIMultiDict(), ())
            out["Content-Type"] = "text/plain; charset=utf-8"
        self.finish_headers(out, headers, status, code, age)
        body = None if code == 304 else b"precondition failed\n"
        return web.Response(status=code, headers=out, body=body)

    def from_entry(
        self,
        request: web.BaseRequest,
        entry: Entry,
        status: CacheStatus,
        age: float,
        strip: frozenset[str] = frozenset(),
        vary: str | None = None,
    ) -> web.Response:
        """The stored response for this request: full, 304/412, 206 or 416. `vary`
        names request fields this answer depends on beyond the stored Vary."""
        code = self.precondition(request, entry.headers, entry.status)
        if code is not None:
            response = self.not_modified(code, entry.headers, status, age)
            if vary:
                response.headers["Vary"] = merge_vary(entry.headers.getall("Vary", ()), vary)
            return response
        out = self.client_headers(entry.headers, tuple(strip))
        if vary:
            out["Vary"] = merge_vary(entry.headers.getall("Vary", ()), vary)
        body: bytes | memoryview = entry.body
        sent = entry.status
        if entry.status == 200 and request.method == "GET" and "Range" in request.headers:
            sent, body = self._range(request, entry, out)
        self.finish_headers(out, entry.headers, status, sent, age)
        out.pop("Content-Length", None)
        response = web.Response(status=sent, reason=_reason(entry, sent), headers=out)
        response.body = bytes(body) if isinstance(body, memoryview) else body
        return response

    def _range(
        self, request: web.BaseRequest, entry: Entry, out: CIMultiDict[str]
    ) -> tuple[int, bytes | memoryview]:
        fresh = entry.fresh
        if not ranges.if_range_allows(
            request.headers.get("If-Range"), fresh.etag, fresh.last_modified, fresh.date
        ):
            return 200, entry.body
        size = len(entry.body)
        wanted = ranges.parse_range(request.headers.get("Range"), size)
        if wanted.kind == "ignore":
            return 200, entry.body
        if wanted.kind in ("unsatisfiable", "invalid"):
            for name in ("Content-Type", "Content-Encoding", "ETag", "Last-Modified"):
                out.pop(name, None)
            out["Content-Range"] = ranges.unsatisfied_range(size)
            out["Content-Type"] = "text/plain; charset=utf-8"
            return 416, f"range not satisfiable: {wanted.reason}\n".encode()
        view = memoryview(entry.body)
        if len(wanted.ranges) == 1:
            only = wanted.ranges[0]
            out["Content-Range"] = ranges.content_range(only, size)
            return 206, view[only.start : only.end + 1]
        boundary = secrets.token_hex(12)
        body = ranges.multipart_byteranges(
            wanted.ranges, view, entry.headers.get("Content-Type"), size, boundary
        )
        out["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
        return 206, body


def conditional(request_headers: Headers) -> bool:
    """Whether a request carries any precondition (RFC 9110 §13.1)."""
    return (
        "If-None-Match" in request_headers
        or "If-Modified-Since" in request_headers
        or "If-Match" in request_headers
        or "If-Unmodified-Since" in request_headers
    )


def _reason(entry: Entry, sent: int) -> str | None:
    return entry.reason if sent == entry.status and entry.reason else None


def merge_vary(existing: tuple[str, ...] | list[str], extra: str) -> str:
    """A Vary value naming the fields of `existing` lines and of `extra`, once each."""
    names = [n.strip() for line in existing for n in line.split(",") if n.strip()]
    for name in extra.split(","):
        if name.strip() and name.strip().lower() not in {n.lower() for n in names}:
            names.append(name.strip())
    return ", ".join(names)


def error_bytes(
    name: str,
    code: int,
    reason: str,
    detail: str,
    extra: dict[str, str] | None = None,
    close: bool = True,
) -> bytes:
    """The bytes of an answer the edge makes itself outside a request handler (the
    hit path, limits, timeouts); the same fields as error_response."""
    body = f"{code} {reason}\n".encode()
    fields = {
        "Content-Type": "text/plain; charset=utf-8",
        "Cache-Control": "no-store",
        "Cache-Status": f"{name}; detail={detail}",
        **(extra or {}),
        "Via": f"1.1 {name}",
        **({"Connection": "close"} if close else {}),
        "Content-Length": str(len(body)),
    }
    head = f"HTTP/1.1 {code} {_phrase(code)}\r\n" + "".join(
        f"{field}: {value}\r\n" for field, value in fields.items()
    )
    return head.encode("latin-1") + b"\r\n" + body


def error_response(
    name: str,
    code: int,
    reason: str,
    status: CacheStatus,
    extra: dict[str, str] | None = None,
) -> web.Response:
    """A response the edge generates itself, with the reason in the body."""
    headers = CIMultiDict(
        {
            "Content-Type": "text/plain; charset=utf-8",
            "Cache-Control": "no-store",
            "Cache-Status": status.render(name, code),
            **(extra or {}),
        }
    )
    with_via(headers, name)
    return web.Response(status=code, headers=headers, text=f"{code} {reason}\n")
