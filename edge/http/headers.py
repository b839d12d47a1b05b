"""Hop-by-hop fields and Via (RFC 9110 §7.6). Pure functions of header blocks, no I/O."""

from collections.abc import Iterable
from typing import TypeAlias

from multidict import CIMultiDict, CIMultiDictProxy

Headers: TypeAlias = CIMultiDict[str] | CIMultiDictProxy[str]

HOP_BY_HOP: frozenset[str] = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
        "trailer",
    }
)

_OWS = " \t"


def connection_nominated(headers: Headers) -> frozenset[str]:
    """Lower-case field names listed in every Connection line (RFC 9110 §7.6.1)."""
    return frozenset(
        token.strip(_OWS).lower()
        for line in headers.getall("Connection", [])
        for token in line.split(",")
        if token.strip(_OWS)
    )


def without_hop_by_hop(headers: Headers, also: Iterable[str] = ()) -> CIMultiDict[str]:
    """A copy without hop-by-hop fields, fields nominated by Connection and the names in `also`."""
    out = CIMultiDict(headers)
    for name in HOP_BY_HOP:
        out.popall(name, None)
    for name in also:
        out.popall(name, None)
    for line in headers.getall("Connection", ()):
        for token in line.split(","):
            if name := token.strip(_OWS):
                out.popall(name, None)
    return out


def with_via(headers: CIMultiDict[str], received_by: str, protocol: str = "1.1") -> None:
    """Append this hop to Via (RFC 9110 §7.6.3), folding existing Via lines into one value."""
    entry = f"{protocol} {received_by}"
    headers["Via"] = ", ".join([*headers.getall("Via", []), entry])
