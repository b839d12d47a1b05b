"""What the edge stores (RFC 9111 §3, §5.2.2; RFC 9213 targeted fields), seen from outside.

Each test scripts the origin, sends real requests through a real edge and looks
at what a client gets (status, headers, body, Cache-Status) and at what reached
the origin (`scripted.hits`).
"""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web
from edge_support import (
    Handler,
    NotStored,
    RunningEdge,
    Scripted,
    StartEdge,
    check_not_stored,
    send,
)


def revalidating(
    etag: str, body: bytes = b"stored", status: int = 200, headers: dict[str, str] | None = None
) -> Handler:
    """An origin handler: 304 when If-None-Match names `etag`, else `status` with `body`."""

    async def handler(request: web.Request) -> web.StreamResponse:
        fields = {"ETag": etag, **(headers or {})}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=fields)
        return web.Response(status=status, body=body, headers=fields)

    return handler


# ── what is stored ───────────────────────────────────────────────────────────


async def test_a_get_200_with_max_age_is_stored_and_the_next_request_is_a_hit(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §3."""
    scripted.reply("/a", b"body", headers={"Cache-Control": "max-age=60"})
    first = await send(client, edge.url + "/a")
    second = await send(client, edge.url + "/a")
    assert first.status == 200
    assert first.cache == {"fwd": "miss", "stored": True}
    assert second.status == 200
    assert second.hit
    assert second.body == b"body"
    assert scripted.hits["/a"] == 1


async def test_a_post_response_is_not_stored(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §3: the request method must be understood as cacheable; POST here is not."""
    scripted.reply("/p", b"posted", headers={"Cache-Control": "max-age=60"})
    first = await send(client, edge.url + "/p", method="POST", data=b"x")
    second = await send(client, edge.url + "/p", method="POST", data=b"x")
    get = await send(client, edge.url + "/p")
    assert first.cache["fwd"] == "method"
    assert second.cache["fwd"] == "method"
    assert get.cache["fwd"] == "miss"
    assert scripted.hits["/p"] == 3


async def test_a_head_request_is_answered_from_a_stored_get(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9110 §9.3.2, RFC 9111 §4: HEAD may be answered from a stored GET response."""
    scripted.reply(
        "/h", b"twelve bytes", headers={"Cache-Control": "max-age=60", "X-Kind": "stored"}
    )
    await send(client, edge.url + "/h")
    head = await send(client, edge.url + "/h", method="HEAD")
    assert head.status == 200
    assert head.hit
    assert head.body == b""
    assert head.headers["X-Kind"] == "stored"
    assert scripted.hits["/h"] == 1


async def test_a_404_with_max_age_is_stored(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §3: any final status with explicit freshness may be stored."""
    scripted.reply("/gone", b"not here", status=404, headers={"Cache-Control": "max-age=60"})
    await send(client, edge.url + "/gone")
    second = await send(client, edge.url + "/gone")
    assert second.status == 404
    assert second.hit
    assert second.body == b"not here"
    assert scripted.hits["/gone"] == 1


async def test_a_301_with_max_age_is_stored(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §3."""
    scripted.reply(
        "/old",
        b"",
        status=301,
        headers={"Cache-Control": "max-age=60", "Location": "/new"},
    )
    await send(client, edge.url + "/old")
    second = await send(client, edge.url + "/old")
    assert second.status == 301
    assert second.hit
    assert second.headers["Location"] == "/new"
    assert scripted.hits["/old"] == 1


async def test_a_200_with_only_an_etag_is_stored_but_revalidated_before_use(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §3, §4.2.2, §4.3: no freshness lifetime (heuristics off), but a validator."""
    scripted.handle("/e", revalidating('"v1"', b"etag only"))
    await send(client, edge.url + "/e")
    second = await send(client, edge.url + "/e")
    assert second.status == 200
    assert second.body == b"etag only"
    assert second.cache["fwd"] == "stale"
    assert second.cache["fwd-status"] == "304"
    assert scripted.last("/e").headers["If-None-Match"] == '"v1"'


async def test_a_private_qualified_field_is_not_served_to_the_next_client(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §5.2.2.7: private="X-User" lets the rest be stored, without that field."""
    scripted.reply(
        "/q",
        b"shared part",
        headers={"Cache-Control": 'private="X-User", max-age=60', "X-User": "alice"},
    )
    first = await send(client, edge.url + "/q")
    second = await send(client, edge.url + "/q")
    assert first.headers["X-User"] == "alice"
    assert second.hit
    assert second.body == b"shared part"
    assert "X-User" not in second.headers
    assert scripted.hits["/q"] == 1


# ── what is not stored ───────────────────────────────────────────────────────


TEN_KIB = bytes(range(256)) * 40
SMALL_STORE = {"max_object_size": "64KiB"}


async def chunked_100_kib(request: web.Request) -> web.StreamResponse:
    """100 KiB in ten chunks, cacheable for a minute: no Content-Length to refuse it by."""
    response = web.StreamResponse(headers={"Cache-Control": "max-age=60"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    for _ in range(10):
        await response.write(TEN_KIB)
    await response.write_eof()
    return response


NOT_STORED = [
    pytest.param(
        NotStored(302, {"Location": "/elsewhere"}, b""),
        id="9111-3-302-without-freshness",  # not heuristically cacheable (RFC 9110 §15.4.3)
    ),
    pytest.param(NotStored(500, {}, b"oops"), id="9111-3-500"),
    pytest.param(
        NotStored(headers={"Cache-Control": "max-age=60, no-store"}, body=b"secret"),
        id="9111-5.2.2.5-no-store",
    ),
    pytest.param(
        NotStored(headers={"Cache-Control": "private, max-age=60"}, body=b"mine"),
        id="9111-5.2.2.7-private",  # a shared cache must not store it
    ),
    pytest.param(
        NotStored(
            headers={"Cache-Control": "max-age=60"},
            body=b"for alice",
            request={"Authorization": "Bearer alice"},
        ),
        id="9111-3.5-authorization",
    ),
    pytest.param(
        NotStored(
            headers={"Cache-Control": "max-age=60", "ETag": '"d1"'},
            body=b"page",
            request={"Cache-Control": "no-store"},
            later={},
        ),
        id="9111-5.2.1.5-request-no-store",
    ),
    pytest.param(
        NotStored(headers={"Cache-Control": "max-age=60", "Vary": "*"}, body=b"star", requests=3),
        id="9111-4.1-vary-star",  # "Vary: *" always fails to match
    ),
    pytest.param(
        NotStored(
            headers={"Cache-Control": "max-age=60", "Set-Cookie": "session=alice"},
            body=b"welcome",
        ),
        id="edge-set-cookie",  # cache_set_cookie = false: one user's cookie never reaches another
    ),
    pytest.param(
        NotStored(headers={"Cache-Control": "max-age=60"}, body=TEN_KIB * 10, settings=SMALL_STORE),
        id="edge-over-max-object-size",  # streamed whole, not stored
    ),
    pytest.param(
        NotStored(body=TEN_KIB * 10, handler=chunked_100_kib, settings=SMALL_STORE),
        id="edge-over-max-object-size-chunked",
    ),
]


@pytest.mark.parametrize("row", NOT_STORED)
async def test_a_response_that_must_not_be_stored_reaches_the_client_from_the_origin_every_time(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession, row: NotStored
) -> None:
    """RFC 9111 §3 and the sections in each row's id; `edge-` rows are the edge's policy."""
    await check_not_stored(row, scripted, start_edge, client)


@pytest.mark.parametrize(
    "cache_control",
    ["public, max-age=60", "s-maxage=60", "must-revalidate, max-age=60"],
    ids=["9111-5.2.2.9-public", "9111-5.2.2.10-s-maxage", "9111-5.2.2.2-must-revalidate"],
)
async def test_an_authorized_response_that_allows_sharing_is_stored(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession, cache_control: str
) -> None:
    """RFC 9111 §3.5: public, s-maxage or must-revalidate let a shared cache store it."""
    scripted.reply("/auth", b"shared", headers={"Cache-Control": cache_control})
    auth = {"Authorization": "Bearer alice"}
    await send(client, edge.url + "/auth", headers=auth)
    second = await send(client, edge.url + "/auth", headers=auth)
    assert second.hit
    assert scripted.hits["/auth"] == 1


async def test_s_maxage_wins_over_max_age_in_this_shared_cache(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §4.2.1, §5.2.2.10."""
    scripted.reply("/s", b"shared", headers={"Cache-Control": "max-age=0, s-maxage=60"})
    await send(client, edge.url + "/s")
    second = await send(client, edge.url + "/s")
    assert second.hit
    assert 50 <= int(second.cache["ttl"]) <= 60
    assert scripted.hits["/s"] == 1


async def test_public_makes_a_response_storable_that_otherwise_is_not(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §3, §5.2.2.9: a 307 without freshness is stored when public; with no
    lifetime it is used only after a 304 revalidation, not refetched in full."""
    scripted.handle(
        "/tmp",
        revalidating('"r1"', b"", 307, {"Cache-Control": "public", "Location": "/x"}),
    )
    await send(client, edge.url + "/tmp")
    second = await send(client, edge.url + "/tmp")
    assert second.status == 307
    assert second.headers["Location"] == "/x"
    assert second.cache["fwd"] == "stale"
    assert second.cache["fwd-status"] == "304"
    assert scripted.last("/tmp").headers["If-None-Match"] == '"r1"'


async def test_a_no_cache_response_is_stored_but_revalidated_on_every_use(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §5.2.2.4: unqualified no-cache."""
    scripted.handle(
        "/nc", revalidating('"n1"', b"checked", headers={"Cache-Control": "no-cache, max-age=60"})
    )
    await send(client, edge.url + "/nc")
    replies = [await send(client, edge.url + "/nc") for _ in range(2)]
    for reply in replies:
        assert reply.status == 200
        assert reply.body == b"checked"
        assert "fwd" in reply.cache
        assert reply.cache["fwd-status"] == "304"
    assert scripted.hits["/nc"] == 3
    assert scripted.last("/nc").headers["If-None-Match"] == '"n1"'


async def test_a_no_cache_qualified_field_is_not_served_from_cache_unvalidated(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §5.2.2.4: no-cache="X-Session" — the rest may be reused, that field may not
    be sent without a successful revalidation."""
    scripted.reply(
        "/qnc",
        b"page",
        headers={
            "Cache-Control": 'no-cache="X-Session", max-age=60',
            "X-Session": "s-123",
            "ETag": '"q1"',
        },
    )
    await send(client, edge.url + "/qnc")
    second = await send(client, edge.url + "/qnc")
    assert second.status == 200
    assert second.body == b"page"
    served_unvalidated = scripted.hits["/qnc"] == 1
    if served_unvalidated:
        assert "X-Session" not in second.headers
    else:
        assert scripted.last("/qnc").headers.get("If-None-Match") == '"q1"'


# ── targeted fields (RFC 9213) and what the client sees ─────────────────────


async def test_cdn_cache_control_wins_over_cache_control(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9213 §2.2: a targeted field replaces Cache-Control for this cache."""
    scripted.reply(
        "/cdn",
        b"edge only",
        headers={"Cache-Control": "no-store", "CDN-Cache-Control": "max-age=60"},
    )
    await send(client, edge.url + "/cdn")
    second = await send(client, edge.url + "/cdn")
    assert second.hit
    assert second.body == b"edge only"
    assert scripted.hits["/cdn"] == 1


@pytest.mark.parametrize("targeted", ['s-maxage="abc"', "max-age=?1", "max-age=1.5", "max-age=-1"])
async def test_a_cdn_cache_control_value_of_the_wrong_type_leaves_cache_control_in_charge(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession, targeted: str
) -> None:
    """RFC 9213 §2.1: a value its directive does not take is not consumed (nor
    coerced), and the invalid field is ignored as if absent: Cache-Control rules."""
    scripted.reply(
        "/typed",
        b"by cache-control",
        headers={"Cache-Control": "max-age=60", "CDN-Cache-Control": targeted},
    )
    first = await send(client, edge.url + "/typed")
    second = await send(client, edge.url + "/typed")
    assert first.cache.get("stored") is True
    assert second.hit
    assert 0 < second.ttl <= 60
    assert second.body == b"by cache-control"
    assert scripted.hits["/typed"] == 1


async def test_cdn_cache_control_is_not_forwarded_to_the_client(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9213 §2.1: the CDN consumes its own targeted field (edge contract)."""
    scripted.reply(
        "/cdn",
        b"edge only",
        headers={"Cache-Control": "no-store", "CDN-Cache-Control": "max-age=60"},
    )
    miss = await send(client, edge.url + "/cdn")
    hit = await send(client, edge.url + "/cdn")
    assert "CDN-Cache-Control" not in miss.headers
    assert "CDN-Cache-Control" not in hit.headers
    assert hit.headers["Cache-Control"] == "no-store"


async def test_surrogate_control_max_age_stores_and_is_stripped_from_the_client_response(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """Edge Architecture Surrogate-Control, treated as a targeted field (RFC 9213)."""
    scripted.reply(
        "/sc",
        b"surrogate",
        headers={"Cache-Control": "no-cache, no-store", "Surrogate-Control": "max-age=60"},
    )
    miss = await send(client, edge.url + "/sc")
    hit = await send(client, edge.url + "/sc")
    assert hit.hit
    assert scripted.hits["/sc"] == 1
    assert "Surrogate-Control" not in miss.headers
    assert "Surrogate-Control" not in hit.headers


async def test_cache_control_is_forwarded_to_the_client_unchanged(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §5.2: Cache-Control is end-to-end; the edge passes it on as the origin sent it."""
    value = "public, max-age=60, stale-while-revalidate=30"
    scripted.reply("/cc", b"x", headers={"Cache-Control": value})
    miss = await send(client, edge.url + "/cc")
    hit = await send(client, edge.url + "/cc")
    assert hit.hit
    assert miss.headers.getall("Cache-Control") == [value]
    assert hit.headers.getall("Cache-Control") == [value]
