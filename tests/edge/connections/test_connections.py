"""Client connections an edge facing the internet must not keep forever: slow heads
(slowloris), idle keep-alives, slow bodies, clients that stop reading, and too many
connections from one client or in all; each closed or refused with a clear answer.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import aiohttp
import pytest
from recorder import RawClient
from support import running_node, sample

from pinedge.core.config import ConfigError

HOST = b"Host: 127.0.0.1\r\n"
SHORT = {"header_timeout": "0.5s", "keepalive_timeout": "1s", "body_timeout": "0.5s"}


async def metrics(edge, client: aiohttp.ClientSession) -> str:
    async with client.get(edge.admin_url + "/metrics") as response:
        return await response.text()


# ── slow request heads (slowloris) ───────────────────────────────────────────


@pytest.mark.slow
async def test_a_request_head_that_trickles_in_gets_408_and_is_closed(client, scripted, start_edge):
    """One header byte every 0.2 s never completes within header_timeout; nginx
    closes after client_header_timeout, Varnish after timeout_idle."""
    scripted.reply("/ok", b"ok", headers={"Cache-Control": "max-age=60"})
    edge = await start_edge(scripted.url, **SHORT)
    slow = await RawClient.connect(edge.url)
    await slow.send(b"GET /ok HTTP/1.1\r\n" + HOST)

    async def trickle() -> None:
        for byte in b"X-Slow: " + b"a" * 50:
            await slow.send(bytes([byte]))
            await asyncio.sleep(0.2)

    dripping = asyncio.create_task(trickle())
    try:
        reply = await slow.response(timeout=5)
        assert reply.status == 408
        assert reply.header("Connection") == "close"
        assert await slow.closed(timeout=2)
    finally:
        dripping.cancel()
        await asyncio.gather(dripping, return_exceptions=True)
        await slow.close()
    assert scripted.hits["/ok"] == 0
    text = await metrics(edge, client)
    assert sample(text, "pinedge_connections_closed_total", reason="header-timeout") == 1


@pytest.mark.slow
async def test_five_hundred_slowloris_connections_are_all_closed_and_others_are_served(
    client, scripted, start_edge
):
    scripted.reply("/ok", b"ok", headers={"Cache-Control": "max-age=60"})
    edge = await start_edge(scripted.url, **SHORT, max_client_connections=0)
    slow = []
    for _ in range(500):
        connection = await RawClient.connect(edge.url)
        await connection.send(b"GET /ok HTTP/1.1\r\n" + HOST + b"X-A: ")
        slow.append(connection)
    async with client.get(edge.url + "/ok") as response:
        assert response.status == 200
    closed = await asyncio.gather(*(connection.closed(timeout=5) for connection in slow))
    assert all(closed)
    for connection in slow:
        await connection.close()
    text = await metrics(edge, client)
    assert sample(text, "pinedge_connections_closed_total", reason="header-timeout") == 500


@pytest.mark.slow
async def test_an_idle_connection_is_closed_after_keepalive_timeout(client, scripted, start_edge):
    scripted.reply("/ok", b"ok", headers={"Cache-Control": "max-age=60"})
    edge = await start_edge(scripted.url, **SHORT)
    silent = await RawClient.connect(edge.url)
    kept = await RawClient.connect(edge.url)
    await kept.send(b"GET /ok HTTP/1.1\r\n" + HOST + b"\r\n")
    assert (await kept.response()).status == 200
    assert await silent.closed(timeout=4)
    assert await kept.closed(timeout=4)
    for connection in (silent, kept):
        await connection.close()
    text = await metrics(edge, client)
    assert sample(text, "pinedge_connections_closed_total", reason="idle-timeout") == 2


@pytest.mark.slow
async def test_a_kept_alive_connection_in_use_is_not_closed_early(client, scripted, start_edge):
    """The idle clock restarts with every request."""
    scripted.reply("/ok", b"ok", headers={"Cache-Control": "max-age=60"})
    edge = await start_edge(scripted.url, **SHORT)
    connection = await RawClient.connect(edge.url)
    for _ in range(6):
        await connection.send(b"GET /ok HTTP/1.1\r\n" + HOST + b"\r\n")
        assert (await connection.response()).status == 200
        await asyncio.sleep(0.4)
    await connection.close()


# ── slow request bodies ──────────────────────────────────────────────────────


@pytest.mark.slow
async def test_a_request_body_that_stops_arriving_gets_408(client, scripted, start_edge):
    received = []

    async def upload(request):
        received.append(await request.read())
        return aiohttp.web.Response(text="stored")

    scripted.handle("/upload", upload)
    edge = await start_edge(scripted.url, **SHORT)
    connection = await RawClient.connect(edge.url)
    await connection.send(
        b"POST /upload HTTP/1.1\r\n" + HOST + b"Content-Length: 100\r\n\r\n" + b"x" * 10
    )
    reply = await connection.response(timeout=5)
    assert reply.status == 408
    assert await connection.closed(timeout=2)
    await connection.close()
    await asyncio.sleep(0.2)
    assert received == []  # the origin never got a whole request
    text = await metrics(edge, client)
    assert sample(text, "pinedge_request_body_timeouts_total") == 1


# ── clients that stop reading ────────────────────────────────────────────────


def stalled(url: str, path: str) -> socket.socket:
    """A client that asks for `path` and never reads its answer."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return sock


