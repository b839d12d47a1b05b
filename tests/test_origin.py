"""The sample origin, served for real on a loopback port and asked with aiohttp's client.

One behaviour per test; faults are scripted over HTTP as the edge tests do.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from email.utils import formatdate
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from pinedge.core.cli import main
from pinedge.core.config import ConfigError, load
from pinedge.origin import OriginConfig, start

PHOTOS = Path(__file__).resolve().parent.parent / "origin" / "photos"
HORSE = "/img/horse.png"
WIDTHS = (236, 474, 736, 1200)


@pytest.fixture
async def origin() -> AsyncIterator[str]:
    runner: web.AppRunner = await start(OriginConfig(listen="127.0.0.1:0"))
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def get(
    client: aiohttp.ClientSession, url: str, **headers: str
) -> tuple[int, CIMultiDict[str], bytes]:
    async with client.get(url, headers=headers) as response:
        return response.status, response.headers.copy(), await response.read()


async def set_faults(client: aiohttp.ClientSession, origin: str, **faults: object) -> None:
    async with client.post(f"{origin}/_origin/faults", json=faults) as response:
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
    src = re.search(r'src="(/img/[^"?]+)\?w=236"', first).group(1)
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
    css = re.search(r'href="(/static/app\.css\?v=\w+)"', page.decode()).group(1)
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


async def test_stats_count_per_path_and_url_and_reset(origin, client):
    await get(client, f"{origin}{HORSE}?w=236")
    await get(client, f"{origin}{HORSE}?w=474")
    await get(client, f"{origin}/api/pins")
    async with client.get(f"{origin}/_origin/stats") as response:
        assert response.headers["Cache-Control"] == "no-store"
        stats = await response.json()
    assert stats["total"] == 3
    assert stats["paths"] == {HORSE: 2, "/api/pins": 1}
    assert stats["urls"][f"{HORSE}?w=236"] == 1 and stats["urls"][f"{HORSE}?w=474"] == 1
    async with client.delete(f"{origin}/_origin/stats") as response:
        assert response.status == 200
    async with client.get(f"{origin}/_origin/stats") as response:
        assert await response.json() == {"total": 0, "paths": {}, "urls": {}}


# faults


async def test_latency_fault_delays_the_answer(origin, client):
    await set_faults(client, origin, latency=0.3)
    started = time.monotonic()
    status, _, _ = await get(client, f"{origin}/api/pins/1")
    assert status == 200 and time.monotonic() - started >= 0.3


async def test_error_rate_one_always_gives_the_error_status(origin, client):
    await set_faults(client, origin, error_rate=1, error_status=502)
    for _ in range(3):
        status, headers, _ = await get(client, f"{origin}{HORSE}")
        assert status == 502 and headers["Cache-Control"] == "no-store"


async def test_error_rate_half_errs_every_other_request(origin, client):
    await set_faults(client, origin, error_rate=0.5)
    statuses = [(await get(client, f"{origin}/pin/1"))[0] for _ in range(4)]
    assert statuses == [200, 503, 200, 503]


async def test_down_fault_drops_the_connection_without_a_response(origin, client):
    await set_faults(client, origin, down=True)
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(client, f"{origin}/")
    async with client.get(f"{origin}/_origin/faults") as response:
        assert (await response.json())["down"] is True


async def test_truncate_fault_cuts_the_body_short(origin, client):
    await set_faults(client, origin, truncate=True)
    with pytest.raises(aiohttp.ClientPayloadError):
        await get(client, f"{origin}{HORSE}")


async def test_fault_prefix_limits_faults_to_matching_paths(origin, client):
    await set_faults(client, origin, error_rate=1, prefix="/img/")
    assert (await get(client, f"{origin}{HORSE}"))[0] == 503
    assert (await get(client, f"{origin}/api/pins/1"))[0] == 200


async def test_faults_are_cleared_by_delete(origin, client):
    await set_faults(client, origin, error_rate=1)
    async with client.delete(f"{origin}/_origin/faults") as response:
        assert (await response.json())["error_rate"] == 0
    assert (await get(client, f"{origin}/"))[0] == 200


@pytest.mark.parametrize(
    "body",
    [b'{"latency": "slow"}', b'{"colour": 1}', b'{"error_rate": 2}', b"[1]", b"{not json"],
)
async def test_bad_fault_json_gets_400_with_a_reason(origin, client, body):
    async with client.post(f"{origin}/_origin/faults", data=body) as response:
        assert response.status == 400
        assert (await response.json())["reason"]


async def test_faults_never_apply_to_origin_control_paths(origin, client):
    await set_faults(client, origin, down=True)
    async with client.delete(f"{origin}/_origin/faults") as response:
        assert response.status == 200


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


def test_origin_command_serves_until_sigterm_then_exits_0():
    command = [sys.executable, "-m", "pinedge", "origin", "--listen", "127.0.0.1:0"]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as process:
        try:
            line = process.stderr.readline()
            assert "origin listening on http://127.0.0.1:" in line
            port = int(line.rsplit(":", 1)[1])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/pins/1") as reply:
                assert reply.status == 200
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()


def test_origin_serves_without_pillow():
    code = (
        "import sys; sys.modules['PIL'] = None\n"
        "from pinedge.origin import OriginConfig, create_app\n"
        "app = create_app(OriginConfig())\n"
        "assert 'PIL' not in [m.split('.')[0] for m in sys.modules if sys.modules[m]]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
