"""The sample origin, served for real on loopback ports and asked with aiohttp's client.

One behaviour per test; faults are scripted over HTTP on the origin's control
listener, as the edge tests do.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from email.utils import formatdate

import aiohttp
import pytest
from multidict import CIMultiDict
from support import PHOTOS
from yarl import URL

from pinedge.core.cli import main
from pinedge.core.config import ConfigError, load
from pinedge.origin import OriginConfig, RunningOrigin, start

HORSE = "/img/horse.png"
WIDTHS = (236, 474, 736, 1200)


@pytest.fixture
async def running() -> AsyncIterator[RunningOrigin]:
    origin = await start(OriginConfig(listen="127.0.0.1:0", admin="127.0.0.1:0"))
    yield origin
    await origin.cleanup()


@pytest.fixture
def origin(running: RunningOrigin) -> str:
    """The public listener's URL."""
    return running.url


@pytest.fixture
def control(running: RunningOrigin) -> str:
    """The control listener's URL (`/_origin/stats`, `/_origin/faults`)."""
    return running.admin_url


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def get(
    client: aiohttp.ClientSession, url: str, **headers: str
) -> tuple[int, CIMultiDict[str], bytes]:
    async with client.get(url, headers=headers) as response:
        return response.status, response.headers.copy(), await response.read()


async def set_faults(client: aiohttp.ClientSession, control: str, **faults: object) -> None:
    async with client.post(f"{control}/_origin/faults", json=faults) as response:
        assert response.status == 200, await response.text()


# pages


async def test_home_page_lists_pins_with_srcset_at_the_breakpoints_and_lazy_loading(origin, client):
    status, headers, body = await get(client, f"{origin}/")
    html = body.decode()
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    images = re.findall(r"<img [^>]*loading=\"lazy\"[^>]*>", html)
    assert len(images) == 12
    links = re.findall(r'<a href="/pin/(\d+)">', html)
    assert links == [str(n) for n in range(1, 13)]
    first = images[0]
    src = re.search(r'src="(/img/[^"?]+)\?w=236"', first).group(1)  # type: ignore[union-attr]  # there
    expected = ", ".join(f"{src}?w={w} {w}w" for w in WIDTHS)
    assert f'srcset="{expected}"' in first
    assert 'sizes="(max-width: 600px) 50vw, 236px"' in first
    assert 'width="236"' in first and re.search(r'height="\d+"', first)
    assert 'alt="' in first


async def test_home_page_scales_image_height_to_236_wide(origin, client):
    _, _, body = await get(client, f"{origin}/")
    # The_Poppet.jpg is 3996×2140: 2140 × 236 / 3996 = 126.4
    assert re.search(
        r'src="/img/The_Poppet.jpg\?w=236"[^>]*width="236" height="126"', body.decode()
    )


async def test_home_page_links_to_the_next_page_and_back(origin, client):
    _, _, first = await get(client, f"{origin}/")
    assert 'rel="next" href="/?page=2"' in first.decode()
    status, headers, second = await get(client, f"{origin}/?page=2")
    assert status == 200
    assert 'rel="prev" href="/"' in second.decode()
    assert "page-2" in headers["Surrogate-Key"].split()


async def test_home_page_past_the_end_is_404_and_a_bad_page_is_400(origin, client):
    assert (await get(client, f"{origin}/?page=99"))[0] == 404
    assert (await get(client, f"{origin}/?page=zero"))[0] == 400


async def test_pin_page_shows_the_photo_credit_board_and_user(origin, client):
    status, headers, body = await get(client, f"{origin}/pin/1")
    html = body.decode()
    assert status == 200
    assert headers["Cache-Control"] == "public, max-age=60"
    assert "ETag" in headers and "Last-Modified" in headers
    assert headers["Surrogate-Key"].split()[1:] == ["pin-1", "board-home", "user-bram"]
    assert 'srcset="/img/The_Poppet.jpg?w=236 236w' in html
    assert "Licence: CC BY-SA" in html and "Batternut" in html
    assert 'href="/board/home"' in html and 'href="/user/bram"' in html


async def test_unknown_pin_gets_the_404_page(origin, client):
    status, headers, body = await get(client, f"{origin}/pin/9999")
    assert status == 404
    assert headers["Content-Type"].startswith("text/html")
    assert b"Not found" in body


