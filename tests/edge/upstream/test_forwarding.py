"""The edge owns the forwarding fields it sends upstream (RFC 7239, X-Forwarded-*):
a client cannot make the origin build a stored response from values of its choosing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from multidict import CIMultiDict
from recorder import RecordingOrigin, exchange

from pinedge.core.config import ConfigError
from pinedge.edge.http.forwarding import TrustedPeers, client_address, forward

SPOOFED = (
    b"X-Forwarded-Host: evil.example\r\n"
    b"X-Forwarded-Proto: https\r\n"
    b"X-Forwarded-For: 203.0.113.9\r\n"
    b"X-Forwarded-Port: 8443\r\n"
    b"Forwarded: for=203.0.113.9;host=evil.example;proto=https\r\n"
    b"X-Original-URL: /admin\r\n"
    b"X-Rewrite-URL: /admin\r\n"
    b"X-HTTP-Method-Override: DELETE\r\n"
    b"X-Real-IP: 203.0.113.9\r\n"
)


@pytest.fixture
async def origin() -> AsyncIterator[RecordingOrigin]:
    recording = await RecordingOrigin().start()
    yield recording
    await recording.stop()


def get(target: str, host: bytes = b"127.0.0.1", extra: bytes = b"") -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: %s\r\n%sConnection: close\r\n\r\n" % (
        target.encode(),
        host,
        extra,
    )


async def test_a_clients_forwarding_fields_are_replaced_by_what_the_edge_saw(origin, start_edge):
    edge = await start_edge(origin.url, name="pinedge-test")
    reply = await exchange(edge.url, get("/a", extra=SPOOFED))
    assert reply.status == 200
    sent = origin.requests[0]
    assert sent.header("X-Forwarded-Host") == "127.0.0.1"
    assert sent.header("X-Forwarded-Proto") == "http"
    assert sent.header("X-Forwarded-For") == "127.0.0.1"
    assert sent.header("Forwarded") == "for=127.0.0.1;host=127.0.0.1;proto=http"
    assert sent.header("Via") == "1.1 pinedge-test"
    for name in (
        "X-Forwarded-Port",
        "X-Original-URL",
        "X-Rewrite-URL",
        "X-HTTP-Method-Override",
        "X-Real-IP",
    ):
        assert not sent.has(name), name
    assert b"evil" not in origin.all_bytes()
    assert b"203.0.113.9" not in origin.all_bytes()


async def test_a_port_in_host_reaches_the_origin_as_the_host_the_response_is_keyed_by(
    origin, start_edge
):
    """The key drops the port, so nothing forwarded may carry it: one client's
    `Host: localhost:1234` must not shape the entry every `Host: localhost` gets."""
    edge = await start_edge(origin.url)
    await exchange(edge.url, get("/a", host=b"localhost:1234"))
    sent = origin.requests[0]
    assert sent.header("X-Forwarded-Host") == "localhost"
    assert "1234" not in (sent.header("Forwarded") or "")
    assert b":1234" not in origin.all_bytes()


async def test_with_preserve_host_the_origin_gets_the_host_without_the_clients_port(
    origin, start_edge
):
    edge = await start_edge(
        sites=[
            {"name": "pins", "hosts": ["pins.test"], "origin": origin.url, "preserve_host": True}
        ]
    )
    await exchange(edge.url, get("/a", host=b"pins.test:1234"))
    assert origin.requests[0].header("Host") == "pins.test"


async def test_an_origin_that_builds_links_from_forwarded_host_cannot_be_poisoned(
    scripted, start_edge, client
):
    """The classic unkeyed-header poisoning: the attacker's request is the one stored."""

    async def page(request: web.Request) -> web.Response:
        host = request.headers.get("X-Forwarded-Host", request.host)
        proto = request.headers.get("X-Forwarded-Proto", "http")
        return web.Response(
            text=f'<script src="{proto}://{host}/app.js"></script>',
            headers={"Cache-Control": "max-age=60"},
        )

    scripted.handle("/page", page)
    edge = await start_edge(scripted.url)
    attack = await exchange(
        edge.url,
        get("/page", extra=b"X-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: https\r\n"),
    )
    assert b"evil.example" not in attack.body
    async with client.get(edge.url + "/page") as response:
        assert "hit" in response.headers["Cache-Status"]
        body = await response.text()
    assert body == '<script src="http://127.0.0.1/app.js"></script>'


async def test_a_trusted_peers_chain_is_kept_and_extended(origin, start_edge):
    edge = await start_edge(origin.url, trusted_proxies=["127.0.0.0/8"])
    chain = (
        b"X-Forwarded-For: 198.51.100.7\r\n"
        b"X-Forwarded-Host: pins.example.com\r\n"
        b"X-Forwarded-Proto: https\r\n"
        b"Forwarded: for=198.51.100.7;host=pins.example.com;proto=https\r\n"
        b"Via: 1.1 balancer\r\n"
        b"X-Original-URL: /admin\r\n"
    )
    await exchange(edge.url, get("/a", extra=chain))
    sent = origin.requests[0]
    assert sent.header("X-Forwarded-For") == "198.51.100.7, 127.0.0.1"
    assert sent.header("X-Forwarded-Host") == "pins.example.com"
    assert sent.header("X-Forwarded-Proto") == "https"
    assert sent.header("Forwarded") == (
        "for=198.51.100.7;host=pins.example.com;proto=https, "
        "for=127.0.0.1;host=127.0.0.1;proto=http"
    )
    assert sent.header("Via") == "1.1 balancer, 1.1 pinedge-test"
    assert not sent.has("X-Original-URL")


async def test_a_bad_trusted_proxies_entry_stops_the_start_with_its_name(start_edge):
    with pytest.raises(ConfigError, match=r"trusted_proxies.*not-an-address"):
        await start_edge("http://127.0.0.1:9", trusted_proxies=["not-an-address"])


# ── the rules, without a network ─────────────────────────────────────────────

TRUSTED = TrustedPeers.parse(["10.0.0.0/8", "2001:db8::/32"])


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        pytest.param("192.0.2.1", "203.0.113.9", "192.0.2.1", id="untrusted-peer-is-the-client"),
        pytest.param("10.1.1.1", "203.0.113.9", "203.0.113.9", id="behind-a-trusted-peer"),
        pytest.param("10.1.1.1", "203.0.113.9, 10.2.2.2", "203.0.113.9", id="two-trusted-hops"),
        pytest.param(
            "10.1.1.1", "6.6.6.6, 203.0.113.9", "203.0.113.9", id="spoofed-start-is-ignored"
        ),
        pytest.param("10.1.1.1", "", "10.1.1.1", id="trusted-peer-without-a-chain"),
        pytest.param("2001:db8::1", "2001:db8::2, 2a00::1", "2a00::1", id="ipv6"),
    ],
)
def test_the_client_address_is_the_last_untrusted_hop(peer, forwarded_for, client):
    headers = CIMultiDict({"X-Forwarded-For": forwarded_for} if forwarded_for else {})
    assert client_address(peer, headers, TRUSTED) == client


def test_an_ipv6_client_is_quoted_in_forwarded():
    """RFC 7239 §6: an IPv6 node is bracketed and quoted; a host with a colon is quoted."""
    out: CIMultiDict[str] = CIMultiDict()
    forward(out, CIMultiDict(), "2001:db8::5", TrustedPeers(), "[::1]", "http", "pinedge-a")
    assert out["Forwarded"] == 'for="[2001:db8::5]";host="[::1]";proto=http'
