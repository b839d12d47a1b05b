"""Header handling through a real edge: hop-by-hop fields and Via (RFC 9110 §7.6),
Cache-Status (RFC 9211), forwarding fields and tags."""

from __future__ import annotations

import aiohttp
from edge_support import RunningEdge, Scripted, StartEdge, our_entry, ttl
from support import free_port

CACHEABLE = {"Cache-Control": "max-age=60", "Content-Type": "text/plain"}


def cache_status(response: aiohttp.ClientResponse) -> list[str]:
    """The Cache-Status list, one entry per cache, nearest the origin first."""
    value = ", ".join(response.headers.getall("Cache-Status", ()))
    return [entry.strip() for entry in value.split(",") if entry.strip()]


async def get(
    client: aiohttp.ClientSession, url: str, **kwargs: object
) -> tuple[aiohttp.ClientResponse, bytes]:
    async with client.get(url, **kwargs) as response:  # type: ignore[arg-type]  # aiohttp's own keyword arguments
        return response, await response.read()


# ── hop-by-hop fields (RFC 9110 §7.6.1) ─────────────────────────────────────


async def test_hop_by_hop_fields_from_the_origin_never_reach_the_client(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9110 §7.6.1: a proxy removes Connection, the fields it nominates, and the
    hop-by-hop fields, on the miss and on every hit after it."""
    scripted.reply(
        "/hop",
        "body",
        headers=[
            *CACHEABLE.items(),
            ("Connection", "close, X-Hop"),
            ("X-Hop", "secret"),
            ("Keep-Alive", "timeout=5"),
            ("Upgrade", "h2c"),
            ("Trailer", "X-Checksum"),
            ("Proxy-Authenticate", 'Basic realm="origin"'),
            ("X-End-To-End", "kept"),
        ],
    )
    for expected in ("stored", "hit"):
        response, body = await get(client, edge.url + "/hop")
        assert response.status == 200
        assert body == b"body"
        assert expected in our_entry(response.headers)
        for name in ("X-Hop", "Keep-Alive", "Upgrade", "Trailer", "Proxy-Authenticate"):
            assert name not in response.headers, (expected, name)
        assert "x-hop" not in response.headers.get("Connection", "").lower()
        assert response.headers["X-End-To-End"] == "kept"


async def test_hop_by_hop_fields_from_the_client_never_reach_the_origin(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9110 §7.6.1: Connection-nominated fields, TE and Proxy-Authorization stop here."""
    scripted.reply("/hop", "body", headers=CACHEABLE)
    response, _ = await get(
        client,
        edge.url + "/hop",
        headers={
            "Connection": "X-Client-Hop",
            "X-Client-Hop": "secret",
            "TE": "trailers",
            "Proxy-Authorization": "Basic cHJveHk6c2VjcmV0",
            "X-End-To-End": "kept",
        },
    )
    assert response.status == 200
    seen = scripted.last("/hop").headers
    for name in ("X-Client-Hop", "TE", "Proxy-Authorization"):
        assert name not in seen, name
    assert "x-client-hop" not in seen.get("Connection", "").lower()
    assert seen["X-End-To-End"] == "kept"


# ── Via and forwarding fields ───────────────────────────────────────────────


async def test_the_origin_sees_the_edge_in_via(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9110 §7.6.3: a proxy appends itself to Via on the forwarded request."""
    scripted.reply("/via", "body", headers=CACHEABLE)
    response, _ = await get(client, edge.url + "/via", headers={"Via": "1.1 browser-proxy"})
    assert response.status == 200
    via = scripted.last("/via").headers["Via"]
    assert via.startswith("1.1 browser-proxy, ")
    assert "pinedge-test" in via


async def test_the_client_sees_the_edge_in_via_on_a_miss_and_a_hit(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9110 §7.6.3: a proxy appends itself to Via on the response too."""
    scripted.reply("/via", "body", headers={**CACHEABLE, "Via": "1.1 origin-lb"})
    for expected in ("stored", "hit"):
        response, _ = await get(client, edge.url + "/via")
        assert expected in our_entry(response.headers)
        via = response.headers["Via"]
        assert via.startswith("1.1 origin-lb, "), via
        assert "pinedge-test" in via


async def test_x_forwarded_for_carries_the_client_address_to_the_origin(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """The address the edge saw, not the one the client claims (test_edge_forwarding.py
    has the rest of the forwarding fields, and trusted peers)."""
    scripted.reply("/xff", "body", headers=CACHEABLE)
    await get(client, edge.url + "/xff", headers={"X-Forwarded-For": "203.0.113.7"})
    assert scripted.last("/xff").headers["X-Forwarded-For"] == "127.0.0.1"


async def test_the_origin_gets_its_own_host_by_default(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9110 §7.2: Host names the target of the forwarded request, the origin."""
    scripted.reply("/host", "body", headers=CACHEABLE)
    response, _ = await get(client, edge.url + "/host", headers={"Host": "localhost"})
    assert response.status == 200
    assert scripted.last("/host").headers["Host"] == scripted.url.removeprefix("http://")


# ── Age and Cache-Status ────────────────────────────────────────────────────


async def test_every_hit_carries_age(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §5.1: a response served from cache carries Age."""
    scripted.reply("/age", "body", headers=CACHEABLE)
    await get(client, edge.url + "/age")
    for _ in range(3):
        response, _ = await get(client, edge.url + "/age")
        assert our_entry(response.headers)[1] == "hit"
        assert response.headers["Age"].isdigit()
        assert int(response.headers["Age"]) <= 60


async def test_cache_status_says_miss_and_stored_then_hit_with_ttl(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9211 §2: fwd=miss and stored on the first request, hit and ttl after."""
    scripted.reply("/cs", "body", headers=CACHEABLE)
    response, _ = await get(client, edge.url + "/cs")
    entry = our_entry(response.headers)
    assert entry[1] == "fwd=miss"
    assert "stored" in entry
    assert "hit" not in entry
    response, _ = await get(client, edge.url + "/cs")
    entry = our_entry(response.headers)
    assert entry[1] == "hit"
    assert 58 <= ttl(entry) <= 60


async def test_cache_status_on_a_post_says_fwd_method(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9211 §2.2: fwd=method — the request method is not cacheable here."""
    scripted.reply("/form", "done")
    async with client.post(edge.url + "/form", data=b"x=1") as response:
        assert response.status == 200
        assert await response.read() == b"done"
        entry = our_entry(response.headers)
    assert entry[1] == "fwd=method"
    assert "hit" not in entry
    assert "stored" not in entry


async def test_cache_status_on_a_421_for_an_unknown_host(
    edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9211 §2.1: an error the edge makes itself is not a hit (not from the cache)."""
    response, body = await get(client, edge.url + "/", headers={"Host": "other.example"})
    assert response.status == 421
    assert b"other.example" in body
    entry = our_entry(response.headers)
    assert "hit" not in entry
    assert not any(p.startswith("ttl=") for p in entry)


async def test_cache_status_on_a_502_when_the_origin_is_down(
    start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9211 §2.2: the request went forward (fwd=miss) and failed."""
    edge = await start_edge(f"http://127.0.0.1:{free_port()}")
    response, _ = await get(client, edge.url + "/down")
    assert response.status == 502
    entry = our_entry(response.headers)
    assert entry[1] == "fwd=miss"
    assert "hit" not in entry
    assert "stored" not in entry


async def test_an_upstream_cache_status_is_kept_and_ours_comes_last(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9211 §2: each cache appends its entry; the list grows toward the client."""
    scripted.reply("/chain", "body", headers={**CACHEABLE, "Cache-Status": "upstream-cache; hit"})
    for expected in ("fwd=miss", "hit"):
        response, _ = await get(client, edge.url + "/chain")
        entries = cache_status(response)
        assert len(entries) == 2, entries
        assert entries[0] == "upstream-cache; hit"
        assert entries[1].startswith("pinedge-test; " + expected)


# ── tags ────────────────────────────────────────────────────────────────────


async def test_surrogate_key_and_cache_tag_are_stripped_from_client_responses(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """Tags are for the CDN (purging); clients never see them, on a miss or a hit."""
    scripted.reply(
        "/tagged",
        "body",
        headers={**CACHEABLE, "Surrogate-Key": "pin-1 board-2", "Cache-Tag": "pin-1, board-2"},
    )
    for expected in ("stored", "hit"):
        response, body = await get(client, edge.url + "/tagged")
        assert body == b"body"
        assert expected in our_entry(response.headers)
        assert "Surrogate-Key" not in response.headers
        assert "Cache-Tag" not in response.headers