async def test_board_and_user_pages_list_their_pins(origin, client):
    status, headers, body = await get(client, f"{origin}/board/science")
    assert status == 200 and "board-science" in headers["Surrogate-Key"].split()
    assert body.count(b'class="pin"') == 8
    status, _, body = await get(client, f"{origin}/user/ada")
    assert status == 200 and b"Science &amp; space" in body


# API


async def test_api_paginates_pins_with_next_links(origin, client):
    async with client.get(f"{origin}/api/pins?page=2&per_page=5") as response:
        document = await response.json()
        assert response.headers["Cache-Control"] == (
            "public, max-age=10, stale-while-revalidate=30"
        )
        assert response.headers["ETag"].startswith('"')
    assert [item["id"] for item in document["items"]] == [6, 7, 8, 9, 10]
    assert document["page"] == 2 and document["per_page"] == 5 and document["total"] == 36
    assert document["next"] == "/api/pins?page=3&per_page=5"
    async with client.get(f"{origin}/api/pins?page=8&per_page=5") as response:
        last = await response.json()
    assert [item["id"] for item in last["items"]] == [36] and last["next"] is None


async def test_api_caps_per_page(origin, client):
    async with client.get(f"{origin}/api/pins?per_page=1000") as response:
        document = await response.json()
    assert document["per_page"] == 50 and len(document["items"]) == 36


@pytest.mark.parametrize("query", ["page=0", "page=abc", "per_page=-3", "page=1.5", "per_page="])
async def test_api_bad_params_get_400_with_a_reason(origin, client, query):
    async with client.get(f"{origin}/api/pins?{query}") as response:
        assert response.status == 400
        assert response.headers["Cache-Control"] == "no-store"
        assert "must be a whole number" in (await response.json())["reason"]


async def test_api_pin_item_is_tagged_and_unknown_pin_is_404_json(origin, client):
    async with client.get(f"{origin}/api/pins/3") as response:
        pin = await response.json()
        keys = response.headers["Surrogate-Key"].split()
    assert pin["id"] == 3 and pin["photo"]["url"].startswith("/img/")
    assert {"pin-3", f"board-{pin['board']['id']}", f"user-{pin['user']['id']}"} <= set(keys)
    async with client.get(f"{origin}/api/pins/77") as response:
        assert response.status == 404 and "reason" in await response.json()


async def test_like_post_increments_the_count_shown_by_the_api(origin, client):
    for expected in (1, 2):
        async with client.post(f"{origin}/api/pins/5/likes") as response:
            assert response.status == 200
            assert response.headers["Content-Location"] == "/api/pins/5"
            assert response.headers["Cache-Control"] == "no-store"
            assert (await response.json())["likes"] == expected
    async with client.get(f"{origin}/api/pins/5") as response:
        assert (await response.json())["likes"] == 2


async def test_a_like_changes_the_api_etag(origin, client):
    _, before, _ = await get(client, f"{origin}/api/pins/5")
    async with client.post(f"{origin}/api/pins/5/likes"):
        pass
    status, after, _ = await get(
        client, f"{origin}/api/pins/5", **{"If-None-Match": before["ETag"]}
    )
    assert status == 200 and after["ETag"] != before["ETag"]


# files and caching headers


async def test_image_is_immutable_with_strong_etag_and_surrogate_key(origin, client):
    status, headers, body = await get(client, f"{origin}{HORSE}?w=236")
    assert status == 200
    assert body == (PHOTOS / "horse.png").read_bytes()
    assert headers["Content-Type"] == "image/png"
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert re.fullmatch(r'"[0-9a-f]{32}"', headers["ETag"])
    assert "Last-Modified" in headers and "Date" in headers
    assert headers["Surrogate-Key"].split() == ["img", "photo-horse"]
    assert headers["Accept-Ranges"] == "bytes"


async def test_static_files_are_long_lived_when_versioned(origin, client):
    _, _, page = await get(client, f"{origin}/")
    css = re.search(r'href="(/static/app\.css\?v=\w+)"', page.decode()).group(1)  # type: ignore[union-attr]  # there
    status, headers, body = await get(client, origin + css)
    assert status == 200 and headers["Content-Type"] == "text/css; charset=utf-8"
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert b".grid" in body
    status, headers, _ = await get(client, f"{origin}/static/app.js")
    assert status == 200 and headers["Cache-Control"] == "public, max-age=86400"
    status, headers, _ = await get(client, f"{origin}/favicon.ico")
    assert status == 200 and headers["Content-Type"] == "image/vnd.microsoft.icon"


