"""`pinedge demo` as a user meets it: the printed URL opened in headless Chromium.

The page loads through the edge with its images, and a second visit is served
from the edge's cache: the origin sees no new request.
"""

from __future__ import annotations

import asyncio
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

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PINEDGE = [sys.executable, "-m", "pinedge"]


@dataclass
class Demo:
    page: str
    metrics: str
    origin: str
    process: asyncio.subprocess.Process


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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
    output = []
    async with asyncio.timeout(20):
        while len(urls) < 3:
            line = (await process.stdout.readline()).decode()
            assert line, "pinedge demo exited early:\n" + "".join(output)
            output.append(line)
            urls += re.findall(r"http://[\w.:\[\]]+/?[\w/]*", line)
    try:
        yield Demo(urls[0], urls[1], urls[2].rstrip("/"), process)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(15):
                await process.wait()


async def load_in_chromium(url: str) -> str:
    """The page's DOM after Chromium (a fresh profile, so nothing from its own cache)
    has loaded it and its images."""
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
            "--dump-dom",
            url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        async with asyncio.timeout(60):
            dom, _ = await browser.communicate()
    return dom.decode()


async def origin_stats(session: aiohttp.ClientSession, origin: str) -> dict[str, int]:
    async with session.get(origin + "/_origin/stats") as response:
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
        after_first = await origin_stats(session, demo.origin)
        assert after_first.get("/") == 1
        assert sum(1 for url in after_first if url.startswith("/img/")) > 0

        second = await load_in_chromium(demo.page)
        assert re.search(r"(\d+)/\1 images loaded", second)
        assert await origin_stats(session, demo.origin) == after_first

        async with session.get(demo.page) as response:
            assert response.status == 200
            assert response.headers["Cache-Status"].startswith("pinedge-demo; hit")
        async with session.get(demo.metrics) as response:
            metrics = await response.text()
    hits = re.search(r'pinedge_requests_total\{cache="hit",code="2xx"\} (\d+)', metrics)
    assert hits and int(hits.group(1)) >= sum(after_first.values())


async def test_the_demo_stops_cleanly_on_sigterm(demo: Demo) -> None:
    demo.process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(15):
        code = await demo.process.wait()
    assert code == 0
