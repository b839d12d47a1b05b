import pytest
from multidict import CIMultiDict

from pinedge.edge.http.headers import HOP_BY_HOP, connection_nominated, with_via, without_hop_by_hop


def test_hop_by_hop_names() -> None:
    assert (
        frozenset(
            {
                "connection",
                "keep-alive",
                "proxy-connection",
                "te",
                "transfer-encoding",
                "upgrade",
                "proxy-authenticate",
                "proxy-authorization",
                "trailer",
            }
        )
        == HOP_BY_HOP
    )


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param([], frozenset(), id="9110-7.6.1-no-connection"),
        pytest.param([("Connection", "close")], {"close"}, id="9110-7.6.1-single"),
        pytest.param(
            [("Connection", "Keep-Alive, X-Trace"), ("connection", " x-debug ,, ")],
            {"keep-alive", "x-trace", "x-debug"},
            id="9110-7.6.1-all-lines-lower-case-empty-members-skipped",
        ),
    ],
)
def test_connection_nominated(fields: list[tuple[str, str]], expected: set[str]) -> None:
    assert connection_nominated(CIMultiDict(fields)) == frozenset(expected)


@pytest.mark.parametrize(
    ("fields", "also", "expected"),
    [
        pytest.param(
            [
                ("Host", "a"),
                ("Connection", "keep-alive"),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Connection", "keep-alive"),
                ("TE", "trailers"),
                ("Transfer-Encoding", "chunked"),
                ("Upgrade", "h2c"),
                ("Proxy-Authenticate", "Basic"),
                ("Proxy-Authorization", "Basic x"),
                ("Trailer", "X-Sum"),
                ("Accept", "*/*"),
            ],
            (),
            [("Host", "a"), ("Accept", "*/*")],
            id="9110-7.6.1-standard-hop-by-hop-removed",
        ),
        pytest.param(
            [("Connection", "X-Hop, x-other"), ("x-hop", "1"), ("X-Other", "2"), ("X-End", "3")],
            (),
            [("X-End", "3")],
            id="9110-7.6.1-connection-nominated-removed",
        ),
        pytest.param(
            [("Cache-Tag", "a"), ("Surrogate-Key", "b"), ("X-Keep", "c")],
            ("cache-tag", "SURROGATE-KEY"),
            [("X-Keep", "c")],
            id="also-names-case-insensitive",
        ),
        pytest.param(
            [("Set-Cookie", "a=1"), ("X-A", "1"), ("Set-Cookie", "b=2"), ("te", "x")],
            (),
            [("Set-Cookie", "a=1"), ("X-A", "1"), ("Set-Cookie", "b=2")],
            id="9110-5.3-order-and-repeated-lines-kept",
        ),
    ],
)
def test_without_hop_by_hop(
    fields: list[tuple[str, str]], also: tuple[str, ...], expected: list[tuple[str, str]]
) -> None:
    headers = CIMultiDict(fields)
    result = without_hop_by_hop(headers, also)
    assert list(result.items()) == expected
    assert list(headers.items()) == fields


@pytest.mark.parametrize(
    ("fields", "protocol", "expected"),
    [
        pytest.param(
            [("Date", "x")],
            "1.1",
            [("Date", "x"), ("Via", "1.1 edge-a")],
            id="9110-7.6.3-added",
        ),
        pytest.param(
            [("Via", "1.0 fred, 1.1 p.example.net"), ("Date", "x")],
            "1.1",
            [("Via", "1.0 fred, 1.1 p.example.net, 1.1 edge-a"), ("Date", "x")],
            id="9110-7.6.3-appended-to-existing",
        ),
        pytest.param(
            [("Via", "1.0 fred"), ("Date", "x"), ("via", "2 shield")],
            "2",
            [("Via", "1.0 fred, 2 shield, 2 edge-a"), ("Date", "x")],
            id="9110-7.6.3-lines-combined-protocol-version",
        ),
    ],
)
def test_with_via(
    fields: list[tuple[str, str]], protocol: str, expected: list[tuple[str, str]]
) -> None:
    headers = CIMultiDict(fields)
    with_via(headers, "edge-a", protocol)
    assert list(headers.items()) == expected
