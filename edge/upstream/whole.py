"""A response read whole from the bytes that brought it: the common answer of an
origin to a miss (HTTP/1.1, a final status, a Content-Length, the body in the
same read as the head), without a parser object, a StreamReader or a future per
chunk. Anything else is left to aiohttp's parser (http1.py), which reads it from
the same bytes: an interim response, chunked or close-delimited framing, a field
line this reader does not take as it is, a body still to come.

The fields are what aiohttp's parser gives: names and values decoded as UTF-8
with surrogate escapes, values without surrounding whitespace, in their order.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from pinedge.edge.http.tokens import TCHAR

# Told a whole response's head, (status, reason, fields, body length, field lines):
# what the exchange's waiter gets with the body, or None to read it with the parser
# instead.
Accept = Callable[[int, str, list[tuple[str, str]], int, str], object | None]

# Whole: (status, reason, fields, body, bytes after the response?, close after it?,
# the head's field lines as they came, each after a CR LF)
Whole = tuple[int, str, list[tuple[str, str]], bytes, bool, bool, str]

# No control character in a head but CR LF ending each line and HTAB in values.
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# What follows the status line: field lines of a token, a colon and a value, each
# after a CR LF (a CR nowhere else). Possessive, as nothing taken needs giving back.
FIELD_LINES = re.compile(rf"(?:\r\n[{TCHAR}]++:[^\r]*+)*+")


def whole_response(buffer: bytes, max_line: int, max_fields: int) -> Whole | bool | None:
    """The response at the start of `buffer` when it is there whole and plain; None
    while its head has not all come (and is not yet longer than allowed); False
    when it is for the parser."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None if len(buffer) <= 2 * max_line else False
    head = buffer[:end].decode("utf-8", "surrogateescape")
    lines = head.split("\r\n")
    status_line = lines[0]
    if (
        len(lines) > max_fields + 1
        or not status_line.startswith("HTTP/1.1 ")
        or not status_line[9:12].isdigit()
        or status_line[12:13] not in ("", " ")
        or not FIELD_LINES.fullmatch(head, len(status_line))
        or (len(head) > max_line and max(map(len, lines)) > max_line)
    ):
        return False
    text = "".join(lines)
    if not text.isprintable() and CONTROL.search(text):  # HTAB is not printable
        return False
    status = int(status_line[9:12])
    if status < 200 or status == 204 or status == 304:
        return False
    # The fields that frame the body, found at the start of a line of the lowered head
    # (every field line is whole and plain by now), rather than each name lowered.
    lowered = head.lower()
    at = lowered.find("\ncontent-length:") + 16
    if at < 16 or "\ncontent-length:" in lowered[at:] or "\ntransfer-encoding:" in lowered:
        return False
    stop = lowered.find("\r", at)
    value = lowered[at : stop if stop >= 0 else len(lowered)].strip(" \t")
    if not value.isdigit() or not value.isascii():
        return False
    length = int(value)
    start = end + 4
    if len(buffer) < start + length:
        return False
    close = False
    at = lowered.find("\nconnection:")
    while at >= 0 and not close:
        stop = lowered.find("\r", at)
        close = "close" in lowered[at + 12 : stop if stop >= 0 else len(lowered)]
        at = lowered.find("\nconnection:", at + 1)
    fields = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields.append((name, value.strip(" \t")))
    body = buffer[start : start + length]
    after = len(buffer) > start + length
    return status, status_line[13:], fields, body, after, close, head[len(status_line) :]
