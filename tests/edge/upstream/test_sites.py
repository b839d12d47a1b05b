"""Sites (virtual hosts): the Host header picks the site, each site has its own
origin and its own cache entries, and other hosts are misdirected (RFC 9110 §7.2,
§15.5.20)."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from edge_support import RunningEdge, Scripted, raw_head, send

NODE = "pinedge-test"


@dataclass
class NamedOrigin:
    """A second origin: every path answers with its own name, cacheable for a minute."""

    name: str
    url: str = ""
    hits: collections.Counter[str] = field(default_factory=collections.Counter)

    async def dispatch(self, request: web.BaseRequest) -> web.Response:
        self.hits[request.path] += 1
        return web.Response(text=f"from {self.name}", headers={"Cache-Control": "max-age=60"})


@pytest.fixture
async def origin_b() -> AsyncIterator[NamedOrigin]:
    origin = NamedOrigin("b")
    runner = web.ServerRunner(web.Server(origin.dispatch))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    origin.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield origin
    await runner.cleanup()


@pytest.fixture
async def two_sites(scripted, origin_b, start_edge):
    scripted.reply("/logo.png", b"from a", headers={"Cache-Control": "max-age=60"})
    return await start_edge(
        sites=[
            {"name": "a", "hosts": ["a.test"], "origin": scripted.url},
            {"name": "b", "hosts": ["b.test"], "origin": origin_b.url},
        ]
    )


async def fetch(client, edge, host: str, path: str = "/logo.png") -> tuple[int, str, str]:
    async with client.get(edge.url + path, headers={"Host": host}) as response:
        return response.status, await response.text(), response.headers["Cache-Status"]


async def test_each_site_reaches_its_own_origin(client, scripted, origin_b, two_sites):
    assert (await fetch(client, two_sites, "a.test"))[:2] == (200, "from a")
    assert (await fetch(client, two_sites, "b.test"))[:2] == (200, "from b")
    assert scripted.hits["/logo.png"] == 1
    assert origin_b.hits["/logo.png"] == 1


async def test_the_same_path_on_two_sites_is_cached_separately(
    client, scripted, origin_b, two_sites
):
    """RFC 9111 §2: the cache key holds the target URI, host included."""
    await fetch(client, two_sites, "a.test")
    await fetch(client, two_sites, "b.test")
    for host, body in (("a.test", "from a"), ("b.test", "from b")):
        _status, text, cache_status = await fetch(client, two_sites, host)
        assert text == body
        assert cache_status.startswith(f"{NODE}; hit")
    assert scripted.hits["/logo.png"] == 1
    assert origin_b.hits["/logo.png"] == 1


async def test_a_host_with_a_port_selects_its_site(client, scripted, origin_b, two_sites):
    """RFC 9110 §7.2: Host is uri-host [ ":" port ]; the port does not change the site."""
    status, body, _ = await fetch(client, two_sites, "a.test:8080")
    assert (status, body) == (200, "from a")
    assert origin_b.hits["/logo.png"] == 0


async def test_a_host_no_site_declares_gets_421(client, scripted, origin_b, two_sites):
    """RFC 9110 §15.5.20: Misdirected Request, and no origin is asked."""
    status, body, cache_status = await fetch(client, two_sites, "c.test")
    assert status == 421
    assert "c.test" in body
    assert cache_status.startswith(NODE)
    assert scripted.hits["/logo.png"] == origin_b.hits["/logo.png"] == 0


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
async def test_an_origin_alone_serves_localhost_and_the_loopback_address(
    client, edge, scripted, host
):
    scripted.reply("/logo.png", b"from a")
    status, body, _ = await fetch(client, edge, host)
    assert (status, body) == (200, "from a")


async def test_hosts_adds_a_name_to_the_single_site(client, scripted, start_edge):
    scripted.reply("/logo.png", b"from a")
    edge = await start_edge(scripted.url, hosts=["cdn.test"])
    assert (await fetch(client, edge, "cdn.test"))[:2] == (200, "from a")
    assert (await fetch(client, edge, "other.test"))[0] == 421


async def test_without_hosts_a_name_is_not_served(client, edge, scripted):
    scripted.reply("/logo.png", b"from a")
    assert (await fetch(client, edge, "cdn.test"))[0] == 421
    assert scripted.hits["/logo.png"] == 0


async def test_an_absolute_form_target_is_routed_by_its_authority_on_every_path(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """Before: the hit path keyed on Host and served a hit the general path refuses."""
    scripted.reply("/abs", b"x", headers={"Cache-Control": "max-age=600"})
    await send(client, edge.url + "/abs")
    head = await raw_head(
        edge, b"GET http://elsewhere.test/abs HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
    assert head.startswith(b"HTTP/1.1 421")