async def test_if_none_match_gets_304_with_validators_and_no_body(origin, client):
    _, first, _ = await get(client, f"{origin}{HORSE}")
    status, headers, body = await get(
        client, f"{origin}{HORSE}", **{"If-None-Match": f'"nope", W/{first["ETag"]}'}
    )
    assert status == 304 and body == b""
    for name in ("ETag", "Cache-Control", "Date", "Last-Modified", "Surrogate-Key"):
        assert name in headers, name
    assert (await get(client, f"{origin}/pin/2", **{"If-None-Match": "*"}))[0] == 304


async def test_if_modified_since_gets_304_for_an_unchanged_page(origin, client):
    _, first, _ = await get(client, f"{origin}/pin/2")
    status, headers, _ = await get(
        client, f"{origin}/pin/2", **{"If-Modified-Since": first["Last-Modified"]}
    )
    assert status == 304 and headers["ETag"] == first["ETag"]
    older = formatdate(time.time() - 10 * 365 * 86400, usegmt=True)
    assert (await get(client, f"{origin}/pin/2", **{"If-Modified-Since": older}))[0] == 200


async def test_if_none_match_takes_precedence_over_if_modified_since(origin, client):
    _, first, _ = await get(client, f"{origin}{HORSE}")
    status, _, _ = await get(
        client,
        f"{origin}{HORSE}",
        **{"If-None-Match": '"other"', "If-Modified-Since": first["Last-Modified"]},
    )
    assert status == 200


async def test_range_gets_206_with_exactly_those_bytes(origin, client):
    data = (PHOTOS / "horse.png").read_bytes()
    status, headers, body = await get(client, f"{origin}{HORSE}", Range="bytes=100-199")
    assert status == 206 and body == data[100:200]
    assert headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    status, _, body = await get(client, f"{origin}{HORSE}", Range="bytes=-10")
    assert status == 206 and body == data[-10:]


async def test_unsatisfiable_range_gets_416_with_the_size(origin, client):
    size = (PHOTOS / "horse.png").stat().st_size
    status, headers, _ = await get(client, f"{origin}{HORSE}", Range=f"bytes={size}-")
    assert status == 416 and headers["Content-Range"] == f"bytes */{size}"


async def test_if_range_with_another_etag_gets_the_whole_200(origin, client):
    data = (PHOTOS / "horse.png").read_bytes()
    status, _, body = await get(
        client, f"{origin}{HORSE}", Range="bytes=0-9", **{"If-Range": '"stale"'}
    )
    assert status == 200 and body == data
    _, first, _ = await get(client, f"{origin}{HORSE}")
    status, _, body = await get(
        client, f"{origin}{HORSE}", Range="bytes=0-9", **{"If-Range": first["ETag"]}
    )
    assert status == 206 and body == data[:10]


# counters


async def test_stats_count_per_path_and_url_and_reset(origin, control, client):
    await get(client, f"{origin}{HORSE}?w=236")
    await get(client, f"{origin}{HORSE}?w=474")
    await get(client, f"{origin}/api/pins")
    async with client.get(f"{control}/_origin/stats") as response:
        assert response.headers["Cache-Control"] == "no-store"
        stats = await response.json()
    assert stats["total"] == 3
    assert stats["paths"] == {HORSE: 2, "/api/pins": 1}
    assert stats["urls"][f"{HORSE}?w=236"] == 1 and stats["urls"][f"{HORSE}?w=474"] == 1
    async with client.delete(f"{control}/_origin/stats") as response:
        assert response.status == 200
    async with client.get(f"{control}/_origin/stats") as response:
        assert await response.json() == {"total": 0, "paths": {}, "urls": {}}


# faults


async def test_latency_fault_delays_the_answer(origin, control, client):
    await set_faults(client, control, latency=0.3)
    started = time.monotonic()
    status, _, _ = await get(client, f"{origin}/api/pins/1")
    assert status == 200 and time.monotonic() - started >= 0.3


async def test_error_rate_one_always_gives_the_error_status(origin, control, client):
    await set_faults(client, control, error_rate=1, error_status=502)
    for _ in range(3):
        status, headers, _ = await get(client, f"{origin}{HORSE}")
        assert status == 502 and headers["Cache-Control"] == "no-store"


async def test_error_rate_half_errs_every_other_request(origin, control, client):
    await set_faults(client, control, error_rate=0.5)
    statuses = [(await get(client, f"{origin}/pin/1"))[0] for _ in range(4)]
    assert statuses == [200, 503, 200, 503]


