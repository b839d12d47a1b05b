"""Who asked, as the edge tells it upstream: `Forwarded` (RFC 7239) and the
`X-Forwarded-*` family, set from what this node saw, and this hop in `Via`.

A client's own values are dropped: an origin that builds links from
X-Forwarded-Host would otherwise store an attacker's host in a response every
later client gets (none of these fields is part of the cache key). Only a
trusted peer (the node's own edges and shields, a named load balancer) may pass
its chain on, and the node appends to it. Fields that ask an origin to answer
for another URL or method are dropped from everyone.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from multidict import CIMultiDict, MultiMapping

from pinedge.edge.http.headers import with_via

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The chain of proxies a request went through: kept from a trusted peer only. (Via is
# kept from everyone and appended to, as RFC 9110 §7.6.3 asks: it names hops, and this
# node adds itself, so what it says cannot make an origin answer differently.)
CHAIN_FIELDS = ("Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto")
# Fields some frameworks read to rebuild the URL, scheme, port or method, or the client
# address: never forwarded, whoever sends them.
NEVER_FORWARDED = (
    "X-Forwarded-Port",
    "X-Forwarded-Prefix",
    "X-Forwarded-Server",
    "X-Forwarded-Scheme",
    "X-Forwarded-Ssl",
    "Front-End-Https",
    "X-Url-Scheme",
    "X-Real-Ip",
    "X-Client-Ip",
    "True-Client-Ip",
    "X-Cluster-Client-Ip",
    "X-Original-Url",
    "X-Rewrite-Url",
    "X-Original-Host",
    "X-Host",
    "X-Http-Method-Override",
    "X-Http-Method",
    "X-Method-Override",
)


@dataclass(frozen=True, slots=True)
class TrustedPeers:
    """Addresses whose forwarding fields are believed: configured CIDRs."""

    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> TrustedPeers:
        """From addresses or CIDRs; ValueError names the one that is neither."""
        networks = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
        return cls(tuple(networks))

    def __contains__(self, address: str | None) -> bool:
        if not self.networks or not address:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)


def client_address(peer: str | None, headers: MultiMapping[str], trusted: TrustedPeers) -> str:
    """The address a request came from: the peer, or behind trusted peers the last
    address in X-Forwarded-For that is not one of them."""
    address = peer or ""
    if address not in trusted:
        return address
    chain = [
        hop.strip() for line in headers.getall("X-Forwarded-For", ()) for hop in line.split(",")
    ]
    for hop in reversed(chain):
        if hop and hop not in trusted:
            return hop
        address = hop or address
    return address


def forward(
    out: CIMultiDict[str],
    received: MultiMapping[str],
    peer: str | None,
    trusted: TrustedPeers,
    host: str,
    proto: str,
    node: str,
) -> None:
    """Set the forwarding fields of the upstream request `out` (built from the
    client's fields `received`): the chain from a trusted peer, extended with this
    hop; from anyone else, a new chain that starts here. `host` is the host the
    request was routed (and keyed) by, without a port."""
    for name in (*CHAIN_FIELDS, *NEVER_FORWARDED):
        out.popall(name, None)
    address = peer or "unknown"
    element = f"for={_node(address)};host={_quoted(host)};proto={proto}"
    if peer is not None and peer in trusted:
        forwarded = received.getall("Forwarded", ())
        out["Forwarded"] = ", ".join([*forwarded, element])
        chain = received.getall("X-Forwarded-For", ())
        out["X-Forwarded-For"] = ", ".join([*chain, address])
        out["X-Forwarded-Host"] = received.get("X-Forwarded-Host", host)
        out["X-Forwarded-Proto"] = received.get("X-Forwarded-Proto", proto)
    else:
        out["Forwarded"] = element
        out["X-Forwarded-For"] = address
        out["X-Forwarded-Host"] = host
        out["X-Forwarded-Proto"] = proto
    with_via(out, node)


def _node(address: str) -> str:
    """RFC 7239 §6: an IPv6 node is bracketed and quoted."""
    return f'"[{address}]"' if ":" in address else address


def _quoted(value: str) -> str:
    """A host as an RFC 7239 value: quoted when it is not a token (brackets, colons)."""
    return f'"{value}"' if any(c in value for c in '[]:"') else value
