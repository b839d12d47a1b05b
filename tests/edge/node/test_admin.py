"""The admin listener (/healthz, /readyz, /metrics in Prometheus text format) and a
graceful stop of a real `pinedge edge` process on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from support import free_port, sample

NODE = "pinedge-test"
PINEDGE = Path(sys.executable).with_name("pinedge")


# ── helpers ──────────────────────────────────────────────────────────────────


async def get_status(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as response:
        await response.read()
        return response.status


# ── health and readiness ─────────────────────────────────────────────────────


async def test_healthz_answers_200(client, edge):
    async with client.get(edge.admin_url + "/healthz") as response:
        assert response.status == 200


async def test_readyz_answers_200_while_running(client, edge):
    async with client.get(edge.admin_url + "/readyz") as response:
        assert response.status == 200


# ── metrics ──────────────────────────────────────────────────────────────────


async def test_metrics_is_prometheus_text(client, edge):
    async with client.get(edge.admin_url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    assert "# TYPE pinedge_requests_total counter" in text
    assert "# HELP pinedge_requests_total " in text


async def test_metrics_count_a_miss_and_a_hit(client, edge, scripted):
    scripted.reply("/logo.png", b"logo", headers={"Cache-Control": "max-age=60"})
    for _ in range(2):
        async with client.get(edge.url + "/logo.png") as response:
            await response.read()
    text = await edge.metrics(client)
    assert sample(text, "pinedge_requests_total", cache="miss") == 1
    assert sample(text, "pinedge_requests_total", cache="hit") == 1


async def test_metrics_show_store_bytes_after_storing(client, edge, scripted):
    assert sample(await edge.metrics(client), "pinedge_store_bytes") == 0
    scripted.reply("/logo.png", b"logo" * 100, headers={"Cache-Control": "max-age=60"})
    async with client.get(edge.url + "/logo.png") as response:
        await response.read()
    assert sample(await edge.metrics(client), "pinedge_store_bytes") >= 400


async def test_metrics_count_upstream_requests(client, edge, scripted):
    scripted.reply("/logo.png", b"logo")
    async with client.get(edge.url + "/logo.png") as response:
        await response.read()
    text = await edge.metrics(client)
    assert "# TYPE pinedge_upstream_requests_total counter" in text
    assert sample(text, "pinedge_upstream_requests_total", code="2xx") == 1


async def test_metrics_count_an_upstream_failure(client, start_edge):
    edge = await start_edge(f"http://127.0.0.1:{free_port()}")
    async with client.get(edge.url + "/logo.png") as response:
        assert response.status == 502
    assert sample(await edge.metrics(client), "pinedge_upstream_errors_total") == 1


async def test_evictions_keep_the_store_within_its_budget(client, scripted, start_edge):
    edge = await start_edge(scripted.url, cache_mem="64KiB")
    for i in range(10):
        scripted.reply(f"/p{i}.jpg", b"%d" % i * 16384, headers={"Cache-Control": "max-age=60"})
        async with client.get(edge.url + f"/p{i}.jpg") as response:
            assert await response.read() == b"%d" % i * 16384
        assert sample(await edge.metrics(client), "pinedge_store_bytes") <= 64 * 1024
    text = await edge.metrics(client)
    assert sample(text, "pinedge_store_evictions_total") > 0
    assert sample(text, "pinedge_store_bytes") > 0


# ── graceful stop ────────────────────────────────────────────────────────────


async def wait_until_ready(admin_url: str, process: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            assert process.returncode is None, "pinedge edge exited during start-up"
            try:
                if await get_status(session, admin_url + "/readyz") == 200:
                    return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    pytest.fail("pinedge edge did not become ready")


async def connection_refused(port: int) -> bool:
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    return False


@pytest.mark.slow
async def test_sigterm_finishes_in_flight_requests_refuses_new_ones_and_exits_0(scripted, tmp_path):
    body = b"s" * 50000
    scripted.reply("/slow.jpg", body, delay=1.5)
    config = tmp_path / "edge.toml"
    config.write_text('drain_time = "3s"\n')
    port, admin = free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
        str(PINEDGE),
        "edge",
        "--config",
        str(config),
        "--listen",
        f"127.0.0.1:{port}",
        "--admin",
        f"127.0.0.1:{admin}",
        "--origin",
        scripted.url,
        "--name",
        NODE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_until_ready(f"http://127.0.0.1:{admin}", process)
        async with aiohttp.ClientSession() as session:

            async def slow() -> tuple[int, bytes]:
                async with session.get(f"http://127.0.0.1:{port}/slow.jpg") as response:
                    return response.status, await response.read()

            in_flight = asyncio.create_task(slow())
            while scripted.hits["/slow.jpg"] == 0:
                await asyncio.sleep(0.01)
            process.send_signal(signal.SIGTERM)
            refused = False
            for _ in range(100):
                if await connection_refused(port):
                    refused = True
                    break
                await asyncio.sleep(0.01)
            assert refused, "new connections are refused once draining starts"
            assert await in_flight == (200, body)
        _, stderr = await asyncio.wait_for(process.communicate(), 3 + 5)
        assert process.returncode == 0, stderr.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
