"""The edge in front of an origin that is not ours: a real nginx serving static files.

nginx shapes the caching headers itself (`expires`, `add_header ... always`, its own
ETag and Last-Modified), `limit_rate` makes a body slow, and its access log
(`$request_method $request_uri $status $http_if_none_match`) counts what reached it.
Objects that must go stale live for max-age=1; those tests sleep just past that.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import aiohttp
import pytest
from edge_support import StartEdge, our_entry
from support import free_port

PAST_MAX_AGE = 1.2  # seconds: just past max-age=1
pytestmark = pytest.mark.nginx

SYNC_PATH = "/__sync"  # asked of nginx directly, so every earlier log line is written

# One location per caching behaviour; each test writes its files under www/<location>/.
NGINX_CONF = """\
master_process off;
worker_processes 1;
error_log {tmp}/error.log warn;
pid {tmp}/nginx.pid;

events {{
    worker_connections 512;
}}

http {{
    default_type application/octet-stream;
    log_format counted escape=none '$request_method $request_uri $status $http_if_none_match';
    access_log {tmp}/access.log counted;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    sendfile off;
    gzip off;

    server {{
        listen 127.0.0.1:{port};
        root {tmp}/www;
        etag on;

        location = {sync} {{
            return 204;
        }}
        location /max-age-60/ {{
            expires 60s;
        }}
        location /slow/ {{
            expires 60s;
            limit_rate 200k;
        }}
        location /max-age-1/ {{
            expires 1s;
        }}
        location /plain/ {{
        }}
        location /stale-if-error/ {{
            add_header Cache-Control "max-age=1, stale-if-error=60" always;
        }}
        location /vary/ {{
            expires 60s;
            add_header Vary Accept-Encoding;
        }}
    }}
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(found, os.X_OK):
        pytest.fail(
            "nginx is not installed, and these tests run the edge in front of a real nginx: "
            "run `sh scripts/system-deps` as root (or `apt-get install nginx`)",
            pytrace=False,
        )
    return found


class Nginx:
    """A real nginx on a loopback port, serving tmp/www, stoppable mid-test."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.www = tmp / "www"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: asyncio.subprocess.Process | None = None

    def write(self, path: str, body: bytes) -> bytes:
        """Put a file where nginx serves `path`; returns the body."""
        target = self.www / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
        return body

    async def start(self) -> None:
        self.www.mkdir(exist_ok=True)
        conf = self.tmp / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=self.tmp, port=self.port, sync=SYNC_PATH))
        with (self.tmp / "stderr.log").open("wb") as stderr:
            self.process = await asyncio.create_subprocess_exec(
                nginx_binary(),
                *("-c", str(conf), "-p", str(self.tmp), "-g", "daemon off;"),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
            )
        for _ in range(200):
            if self.process.returncode is not None:
                break
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            await writer.wait_closed()
            return
        await self.stop()
        pytest.fail(f"nginx did not start on port {self.port}:\n{self.errors()}", pytrace=False)

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()

    def errors(self) -> str:
        texts = [p.read_text() for p in (self.tmp / "stderr.log", self.tmp / "error.log")]
        return "".join(t for t in texts if t) if any(texts) else "(no output)"

    async def log(self, path: str) -> list[list[str]]:
        """Access log lines for `path`, each [method, uri, status, if-none-match] ("-"
        when the request had no If-None-Match)."""
        if self.process is not None:  # one process: once this is answered, all is logged
            async with aiohttp.ClientSession() as session, session.get(self.url + SYNC_PATH):
                pass
        access = self.tmp / "access.log"
        lines = access.read_text().splitlines() if access.exists() else []
        fields = [line.split(" ", 3) for line in lines]
        return [
            [method, uri, status, inm or "-"] for method, uri, status, inm in fields if uri == path
        ]


@pytest.fixture
async def nginx(tmp_path: Path) -> AsyncIterator[Nginx]:
    server = Nginx(tmp_path)
    await server.start()
    yield server
    await server.stop()


async def fetch(
    client: aiohttp.ClientSession,
    url: str,
    headers: Mapping[str, str] | None = None,
    skip: tuple[str, ...] = (),
) -> tuple[int, bytes, list[str], Mapping[str, str]]:
    """(status, body, our Cache-Status parameters, headers) of one GET; `skip` names
    fields aiohttp would otherwise add (e.g. its default Accept-Encoding)."""
    async with client.get(url, headers=headers, skip_auto_headers=skip) as response:
        body = await response.read()
        return response.status, body, our_entry(response.headers), response.headers


async def test_a_file_nginx_marks_max_age_60_is_fetched_from_nginx_once(
    nginx: Nginx, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §4.2: fresh for max-age seconds, so the second request is a hit."""
    body = nginx.write("/max-age-60/pin.txt", b"a pin served by nginx\n")
    edge = await start_edge(nginx.url)

    status1, body1, entry1, headers1 = await fetch(client, edge.url + "/max-age-60/pin.txt")
    status2, body2, entry2, _ = await fetch(client, edge.url + "/max-age-60/pin.txt")

    assert headers1["Cache-Control"] == "max-age=60"
    assert (status1, body1) == (200, body)
    assert entry1[1:] == ["fwd=miss", "stored"]
    assert (status2, body2) == (200, body)
    assert "hit" in entry2
    assert [line[:3] for line in await nginx.log("/max-age-60/pin.txt")] == [
        ["GET", "/max-age-60/pin.txt", "200"]
    ]


@pytest.mark.slow
async def test_fifty_clients_on_a_slow_nginx_file_make_one_request_at_nginx(
    nginx: Nginx, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    """Collapsed forwarding: a 300 KB body at 200 KB/s (~1.5 s) is fetched once for all."""
    body = nginx.write("/slow/board.bin", os.urandom(300 * 1024))
    edge = await start_edge(nginx.url)

    results = await asyncio.gather(
        *(fetch(client, edge.url + "/slow/board.bin") for _ in range(50))
    )

    assert all(status == 200 for status, _, _, _ in results)
    digests = {hashlib.sha256(got).hexdigest() for _, got, _, _ in results}
    assert digests == {hashlib.sha256(body).hexdigest()}
    entries = [entry for _, _, entry, _ in results]
    assert sum("stored" in e for e in entries) == 1
    assert sum("collapsed" in e for e in entries) == 49
    assert len(await nginx.log("/slow/board.bin")) == 1


@pytest.mark.slow
async def test_a_stale_file_is_revalidated_with_nginx_validators_and_nginx_answers_304(
    nginx: Nginx, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §4.3.1, §4.3.4: If-None-Match from the stored ETag; a 304 freshens it."""
    body = nginx.write("/max-age-1/pin.txt", b"revalidate me\n")
    edge = await start_edge(nginx.url)
    _, _, _, stored = await fetch(client, edge.url + "/max-age-1/pin.txt")
    await asyncio.sleep(PAST_MAX_AGE)

    status, got, entry, _ = await fetch(client, edge.url + "/max-age-1/pin.txt")

    assert (status, got) == (200, body)
    assert entry[1:3] == ["fwd=stale", "fwd-status=304"]
    log = await nginx.log("/max-age-1/pin.txt")
    assert [line[2] for line in log] == ["200", "304"]
    assert log[0][3] == "-"
    assert log[1][3] == stored["ETag"]


async def test_a_file_without_caching_headers_is_revalidated_at_nginx_on_every_request(
    nginx: Nginx, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §4.2.2: heuristic freshness is off by default, so a response with only
    ETag and Last-Modified is stored stale and each use is validated (§4.3)."""
    body = nginx.write("/plain/pin.txt", b"no cache-control here\n")
    edge = await start_edge(nginx.url)

    results = [await fetch(client, edge.url + "/plain/pin.txt") for _ in range(3)]

    assert "Cache-Control" not in results[0][3] and "Expires" not in results[0][3]
    assert all((status, got) == (200, body) for status, got, _, _ in results)
    assert results[0][2][1] == "fwd=miss"
    assert all(entry[1:3] == ["fwd=stale", "fwd-status=304"] for _, _, entry, _ in results[1:])
    log = await nginx.log("/plain/pin.txt")
    assert [line[2] for line in log] == ["200", "304", "304"]
    assert all(line[3] == results[0][3]["ETag"] for line in log[1:])


@pytest.mark.slow
async def test_a_stale_if_error_file_is_served_while_nginx_is_stopped(
    nginx: Nginx, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 5861 §4: stale-if-error=60 lets the stored response stand in for a dead origin."""
    body = nginx.write("/stale-if-error/pin.txt", b"still here\n")
    edge = await start_edge(nginx.url)
    _, _, _, stored = await fetch(client, edge.url + "/stale-if-error/pin.txt")
    assert stored["Cache-Control"] == "max-age=1, stale-if-error=60"
    await nginx.stop()
    await asyncio.sleep(PAST_MAX_AGE)

    status, got, entry, _ = await fetch(client, edge.url + "/stale-if-error/pin.txt")

    assert (status, got) == (200, body)
    assert "detail=stale-if-error" in entry


async def test_a_path_never_stored_is_a_502_with_a_reason_while_nginx_is_stopped(
    nginx: Nginx, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    """Nothing to stand in for a dead origin: a 502 that says why (RFC 9110 §15.6.3)."""
    nginx.write("/stale-if-error/other.txt", b"never asked for\n")
    edge = await start_edge(nginx.url)
    await nginx.stop()

    status, got, entry, _ = await fetch(client, edge.url + "/stale-if-error/other.txt")

    assert status == 502
    assert got.decode().removeprefix("502").strip(), "the 502 gives no reason"
    assert any(p.startswith("detail=") for p in entry), entry


@pytest.mark.slow
async def test_with_grace_a_stale_file_is_served_while_nginx_is_stopped(
    nginx: Nginx, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    """The edge's grace setting serves stale when every upstream fails (RFC 9111 §4.2.4)."""
    body = nginx.write("/max-age-1/pin.txt", b"graceful\n")
    edge = await start_edge(nginx.url, grace="30s")
    await fetch(client, edge.url + "/max-age-1/pin.txt")
    await nginx.stop()
    await asyncio.sleep(PAST_MAX_AGE)

    status, got, _, _ = await fetch(client, edge.url + "/max-age-1/pin.txt")

    assert (status, got) == (200, body)


@pytest.mark.slow
async def test_without_grace_a_stale_file_is_an_error_while_nginx_is_stopped(
    nginx: Nginx, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    """No stale-if-error and no grace: stale is not served (RFC 9111 §4.2.4)."""
    nginx.write("/max-age-1/pin.txt", b"gone with nginx\n")
    edge = await start_edge(nginx.url)
    await fetch(client, edge.url + "/max-age-1/pin.txt")
    await nginx.stop()
    await asyncio.sleep(PAST_MAX_AGE)

    status, got, _, _ = await fetch(client, edge.url + "/max-age-1/pin.txt")

    assert status in (502, 504)
    assert got != b"gone with nginx\n"


async def test_a_range_of_a_stored_nginx_file_is_cut_from_the_cache(
    nginx: Nginx, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9110 §14.2: a cache answers Range from the stored representation."""
    body = nginx.write("/max-age-60/ten.bin", os.urandom(10 * 1024))
    edge = await start_edge(nginx.url)
    await fetch(client, edge.url + "/max-age-60/ten.bin")

    status, got, entry, headers = await fetch(
        client, edge.url + "/max-age-60/ten.bin", {"Range": "bytes=100-199"}
    )

    assert status == 206
    assert got == body[100:200]
    assert headers["Content-Range"] == f"bytes 100-199/{len(body)}"
    assert "hit" in entry
    assert [line[:3] for line in await nginx.log("/max-age-60/ten.bin")] == [
        ["GET", "/max-age-60/ten.bin", "200"]
    ]


async def test_vary_accept_encoding_from_nginx_keeps_one_stored_variant_per_encoding(
    nginx: Nginx, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §4.1: each Accept-Encoding variant is fetched once, then a hit."""
    body = nginx.write("/vary/app.js", b"console.log('pin');\n" * 50)
    edge = await start_edge(nginx.url)
    url = edge.url + "/vary/app.js"
    no_encoding = ("Accept-Encoding",)
    gzip = {"Accept-Encoding": "gzip"}

    plain1 = await fetch(client, url, skip=no_encoding)
    gzip1 = await fetch(client, url, gzip)
    plain2 = await fetch(client, url, skip=no_encoding)
    gzip2 = await fetch(client, url, gzip)

    assert all(r[0] == 200 and r[1] == body for r in (plain1, gzip1, plain2, gzip2))
    assert plain1[3]["Vary"] == "Accept-Encoding"
    assert plain1[2][1:] == ["fwd=miss", "stored"]
    assert gzip1[2][1:] == ["fwd=vary-miss", "stored"]
    assert "hit" in plain2[2]
    assert "hit" in gzip2[2]
    assert len(await nginx.log("/vary/app.js")) == 2