@pytest.mark.slow
async def test_a_client_that_stops_reading_is_cut_off_after_send_timeout(
    client, scripted, start_edge
):
    scripted.reply("/big", os.urandom(8 * 1024 * 1024), headers={"Cache-Control": "max-age=60"})
    edge = await start_edge(scripted.url, send_timeout="0.5s")
    async with client.get(edge.url + "/big") as response:
        await response.read()
    sock = stalled(edge.url, "/big")
    try:
        await asyncio.sleep(2.5)
        text = await metrics(edge, client)
        assert sample(text, "pinedge_connections_closed_total", reason="send-timeout") == 1
        sock.setblocking(False)
        with pytest.raises(ConnectionResetError):
            while True:
                if not await asyncio.get_running_loop().sock_recv(sock, 1 << 20):
                    raise ConnectionResetError  # closed: also cut off
    finally:
        sock.close()


def anon_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise AssertionError("no RssAnon")


@pytest.mark.slow
@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "plain"])
async def test_forty_clients_that_stop_reading_a_large_hit_cost_well_under_a_mib_each(
    client, scripted, tmp_path, fast_path
):
    """Writes follow the transport's flow control: a stalled reader holds a slice of
    the body, not a copy of it (5 MiB each before)."""
    scripted.reply("/big", os.urandom(5 * 1024 * 1024), headers={"Cache-Control": "max-age=600"})
    config = tmp_path / "edge.toml"
    config.write_text(f"fast_path = {str(fast_path).lower()}\nsend_timeout = '60s'\n")
    async with running_node(client, scripted.url, config=str(config)) as node:
        for _ in range(2):
            async with client.get(node.url + "/big") as response:
                assert len(await response.read()) == 5 * 1024 * 1024
        (worker,) = node.worker_pids()
        before = anon_kib(worker)
        sockets = [stalled(node.url, "/big") for _ in range(40)]
        try:
            await asyncio.sleep(2)
            grown = anon_kib(worker) - before
        finally:
            for sock in sockets:
                sock.close()
    assert grown < 40 * 512, f"{grown} KiB for 40 stalled clients"


