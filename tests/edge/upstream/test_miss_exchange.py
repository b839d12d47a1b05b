"""A miss sent on a kept-alive upstream connection (misspath.py's exchange, read by
upstream/whole.py when the answer is the common one): what the client gets, what
is stored and which connection carries the next request, when the origin's
answer is plain and when it is not (an interim response, chunked framing, a
body that comes after its head, a close, bytes after the response, no answer,
an idle connection the origin closed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from edge_support import comparable, send
from recorder import Received, RecordingOrigin, response

NODE = "pinedge-test"
STORABLE = {"Cache-Control": "max-age=60"}


@pytest.fixture
async def recording() -> AsyncIterator[Callable[..., Awaitable[RecordingOrigin]]]:
    origins: list[RecordingOrigin] = []

    async def start(answer: Callable[[Received], bytes]) -> RecordingOrigin:
        origin = await RecordingOrigin(answer).start()
        origins.append(origin)
        return origin

    yield start
    for origin in origins:
        await origin.stop()


def by_target(answers: dict[str, bytes]) -> Callable[[Received], bytes]:
    """The origin's answer for each target; the default storable one for the rest."""

    def answer(received: Received) -> bytes:
        found = answers.get(received.target)
        if found is not None:
            return found
        return response(body=received.target.encode(), headers=STORABLE)

    return answer


async def test_a_second_miss_goes_on_the_kept_connection_and_is_stored(
    client, start_edge, recording
):
    origin = await recording(by_target({}))
    edge = await start_edge(origin.url)
    first = await send(client, edge.url + "/a")
    second = await send(client, edge.url + "/b")
    again = await send(client, edge.url + "/b")
    assert (first.status, first.body, second.status, second.body) == (200, b"/a", 200, b"/b")
    assert second.headers["Cache-Status"].startswith(f"{NODE}; fwd=miss")
    assert second.headers["Content-Length"] == "2"
    assert again.body == b"/b" and "hit" in again.headers["Cache-Status"]
    assert origin.targets() == ["/a", "/b"]
    assert [received.connection for received in origin.requests] == [1, 1]


async def test_what_the_origin_receives_for_a_miss_on_a_kept_connection_is_what_it_got_first(
    client, start_edge, recording
):
    """The request head is prepared once per shape of the client's fields: the
    second miss's fields are the first's, with its own target."""
    origin = await recording(by_target({}))
    edge = await start_edge(origin.url)
    headers = {"X-Trace": "t-1", "Accept": "image/avif"}
    await send(client, edge.url + "/one?x=1", headers)
    await send(client, edge.url + "/two?y=2", headers)
    first, second = origin.requests
    assert (first.target, second.target) == ("/one?x=1", "/two?y=2")
    assert first.headers == second.headers
    assert second.header("X-Trace") == "t-1" and second.header("Via")
    assert second.header("X-Forwarded-For") == "127.0.0.1"


