"""The head of a miss's answer made from the upstream's field lines (leaving some
out) must carry what the hit path's prepared head carries, in the same order."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from pinedge.edge.http.cachecontrol import response_directives
from pinedge.edge.http.negotiate import ACCEPT_CH
from pinedge.edge.pipeline.deliver import Delivery
from pinedge.edge.upstream.whole import whole_response

TARGETED = ("CDN-Cache-Control", "Surrogate-Control")
DATE = "Date: Sat, 05 Dec 2026 22:00:00 GMT\r\n"

RELAYED = {
    "an-origins-usual": (
        "Server: nginx\r\n" + DATE + "Content-Type: application/octet-stream\r\n"
        'Content-Length: 4\r\nConnection: keep-alive\r\nETag: "a-4"\r\n'
        "Cache-Control: public, max-age=3600\r\nAccept-Ranges: bytes\r\n"
    ),
    "tags-targeted-and-hop-by-hop": (
        DATE + "Surrogate-Key: pins boards\r\nCache-Tag: t1\r\nKeep-Alive: timeout=5\r\n"
        "CDN-Cache-Control: max-age=600\r\nSurrogate-Control: max-age=60\r\n"
        "Cache-Control: max-age=60\r\nX-Kept: yes\r\nContent-Length: 4\r\n"
    ),
    "names-in-any-case-values-with-spaces": (
        "date:  Sat, 05 Dec 2026 22:00:00 GMT \r\ncache-control:max-age=60\r\n"
        "SURROGATE-KEY: a\r\nx-kept:\tyes\r\ncontent-length: 4\r\nCONNECTION: Keep-Alive\r\n"
    ),
    "a-page": (DATE + "Content-Type: text/html; charset=utf-8\r\nCache-Control: max-age=60\r\n"),
}

NOT_RELAYED = {
    "an-upstream-via": DATE + "Via: 1.1 shield\r\nCache-Control: max-age=60\r\n",
    "an-upstream-cache-status": DATE + "Cache-Status: up; hit\r\nCache-Control: max-age=60\r\n",
    "a-pages-own-accept-ch": (
        DATE + "Content-Type: text/html\r\nAccept-CH: Sec-CH-DPR\r\nCache-Control: max-age=60\r\n"
    ),
    "a-field-nominated-by-connection": (
        DATE + "Connection: X-Hop\r\nX-Hop: 1\r\nCache-Control: max-age=60\r\n"
    ),
    "connection-close": DATE + "Connection: close\r\nCache-Control: max-age=60\r\n",
    "no-date": "Cache-Control: max-age=60\r\n",
}


def parsed(lines: str) -> tuple[int, str, CIMultiDictProxy[str], bytes, str]:
    if "content-length" not in lines.lower():
        lines += "Content-Length: 4\r\n"
    found = whole_response(f"HTTP/1.1 200 OK\r\n{lines}\r\nbody".encode(), 8190, 100)
    assert isinstance(found, tuple)
    status, reason, fields, body, _, _, field_lines = found
    return status, reason, CIMultiDictProxy(CIMultiDict(fields)), body, field_lines


def fields_of_head(head: bytes) -> list[tuple[str, str]]:
    """A head's fields as a client reads them: names in lower case, values trimmed."""
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK" and lines[-2:] == ["", ""]
    out = []
    for line in lines[1:-2]:
        name, _, value = line.partition(":")
        out.append((name.lower(), value.strip(" \t")))
    return out


@pytest.mark.parametrize("shield", [False, True], ids=["edge", "shield"])
@pytest.mark.parametrize("lines", RELAYED.values(), ids=RELAYED.keys())
def test_a_relayed_head_has_the_prepared_heads_fields_in_order(lines: str, shield: bool):
    delivery = Delivery("edge-1", TARGETED, ACCEPT_CH, shield=shield)
    status, reason, headers, body, field_lines = parsed(lines)
    directives, _ = response_directives(headers, TARGETED)
    wire = delivery.wire_for(status, reason, headers, len(body), directives, frozenset())
    assert wire is not None
    relayed = delivery.relayed_head(status, reason, field_lines, headers.get("Content-Type", ""))
    assert relayed is not None
    assert fields_of_head(relayed) == fields_of_head(wire.miss_head())


@pytest.mark.parametrize("lines", NOT_RELAYED.values(), ids=NOT_RELAYED.keys())
def test_heads_that_need_more_than_leaving_lines_out_are_not_relayed(lines: str):
    delivery = Delivery("edge-1", TARGETED, ACCEPT_CH)
    status, reason, headers, _, field_lines = parsed(lines)
    assert (
        delivery.relayed_head(status, reason, field_lines, headers.get("Content-Type", "")) is None
    )