async def test_requests_pipelined_behind_a_large_body_are_answered_in_order(
    client, scripted, start_edge
):
    body = os.urandom(3 * 1024 * 1024)
    scripted.reply("/big", body, headers={"Cache-Control": "max-age=60"})
    scripted.reply("/small", b"small", headers={"Cache-Control": "max-age=60"})
    edge = await start_edge(scripted.url)
    for path in ("/big", "/small"):
        async with client.get(edge.url + path) as response:
            await response.read()
    connection = await RawClient.connect(edge.url)
    request = b"GET %s HTTP/1.1\r\n" + HOST + b"\r\n"
    await connection.send(request % b"/big" + request % b"/small" + request % b"/big")
    await asyncio.sleep(0.3)  # the first body is still going out when the rest is parsed
    first, second, third = [await connection.response(timeout=10) for _ in range(3)]
    assert (first.body, second.body, third.body) == (body, b"small", body)
    await connection.close()


# ── how many connections ─────────────────────────────────────────────────────


async def test_a_client_over_max_client_connections_gets_429_and_the_next_fits_once_one_closes(
    client, scripted, start_edge
):
    scripted.reply("/ok", b"ok", headers={"Cache-Control": "max-age=60"})
    edge = await start_edge(scripted.url, max_client_connections=3)
    held = [await RawClient.connect(edge.url) for _ in range(3)]
    extra = await RawClient.connect(edge.url)
    refused = await extra.response()
    assert refused.status == 429
    assert refused.header("Retry-After") == "1"
    assert b"3 connections" in refused.body
    assert await extra.closed()
    await extra.close()
    await held.pop().close()
    await asyncio.sleep(0.2)
    again = await RawClient.connect(edge.url)
    await again.send(b"GET /ok HTTP/1.1\r\n" + HOST + b"\r\n")
    assert (await again.response()).status == 200
    for connection in (*held, again):
        await connection.close()
    text = await metrics(edge, client)
    assert sample(text, "pinedge_connections_refused_total", reason="client-limit") == 1


async def test_a_node_over_max_connections_answers_503_to_everyone(client, scripted, start_edge):
    edge = await start_edge(scripted.url, max_connections=4, max_client_connections=0)
    held = [await RawClient.connect(edge.url) for _ in range(4)]
    extra = await RawClient.connect(edge.url)
    assert (await extra.response()).status == 503
    for connection in (*held, extra):
        await connection.close()
    text = await metrics(edge, client)
    assert sample(text, "pinedge_connections_refused_total", reason="node-limit") == 1


async def test_a_trusted_peer_is_not_held_to_the_per_client_limit(client, scripted, start_edge):
    """A load balancer carries many clients over its connections."""
    edge = await start_edge(scripted.url, max_client_connections=2, trusted_proxies=["127.0.0.0/8"])
    held = [await RawClient.connect(edge.url) for _ in range(5)]
    scripted.reply("/ok", b"ok", headers={"Cache-Control": "max-age=60"})
    await held[-1].send(b"GET /ok HTTP/1.1\r\n" + HOST + b"\r\n")
    assert (await held[-1].response()).status == 200
    for connection in held:
        await connection.close()


@pytest.mark.slow
async def test_a_clients_connections_are_counted_across_the_workers(client, scripted, tmp_path):
    """Each new connection lands on either worker (SO_REUSEPORT); the limit is the node's."""
    config = tmp_path / "edge.toml"
    config.write_text("max_client_connections = 6\n")
    async with running_node(client, scripted.url, workers=2, config=str(config)) as node:
        held = [await RawClient.connect(node.url) for _ in range(6)]
        await asyncio.sleep(0.2)
        refused = []
        for _ in range(4):
            extra = await RawClient.connect(node.url)
            refused.append((await extra.response()).status)
            await extra.close()
        assert refused == [429] * 4
        async with client.get(node.admin + "/metrics") as response:
            text = await response.text()
        assert sample(text, "pinedge_connections_open") >= 6
        for connection in held:
            await connection.close()


async def test_the_limits_and_timeouts_are_refused_when_nonsense(start_edge):
    with pytest.raises(ConfigError, match="max_connections"):
        await start_edge("http://127.0.0.1:9", max_connections=0)
    with pytest.raises(ConfigError, match="client_ipv4_prefix"):
        await start_edge("http://127.0.0.1:9", client_ipv4_prefix=40)