async def test_down_fault_drops_the_connection_without_a_response(origin, control, client):
    await set_faults(client, control, down=True)
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(client, f"{origin}/")
    async with client.get(f"{control}/_origin/faults") as response:
        assert (await response.json())["down"] is True


async def test_truncate_fault_cuts_the_body_short(origin, control, client):
    await set_faults(client, control, truncate=True)
    with pytest.raises(aiohttp.ClientPayloadError):
        await get(client, f"{origin}{HORSE}")


async def test_fault_prefix_limits_faults_to_matching_paths(origin, control, client):
    await set_faults(client, control, error_rate=1, prefix="/img/")
    assert (await get(client, f"{origin}{HORSE}"))[0] == 503
    assert (await get(client, f"{origin}/api/pins/1"))[0] == 200


async def test_faults_are_cleared_by_delete(origin, control, client):
    await set_faults(client, control, error_rate=1)
    async with client.delete(f"{control}/_origin/faults") as response:
        assert (await response.json())["error_rate"] == 0
    assert (await get(client, f"{origin}/"))[0] == 200


@pytest.mark.parametrize(
    "body",
    [
        b'{"latency": "slow"}',
        b'{"colour": 1}',
        b'{"error_rate": 2}',
        b"[1]",
        b"{not json",
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deeply-nested"),
    ],
)
async def test_bad_fault_json_gets_400_with_a_reason(control, client, body):
    async with client.post(f"{control}/_origin/faults", data=body) as response:
        assert response.status == 400
        assert (await response.json())["reason"]


async def test_faults_never_apply_to_the_control_listener(control, client):
    await set_faults(client, control, down=True)
    async with client.delete(f"{control}/_origin/faults") as response:
        assert response.status == 200


# the control listener, apart from the public one

CONTROL_REQUESTS = [
    ("POST", "/_origin/faults"),
    ("DELETE", "/_origin/faults"),
    ("GET", "/_origin/faults"),
    ("DELETE", "/_origin/stats"),
    ("GET", "/_origin/stats"),
]
DOWN = {"down": True}
TOKEN = "origin-control-token"


async def faults_and_stats(
    client: aiohttp.ClientSession, control: str, **headers: str
) -> tuple[dict, dict]:
    """The control listener's fault set and counters."""
    async with client.get(f"{control}/_origin/faults", headers=headers) as response:
        faults = await response.json()
    async with client.get(f"{control}/_origin/stats", headers=headers) as response:
        stats = await response.json()
    return faults, stats


