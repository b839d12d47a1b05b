"""Secondary cache keys from Vary (RFC 9111 §4.1)."""

from __future__ import annotations

import re

from pinedge.edge.http.cachecontrol import Headers, split_list

# Request fields whose value is a comma-separated list (RFC 9110 §5.6.1), so
# members may be split, trimmed and re-joined without changing the meaning.
LIST_FIELDS: frozenset[str] = frozenset(
    {
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "cache-control",
        "connection",
        "content-encoding",
        "content-language",
        "expect",
        "forwarded",
        "if-match",
        "if-none-match",
        "pragma",
        "prefer",
        "te",
        "upgrade",
        "via",
    }
)
# Fields whose members are case-insensitive (media ranges, codings, charsets,
# language ranges); quoted-strings inside them keep their case.
CASELESS_FIELDS: frozenset[str] = frozenset(
    {"accept", "accept-charset", "accept-encoding", "accept-language"}
)

_WHITESPACE = re.compile(r"[ \t]+")


def vary_names(headers: Headers) -> tuple[str, ...] | None:
    """Lower-case, de-duplicated, sorted names from every Vary line; None for `*`."""
    names = {
        name
        for line in headers.getall("vary", ())
        for name in (member.strip().lower() for member in line.split(","))
        if name
    }
    if "*" in names:
        return None
    return tuple(sorted(names))


def normalize(name: str, request_headers: Headers) -> str | None:
    """The request's value for one field nominated by Vary, normalised; None when absent."""
    lines = request_headers.getall(name, ())
    if not lines:
        return None
    field = name.lower()
    if field not in LIST_FIELDS:
        return _WHITESPACE.sub(" ", ", ".join(lines)).strip()
    caseless = field in CASELESS_FIELDS
    members = (_normalize_member(m, caseless) for line in lines for m in split_list(line))
    return ",".join(m for m in members if m)


def _normalize_member(member: str, caseless: bool) -> str:
    """Trim a list member, drop OWS around `;` parameters, lower-case outside quotes."""
    parts = (part.strip(" \t") for part in split_list(member, ";"))
    if caseless:
        parts = (_lower_outside_quotes(part) for part in parts)
    return ";".join(parts)


def _lower_outside_quotes(text: str) -> str:
    if '"' not in text:
        return text.lower()
    out: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted:
            escaped = char == "\\"
            quoted = char != '"'
        elif char == '"':
            quoted = True
        else:
            char = char.lower()
        out.append(char)
    return "".join(out)


def secondary_key(names: tuple[str, ...], request_headers: Headers) -> tuple[str | None, ...]:
    """normalize() for each name, in order."""
    return tuple(normalize(name, request_headers) for name in names)