async def test_an_interim_response_on_a_kept_connection_reaches_the_client_first(
    start_edge, recording
):
    hints = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    origin = await recording(
        by_target({"/hinted": response(body=b"page", headers=STORABLE, interim=[hints])})
    )
    edge = await start_edge(origin.url)
    port = int(edge.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for target in ("/warm", "/hinted"):
            writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            if target == "/hinted":
                assert head.startswith(b"HTTP/1.1 103 ")
                assert b"rel=preload" in head
                head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
        assert body == b"page"
    finally:
        writer.close()


async def test_a_chunked_answer_on_a_kept_connection_is_read_whole_and_stored(
    client, start_edge, recording
):
    chunked = (
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
    )
    origin = await recording(by_target({"/chunked": chunked}))
    edge = await start_edge(origin.url)
    await send(client, edge.url + "/warm")
    reply = await send(client, edge.url + "/chunked")
    again = await send(client, edge.url + "/chunked")
    assert (reply.status, reply.body, again.body) == (200, b"abcdefg", b"abcdefg")
    assert "hit" in again.headers["Cache-Status"]
    assert origin.targets() == ["/warm", "/chunked"]


async def test_a_body_that_comes_after_its_head_reaches_the_client_whole(
    client, start_edge, raw_origin
):
    """The head is passed on as soon as it comes; the body follows as it arrives."""
    body = bytes(range(256)) * 40

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ")[1]
            if target == b"/late":
                writer.write(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\n")
                writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body[:100])
                await writer.drain()
                await asyncio.sleep(0.2)
                writer.write(body[100:])
            else:
                writer.write(response(body=target, headers=STORABLE))
            await writer.drain()

    edge = await start_edge(await raw_origin(answer))
    await send(client, edge.url + "/warm")
    reply = await send(client, edge.url + "/late")
    again = await send(client, edge.url + "/late")
    assert (reply.status, reply.body) == (200, body)
    assert again.body == body and "hit" in again.headers["Cache-Status"]


@pytest.mark.parametrize(
    "ending",
    [
        pytest.param(b"Connection: close\r\n", id="connection-close"),
        pytest.param(b"", id="bytes-after-the-response"),
    ],
)
async def test_a_connection_that_cannot_carry_another_request_is_not_used_again(
    client, start_edge, recording, ending
):
    answer = b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\n" + ending
    answer += b"Content-Length: 4\r\n\r\nlast"
    if not ending:
        answer += b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra"
    origin = await recording(by_target({"/last": answer}))
    edge = await start_edge(origin.url)
    await send(client, edge.url + "/warm")
    last = await send(client, edge.url + "/last")
    after = await send(client, edge.url + "/after")
    assert (last.status, last.body, after.status, after.body) == (200, b"last", 200, b"/after")
    assert [received.connection for received in origin.requests] == [1, 1, 2]


async def test_a_miss_the_origin_will_not_let_be_stored_is_passed_on_and_asked_again(
    client, start_edge, recording
):
    private = response(body=b"mine", headers={"Cache-Control": "no-store"})
    origin = await recording(by_target({"/private": private}))
    edge = await start_edge(origin.url)
    await send(client, edge.url + "/warm")
    replies = [await send(client, edge.url + "/private") for _ in range(2)]
    assert [(reply.status, reply.body) for reply in replies] == [(200, b"mine")] * 2
    assert origin.targets() == ["/warm", "/private", "/private"]


async def test_a_response_with_vary_on_a_kept_connection_is_stored_as_a_variant(
    client, start_edge, recording
):
    varied = response(body=b"fr", headers={**STORABLE, "Vary": "Accept-Language"})
    origin = await recording(by_target({"/greeting": varied}))
    edge = await start_edge(origin.url)
    await send(client, edge.url + "/warm")
    french = {"Accept-Language": "fr"}
    first = await send(client, edge.url + "/greeting", french)
    again = await send(client, edge.url + "/greeting", french)
    other = await send(client, edge.url + "/greeting", {"Accept-Language": "de"})
    assert (first.body, again.body) == (b"fr", b"fr")
    assert "hit" in again.headers["Cache-Status"]
    assert "hit" not in other.headers["Cache-Status"]
    assert origin.targets() == ["/warm", "/greeting", "/greeting"]


async def test_a_miss_on_an_idle_connection_the_origin_closed_is_sent_again_on_a_new_one(
    client, start_edge, raw_origin
):
    """RFC 9112 §9.3.1: the origin closes its end of an idle connection as the next
    request is on its way; a GET is sent again, once, on a new connection."""
    connections = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        mine = connections
        head = await reader.readuntil(b"\r\n\r\n")
        writer.write(response(body=head.split(b" ")[1], headers=STORABLE))
        await writer.drain()
        if mine == 1:
            await reader.readuntil(b"\r\n\r\n")  # the next request: closed unanswered
            writer.close()
            return
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            writer.write(response(body=head.split(b" ")[1], headers=STORABLE))
            await writer.drain()

    edge = await start_edge(await raw_origin(answer))
    first = await send(client, edge.url + "/first")
    second = await send(client, edge.url + "/second")
    assert (first.status, second.status, second.body) == (200, 200, b"/second")
    assert connections == 2
    metrics = await edge.metrics(client)
    assert "pinedge_upstream_errors_total{" not in metrics


async def test_a_miss_on_a_kept_connection_the_origin_never_answers_gives_504(
    client, start_edge, raw_origin
):
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        writer.write(response(body=head.split(b" ")[1], headers=STORABLE))
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(30)

    edge = await start_edge(await raw_origin(answer), first_byte_timeout="0.3s")
    await send(client, edge.url + "/first")
    silent = await send(client, edge.url + "/silent")
    assert silent.status == 504
    assert silent.headers["Cache-Status"].startswith(f"{NODE}; fwd=miss")
    metrics = await edge.metrics(client)
    assert 'kind="upstream-timeout"' in metrics


async def test_a_miss_the_store_cannot_write_is_answered_and_fetched_again_later(
    client, start_edge, recording
):
    origin = await recording(by_target({}))
    edge = await start_edge(origin.url)
    await send(client, edge.url + "/warm")
    owner = edge.server.owner
    assert owner is not None
    # Every object's file, and the next segment, fail to open.
    folders = [owner.root / "objects", owner.root / "segments"]
    for folder in folders:
        folder.rename(folder.with_name(folder.name + "-aside"))
        folder.write_text("not a directory")
    edge.server.store.writer.seal()  # the segment "/warm" went to is finished
    try:
        first = await send(client, edge.url + "/unwritable")
        second = await send(client, edge.url + "/unwritable")
        metrics = await edge.metrics(client)
    finally:
        for folder in folders:
            folder.unlink()
            folder.with_name(folder.name + "-aside").rename(folder)
    assert [(first.status, first.body), (second.status, second.body)] == [
        (200, b"/unwritable"),
        (200, b"/unwritable"),
    ]
    assert "hit" not in second.headers["Cache-Status"]
    assert origin.targets() == ["/warm", "/unwritable", "/unwritable"]
    assert 'pinedge_responses_not_stored_total{reason="store-error"} 2' in metrics
    after = await send(client, edge.url + "/stored-again")
    again = await send(client, edge.url + "/stored-again")
    assert after.status == 200 and "hit" in again.headers["Cache-Status"]


async def test_a_head_that_arrives_in_pieces_is_read_whole_and_stored(
    client, start_edge, raw_origin
):
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            whole = response(body=head.split(b" ")[1], headers=STORABLE)
            for start in range(0, len(whole), 7):
                writer.write(whole[start : start + 7])
                await writer.drain()
                await asyncio.sleep(0.005)

    edge = await start_edge(await raw_origin(answer))
    await send(client, edge.url + "/warm")
    reply = await send(client, edge.url + "/in-pieces")
    again = await send(client, edge.url + "/in-pieces")
    assert (reply.status, reply.body, again.body) == (200, b"/in-pieces", b"/in-pieces")
    assert "hit" in again.headers["Cache-Status"]


async def test_the_first_hit_on_what_a_miss_stored_sends_what_the_miss_sent(
    client, start_edge, recording
):
    """The miss path stores without making the response's entry or keeping a copy;
    the first hit reads it back, and sends the fields the miss sent (but our
    Cache-Status entry and Age), with the freshness the origin gave and the tags
    kept from clients."""
    fields = {
        **STORABLE,
        "ETag": '"b-1"',
        "Last-Modified": "Sat, 05 Dec 2026 10:00:00 GMT",
        "Content-Type": "application/octet-stream",
        "Surrogate-Key": "pins boards",
        "X-Origin": "one",
    }
    origin = await recording(by_target({"/b": response(body=b"bee", headers=fields)}))
    edge = await start_edge(origin.url)
    await send(client, edge.url + "/a")  # after it, the connection is kept
    miss = await send(client, edge.url + "/b")
    local = edge.server.store.local
    # With the miss path on, no copy is kept until a request asks again; without,
    # the entry was made and kept.
    assert (local["http://127.0.0.1/b"].entries is None) == edge.server.config.fast_path
    hit = await send(client, edge.url + "/b")
    assert local["http://127.0.0.1/b"].entries is not None
    assert miss.cache == {"fwd": "miss", "stored": True}
    assert hit.hit and hit.body == miss.body == b"bee"
    assert 55 <= hit.ttl <= 60 and hit.headers["Age"] in ("0", "1")

    def shown(reply):
        return {field for field in comparable(reply.headers) if field[0] != "cache-status"}

    assert shown(hit) == shown(miss)
    assert ("etag", '"b-1"') in shown(hit) and ("x-origin", "one") in shown(hit)
    assert "Surrogate-Key" not in hit.headers and "Surrogate-Key" not in miss.headers
    assert origin.targets() == ["/a", "/b"]