async def raw_request(
    url: str, method: str, path: str, authorization: bytes | None
) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection, the Authorization value sent byte for byte."""
    target = URL(url)
    body = json.dumps(DOWN).encode()
    head = f"{method} {path} HTTP/1.1\r\nHost: {target.host}\r\nConnection: close\r\n".encode()
    if authorization is not None:
        head += b"Authorization: " + authorization + b"\r\n"
    head += b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    reader, writer = await asyncio.open_connection(target.host, target.port)
    try:
        writer.write(head + body)
        async with asyncio.timeout(10):
            answer = await reader.read()
    finally:
        writer.close()
    top, _, content = answer.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ", 2)[1]), headers, content


async def test_the_public_listener_answers_control_paths_with_its_404_page_and_counts_them(
    origin, control, client
):
    await get(client, f"{origin}/api/pins/1")
    for method, path in CONTROL_REQUESTS:
        body = DOWN if method == "POST" else None
        async with client.request(method, origin + path, json=body) as response:
            assert response.status == 404, (method, path)
            assert response.headers["Content-Type"].startswith("text/html")
            assert b"Not found" in await response.read()
    faults, stats = await faults_and_stats(client, control)
    assert faults["down"] is False
    assert stats["paths"] == {"/api/pins/1": 1, "/_origin/faults": 3, "/_origin/stats": 2}
    assert (await get(client, f"{origin}/api/pins/1"))[0] == 200


async def test_an_edge_client_cannot_reach_the_origin_control_endpoints(
    running, client, start_edge
):
    edge = await start_edge(running.url)
    assert (await get(client, f"{edge.url}/api/pins/1"))[0] == 200
    before = await faults_and_stats(client, running.admin_url)

    for method, path in CONTROL_REQUESTS:
        body = DOWN if method == "POST" else None
        async with client.request(method, edge.url + path, json=body) as response:
            assert response.status == 404, (method, path)

    faults, stats = await faults_and_stats(client, running.admin_url)
    assert faults == before[0] and faults["down"] is False
    assert stats["paths"]["/api/pins/1"] == 1  # not reset
    assert (await get(client, f"{edge.url}/api/pins/2"))[0] == 200


async def test_faults_set_on_the_control_listener_reach_an_edges_clients(
    running, client, start_edge
):
    edge = await start_edge(running.url)
    await set_faults(client, running.admin_url, error_rate=1, error_status=503)
    async with client.get(f"{edge.url}/api/pins/3") as response:
        assert response.status == 503
    _, stats = await faults_and_stats(client, running.admin_url)
    assert stats["paths"] == {"/api/pins/3": 1}


@pytest.fixture
async def guarded(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RunningOrigin]:
    """An origin whose control listener asks for PINEDGE_ORIGIN_TOKEN."""
    monkeypatch.setenv("PINEDGE_ORIGIN_TOKEN", TOKEN)
    origin = await start(OriginConfig(listen="127.0.0.1:0", admin="127.0.0.1:0"))
    yield origin
    await origin.cleanup()


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="no-token"),
        pytest.param(b"Bearer wrong", id="wrong-token"),
        pytest.param(f"Basic {TOKEN}".encode(), id="not-bearer"),
        pytest.param(b"Bearer \xff\xfe", id="not-utf8"),
    ],
)
async def test_with_a_token_set_the_control_listener_refuses_requests_without_it(
    guarded, client, authorization
):
    for method, path in CONTROL_REQUESTS:
        status, headers, body = await raw_request(guarded.admin_url, method, path, authorization)
        assert status == 401, (method, path)
        assert headers["www-authenticate"].startswith("Bearer ")
        assert "PINEDGE_ORIGIN_TOKEN" in json.loads(body)["reason"]
    assert (await get(client, f"{guarded.url}/api/pins/1"))[0] == 200  # not switched down
    faults, stats = await faults_and_stats(
        client, guarded.admin_url, Authorization=f"Bearer {TOKEN}"
    )
    assert faults["down"] is False and stats["total"] == 1


async def test_with_a_token_set_the_control_listener_serves_requests_that_carry_it(guarded, client):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with client.post(f"{guarded.admin_url}/_origin/faults", json=DOWN, headers=auth) as r:
        assert r.status == 200 and (await r.json())["down"] is True
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(client, f"{guarded.url}/")


# configuration


def test_config_file_values_stand_unless_a_flag_overrides(tmp_path):
    path = tmp_path / "origin.toml"
    path.write_text('listen = "0.0.0.0:9000"\npage_size = 6\n')
    config = load(OriginConfig, path, {"listen": "127.0.0.1:9100", "page_size": None})
    assert config.listen == "127.0.0.1:9100" and config.page_size == 6
    with pytest.raises(ConfigError, match="colour"):
        load(OriginConfig, None, {"colour": "red"})


def test_origin_command_refuses_a_bad_listen_address_with_status_2(capsys):
    assert main(["origin", "--listen", "nowhere"]) == 2
    assert capsys.readouterr().err.startswith("pinedge origin: listen: ")


def test_origin_command_refuses_the_same_address_for_listen_and_admin(capsys):
    assert main(["origin", "--listen", "127.0.0.1:9100", "--admin", "127.0.0.1:9100"]) == 2
    assert "admin must be another address than listen" in capsys.readouterr().err


@pytest.mark.slow
def test_origin_command_serves_until_sigterm_then_exits_0():
    command = [sys.executable, "-m", "pinedge", "origin", "--listen", "127.0.0.1:0"]
    command += ["--admin", "127.0.0.1:0"]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as process:
        assert process.stderr is not None
        try:
            line = process.stderr.readline()
            assert "origin listening on http://127.0.0.1:" in line
            port = int(line.rsplit(":", 1)[1])
            line = process.stderr.readline()
            assert "origin control listening on http://127.0.0.1:" in line
            control = re.search(r"http://127\.0\.0\.1:(\d+)", line).group(0)  # type: ignore[union-attr]  # there
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/pins/1") as reply:
                assert reply.status == 200
            with urllib.request.urlopen(f"{control}/_origin/stats") as reply:
                assert json.loads(reply.read())["paths"] == {"/api/pins/1": 1}
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()


@pytest.mark.slow
def test_origin_serves_without_pillow():
    code = (
        "import sys; sys.modules['PIL'] = None\n"
        "from pinedge.origin import OriginConfig, create_app\n"
        "app = create_app(OriginConfig())\n"
        "assert 'PIL' not in [m.split('.')[0] for m in sys.modules if sys.modules[m]]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
