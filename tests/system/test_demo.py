"""`pinedge demo` as a user meets it: the printed URL opened in headless Chromium.

The page loads through the edge with its images, and a second visit is served
from the edge's cache: the origin sees no new request.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from support import free_port

pytestmark = [pytest.mark.system, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PINEDGE = [sys.executable, "-m", "pinedge"]


@dataclass
class Demo:
    page: str
    metrics: str
    origin: str
    stats: str  # the origin's counters, on its control listener
    process: asyncio.subprocess.Process


@pytest.fixture
async def demo() -> AsyncIterator[Demo]:
    process = await asyncio.create_subprocess_exec(
        *PINEDGE,
        "demo",
        "--port",
        str(free_port()),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PINEDGE_CONFIG": ""},
    )
    assert process.stdout is not None
    urls: list[str] = []
    output: list[str] = []
    async with asyncio.timeout(20):
        while len(urls) < 4:
            line = (await process.stdout.readline()).decode()
            assert line, "pinedge demo exited early:\n" + "".join(output)
            output.append(line)
            urls += re.findall(r"http://[\w.:\[\]]+/?[\w/]*", line)
    try:
        yield Demo(urls[0], urls[1], urls[2].rstrip("/"), urls[3], process)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(15):
                await process.wait()


async def load_in_chromium(url: str, net_log: Path | None = None) -> str:
    """The page's DOM after Chromium (a fresh profile, so nothing from its own cache)
    has loaded it and its images; `net_log` records what went over the network."""
    extra = [f"--log-net-log={net_log}"] if net_log else []
    with tempfile.TemporaryDirectory() as profile:
        browser = await asyncio.create_subprocess_exec(
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--window-size=1280,900",
            "--virtual-time-budget=8000",
            *extra,
            "--dump-dom",
            url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        async with asyncio.timeout(60):
            dom, _ = await browser.communicate()
    return dom.decode()


async def origin_stats(session: aiohttp.ClientSession, stats_url: str) -> dict[str, int]:
    async with session.get(stats_url) as response:
        return dict((await response.json())["urls"])


async def test_the_demo_page_loads_through_the_edge_in_a_browser_and_a_second_visit_is_cached(
    demo: Demo,
) -> None:
    assert Path(CHROMIUM).exists(), "headless Chromium is needed: make system-deps installs it"
    first = await load_in_chromium(demo.page)
    loaded = re.search(r"(\d+)/(\d+) images loaded", first)
    assert loaded, "the page's script did not report loaded images"
    assert int(loaded.group(1)) == int(loaded.group(2)) > 0
    assert "srcset=" in first and 'loading="lazy"' in first

    async with aiohttp.ClientSession() as session:
        after_first = await origin_stats(session, demo.stats)
        assert after_first.get("/") == 1
        assert sum(1 for url in after_first if url.startswith("/img/")) > 0

        second = await load_in_chromium(demo.page)
        assert re.search(r"(\d+)/\1 images loaded", second)
        assert await origin_stats(session, demo.stats) == after_first

        async with session.get(demo.page) as response:
            assert response.status == 200
            assert response.headers["Cache-Status"].startswith("pinedge-demo; hit")
        async with session.get(demo.metrics) as response:
            metrics = await response.text()
    hits = re.search(r'pinedge_requests_total\{cache="hit",code="2xx"\} (\d+)', metrics)
    assert hits and int(hits.group(1)) >= sum(after_first.values())


async def test_the_origin_controls_the_demo_prints_are_not_reachable_through_its_edge(
    demo: Demo,
) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(demo.stats) as response:
            assert response.status == 200 and "paths" in await response.json()
        for path in ("_origin/stats", "_origin/faults"):
            async with session.get(demo.page + path) as response:
                assert response.status == 404, path
            async with session.post(demo.page + path, json={"down": True}) as response:
                assert response.status == 404, path
        async with session.get(demo.page) as response:
            assert response.status == 200


async def test_the_demo_stops_cleanly_on_sigterm(demo: Demo) -> None:
    demo.process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(15):
        code = await demo.process.wait()
    assert code == 0


def received_content_types(net_log: Path) -> dict[str, str]:
    """URL -> Content-Type of every response Chromium read, from its net log."""
    log = json.loads(net_log.read_text())
    names = {number: name for name, number in log["constants"]["logEventTypes"].items()}
    urls: dict[int, str] = {}
    types: dict[str, str] = {}
    for event in log["events"]:
        kind = names.get(event["type"])
        params = event.get("params", {})
        source = event["source"]["id"]
        if kind == "URL_REQUEST_START_JOB" and "url" in params:
            urls[source] = params["url"]
        elif kind == "HTTP_TRANSACTION_READ_RESPONSE_HEADERS" and source in urls:
            for line in params.get("headers", []):
                if line.lower().startswith("content-type:"):
                    types[urls[source]] = line.split(":", 1)[1].strip()
    return types


async def test_the_browser_receives_avif_at_the_width_its_srcset_asked_for(
    demo: Demo, tmp_path: Path
) -> None:
    net_log = tmp_path / "net.json"
    dom = await load_in_chromium(demo.page, net_log)
    assert re.search(r"(\d+)/\1 images loaded", dom)
    images = {
        url: kind
        for url, kind in received_content_types(net_log).items()
        if "/img/" in url and "lqip" not in url
    }
    assert images, "Chromium fetched no images through the edge"
    for url, kind in images.items():
        # A 1280 px window at DPR 1 fills the grid's 236 px slots from the 236w candidate.
        assert url.endswith("?w=236"), url
        if url.split("?")[0].endswith(".gif"):
            assert kind in ("image/webp", "image/gif"), (url, kind)
        else:
            assert kind == "image/avif", (url, kind)
