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
# Possessive: nothing it takes is given back (no part could match otherwise), which
# spares the regex engine its bookkeeping for backtracking, a third of its time.
PLAIN_HEAD = re.compile(
    rf"(GET|HEAD) (/[!-~]*+) HTTP/1\.1\r\n((?:[{TCHAR}]++:[\t -~]*+\r\n){{0,15}}+)\r\n".encode()
)
PLAIN_FIELD = re.compile(rf"([{TCHAR}]+):[\t ]*([!-~](?:[\t -~]*[!-~])?|)[\t ]*\r\n".encode())
# Fields after which the parser may be left within a message or the connection ends.
NOT_WHOLE = frozenset((b"content-length", b"transfer-encoding", b"upgrade", b"expect"))
PLAIN_REFUSED = FAST_PATH_BLOCKERS | NOT_WHOLE | {b"te"}


# In a lowered head whose field lines are whole and plain: the name and value of each
# field line that is Host, Connection or one plain_request() refuses.
NOTED_FIELD = re.compile(
    b"\r\n("
    + b"|".join(re.escape(name) for name in sorted(PLAIN_REFUSED | {b"host", b"connection"}))
    + b"):[\t ]*([!-~](?:[\t -~]*[!-~])?|)[\t ]*(?=\r\n)"
)


# (HEAD?, Host, target, the field lines as read: each `name:value` and a CR LF).
# The fields are read from their lines only where something needs them (field_pairs):
# a hit on a response without Vary needs none but Host.
PlainRequest = tuple[bool, bytes, str, bytes]


def plain_request(data: bytes) -> PlainRequest | None:
    """(HEAD?, Host, target, field lines) when `data` is exactly one bodiless GET/HEAD
    in plain HTTP/1.1 (visible ASCII, at most 15 fields, Host exactly once, none that
    changes how the request is answered, Connection only as keep-alive); None for
    anything else. Host comes lowered."""
    match = _whole_head(data)
    if match is None:
        return None
    host = None
    for name, value in NOTED_FIELD.findall(data.lower()):
        if name == b"host":
            if host is not None:
                return None
            host = value
        elif name in PLAIN_REFUSED or value != b"keep-alive":  # else it is Connection
            return None
    if host is None:
        return None  # RFC 9112 §3.2: the general path answers 400
    return match.group(1) == b"HEAD", host, match.group(2).decode("ascii"), match.group(3)


def one_bodiless_request(data: bytes) -> bool:
    """Whether `data` is exactly one whole request head, with no body and nothing
    that ends or hands over the connection: the parser, fed it, is left between
    requests."""
    if _whole_head(data) is None:
        return False
    for name, value in NOTED_FIELD.findall(data.lower()):
        if name in NOT_WHOLE or (name == b"connection" and value != b"keep-alive"):
            return False
    return True


def _whole_head(data: bytes) -> re.Match[bytes] | None:
    """The match of `data` as one whole request head of plain field lines, unless it
    is longer than PLAIN_MAX. Once it matches, the fields that matter are found at
    the starts of the lines of the lowered head (NOTED_FIELD), in one pass, rather
    than by reading each field."""
    if len(data) > PLAIN_MAX:
        return None
    return PLAIN_HEAD.fullmatch(data)


def field_pairs(lines: bytes) -> list[tuple[bytes, bytes]]:
    """The (name, value) of each field line of a plain request, in order."""
    return PLAIN_FIELD.findall(lines)


# In lowered field lines, at the start of a line: a Client Hint, or Accept or
# Accept-Encoding up to its value.
VARIANT_FIELD = re.compile(rb"\r\n(?:(sec-ch-)|(accept|accept-encoding):[\t ]*)")


def variant_fields(lines: bytes) -> dict[str, str] | None:
    """What picks a stored variant from a plain request's field lines: `accept` and
    `accept-encoding`, a field's lines joined with commas; None when a Client Hint
    (Sec-CH-*) is among them, which only the general path reads."""
    text = b"\r\n" + lines
    fields: dict[str, str] = {}
    for match in VARIANT_FIELD.finditer(text.lower()):
        if match.group(1):
            return None
        name = match.group(2).decode()
        start = match.end()
        value = text[start : text.index(b"\r\n", start)].rstrip(b" \t").decode("latin-1")
        fields[name] = f"{fields[name]}, {value}" if name in fields else value
    return fields


def has_field(lines: bytes, name: bytes) -> bool:
    """Whether a plain request's field lines hold a field `name` (lowercase)."""
    return (b"\r\n" + name + b":") in (b"\r\n" + lines).lower()


def fields_of(lines: bytes) -> CIMultiDictProxy[str]:
    """A plain request's fields as the pipeline reads them."""
    return CIMultiDictProxy(
        CIMultiDict(
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in field_pairs(lines)
        )
    )
