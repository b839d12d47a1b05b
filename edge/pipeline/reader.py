"""The hit path's request reader: one plain bodiless GET or HEAD, read from the
bytes without the general parser; anything it does not fully understand is left
to aiohttp's parser as it is."""

from __future__ import annotations

import re

from multidict import CIMultiDict, CIMultiDictProxy

from pinedge.edge.http.tokens import TCHAR

# A request carrying any of these needs more than "is it stored and fresh?".
FAST_PATH_BLOCKERS = frozenset(
    name.lower().encode()
    for name in (
        "If-None-Match",
        "If-Modified-Since",
        "If-Match",
        "If-Unmodified-Since",
        "If-Range",
        "Range",
        "Cache-Control",
        "Pragma",
        "Content-Length",
        "Transfer-Encoding",
    )
)
PLAIN_MAX = 4096  # larger requests go to the general parser and its limits
PLAIN_HEAD = re.compile(
    rf"(GET|HEAD) (/[!-~]*) HTTP/1\.1\r\n((?:[{TCHAR}]+:[\t -~]*\r\n){{0,15}})\r\n".encode()
)
PLAIN_FIELD = re.compile(rf"([{TCHAR}]+):[\t ]*([!-~](?:[\t -~]*[!-~])?|)[\t ]*\r\n".encode())
# Fields after which the parser may be left within a message or the connection ends.
NOT_WHOLE = frozenset((b"content-length", b"transfer-encoding", b"upgrade", b"expect"))
PLAIN_REFUSED = FAST_PATH_BLOCKERS | NOT_WHOLE | {b"te"}


# (HEAD?, Host, target, fields as read)
PlainRequest = tuple[bool, bytes, str, list[tuple[bytes, bytes]]]


def plain_request(data: bytes) -> PlainRequest | None:
    """(HEAD?, Host, target, fields) when `data` is exactly one bodiless GET/HEAD in
    plain HTTP/1.1 (visible ASCII, at most 15 fields, Host exactly once, none that
    changes how the request is answered, Connection only as keep-alive); None for
    anything else."""
    if len(data) > PLAIN_MAX:
        return None
    match = PLAIN_HEAD.fullmatch(data)
    if match is None:
        return None
    fields: list[tuple[bytes, bytes]] = PLAIN_FIELD.findall(match.group(3))
    host = None
    # One pass for what _whole_head() checks as well: PLAIN_REFUSED holds NOT_WHOLE.
    for name, value in fields:
        lowered = name.lower()
        if lowered in PLAIN_REFUSED:
            return None
        if lowered == b"host":
            if host is not None:
                return None
            host = value
        elif lowered == b"connection" and value.lower() != b"keep-alive":
            return None
    if host is None:
        return None  # RFC 9112 §3.2: the general path answers 400
    return match.group(1) == b"HEAD", host, match.group(2).decode("ascii"), fields


def one_bodiless_request(data: bytes) -> bool:
    """Whether `data` is exactly one whole request head, with no body and nothing
    that ends or hands over the connection: the parser, fed it, is left between
    requests."""
    return _whole_head(data) is not None


def _whole_head(data: bytes) -> tuple[re.Match[bytes], list[tuple[bytes, bytes]]] | None:
    """The match of `data` as one whole request head and its fields, unless it is
    longer than PLAIN_MAX, is anything else, or has a field of NOT_WHOLE or a
    Connection other than keep-alive."""
    if len(data) > PLAIN_MAX:
        return None
    match = PLAIN_HEAD.fullmatch(data)
    if match is None:
        return None
    fields: list[tuple[bytes, bytes]] = PLAIN_FIELD.findall(match.group(3))
    for name, value in fields:
        lowered = name.lower()
        if lowered in NOT_WHOLE or (lowered == b"connection" and value.lower() != b"keep-alive"):
            return None
    return match, fields


def fields_of(fields: list[tuple[bytes, bytes]]) -> CIMultiDictProxy[str]:
    """A plain request's fields as the pipeline reads them."""
    return CIMultiDictProxy(
        CIMultiDict((name.decode("latin-1"), value.decode("latin-1")) for name, value in fields)
    )
