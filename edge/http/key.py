"""Cache keys and request-target checks.

The primary key names a resource: scheme, host, path and a normalised query,
so `?b=2&a=1` and `?a=1&b=2` share one entry. Vary's secondary key (vary.py)
picks a stored variant under it.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, unquote_to_bytes

from pinedge.edge.pipeline.errors import EdgeError

_UNSAFE = re.compile(r"[\x00-\x1f\x7f\\]")
_ENCODED_UNSAFE = re.compile(r"%(?:0[0-9a-fA-F]|1[0-9a-fA-F]|7[fF]|5[cC])")
_DOT_SEGMENT = re.compile(r"(?:^|/)(?:\.|%2[eE]){1,2}(?:/|%2[fF]|$)")


def check_target(raw_path: str) -> None:
    """Refuse request targets that try to escape or confuse the origin's path space."""
    path = raw_path.partition("?")[0]
    if not path.startswith("/"):
        raise EdgeError(400, "the request target must be an absolute path", "target-form")
    if "#" in raw_path:
        raise EdgeError(400, "a request target cannot carry a fragment ('#')", "fragment")
    if _UNSAFE.search(raw_path) or _ENCODED_UNSAFE.search(raw_path):
        raise EdgeError(
            400, "control characters and backslashes are not allowed in the URL", "path"
        )
    if _DOT_SEGMENT.search(path):
        raise EdgeError(400, "dot-segments ('.' or '..') are not allowed in the path", "path")
    if "%" in path or not path.isascii():  # else decoding changes nothing checked above
        decoded = unquote_to_bytes(path)
        if b"\x00" in decoded or _DOT_SEGMENT.search(decoded.decode("latin-1")):
            raise EdgeError(400, "encoded path traversal is not allowed", "path")


def normalise_query(query_string: str) -> str:
    """The query with its parameters in a stable order (by name, then original order)."""
    if not query_string:
        return ""
    pairs = parse_qsl(query_string, keep_blank_values=True)
    pairs.sort(key=lambda pair: pair[0])
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)


def primary_key(scheme: str, host: str, raw_path: str) -> str:
    """scheme://host/path?normalised-query for a request already checked by check_target."""
    path, _, query = raw_path.partition("?")
    normal = normalise_query(query)
    return f"{scheme}://{host}{path}?{normal}" if normal else f"{scheme}://{host}{path}"


def split_host(host_header: str) -> str:
    """The host part of a Host header, lower-cased, without port or trailing dot."""
    host = host_header.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    return host.rsplit(":", 1)[0].rstrip(".") if ":" in host else host.rstrip(".")
