"""recv: whether a request is one this node serves at all, and where it goes."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from yarl import URL

from pinedge.edge.http.key import check_target, split_host
from pinedge.edge.node.config import EdgeConfig
from pinedge.edge.pipeline.errors import EdgeError
from pinedge.edge.pipeline.transaction import Route
from pinedge.edge.variants.derive import split_image_params


class Router:
    """A node's sites by host, and the checks every request passes before routing."""

    def __init__(self, config: EdgeConfig) -> None:
        self.sites = {host: site for site in config.site_list() for host in site.hosts}
        self.images = config.images
        self.presets = config.image_presets
        self.max_request_body = config.max_request_body

    def recv(self, request: web.BaseRequest) -> Route:
        if request.method == "CONNECT":
            # RFC 9110 §9.3.6: what follows a CONNECT head is tunnel data to one
            # reader and the next request to another; an edge is no tunnel.
            raise EdgeError(501, "CONNECT is not supported here", "method", close=True)
        if request.version >= aiohttp.HttpVersion11 and "Host" not in request.headers:
            raise EdgeError(400, "an HTTP/1.1 request needs a Host header", "no-host")
        check_framing(request)
        length = request.content_length
        if length is not None and length > self.max_request_body:
            raise EdgeError(
                413,
                f"request body of {length} bytes is over the limit of {self.max_request_body}",
                "body-too-large",
                close=True,
            )
        return self.route(request.host or "", request.raw_path)

    def route(self, host_field: str, raw_target: str) -> Route:
        """The site, host and origin-form target (less the edge's image parameters)
        a request goes to; the same for recv and for the hit path's keys."""
        target = origin_form(raw_target)
        check_target(target)
        host = split_host(host_field)
        site = self.sites.get(host)
        if site is None:
            raise EdgeError(421, f"this node does not serve the host {host!r}", "unknown-host")
        params: dict[str, str] = {}
        if self.images:
            target, params = split_image_params(target, self.presets)
        return Route(site, host, target, params)


def check_framing(request: web.BaseRequest) -> None:
    """RFC 9112 §6.1: only `chunked` is understood (501 for any other coding), and an
    HTTP/1.0 request with Transfer-Encoding has faulty framing (400). Either way the
    connection is closed after the answer: what follows cannot be told apart from
    the body."""
    codings = request.headers.getall("Transfer-Encoding", ())
    if not codings:
        return
    if request.version < aiohttp.HttpVersion11:
        raise EdgeError(
            400,
            "an HTTP/1.0 request cannot carry Transfer-Encoding",
            "bad-framing",
            close=True,
        )
    names = [name.strip(" \t").lower() for line in codings for name in line.split(",")]
    if names != ["chunked"]:
        raise EdgeError(
            501,
            f"Transfer-Encoding {', '.join(codings)!r} is not implemented (only chunked)",
            "bad-framing",
            close=True,
        )


def origin_form(raw_target: str) -> str:
    """The path and query of a request target; absolute-form (RFC 9112 §3.2.2) is
    accepted, its host having already been taken as the request's host."""
    if raw_target.startswith(("http://", "https://")):
        return URL(raw_target).raw_path_qs
    return raw_target
