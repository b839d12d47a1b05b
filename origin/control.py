"""The control listener: the request counters and fault injection, on a port of their own.

`/_origin/stats` and `/_origin/faults` are served here and nowhere else, so an
edge's clients (who reach only the public listener) can neither read the
counters nor switch the origin down. It is an admin listener like every
service's (core.admin: `/healthz`, `/readyz`, `/metrics`). With
`PINEDGE_ORIGIN_TOKEN` set, every request here needs `Authorization: Bearer TOKEN`.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from pinedge.core.admin import Readiness, admin_app
from pinedge.core.auth import BearerToken
from pinedge.core.metrics import Gauge, Registry
from pinedge.origin import faults, stats

log = logging.getLogger("pinedge.origin")

SERVER_NAME = web.AppKey("control_server_name", str)


def create_control_app(origin: web.Application, name: str, token: str | None) -> web.Application:
    """The control app for the public app `origin`: the same counters and faults."""
    counters = origin[stats.STATS]
    middlewares = [bearer_token(token)] if token else []
    control = admin_app(lambda: Readiness(True, "ready"), lambda: metrics(counters), middlewares)
    control[SERVER_NAME] = name
    stats.add_routes(control, counters)
    faults.add_routes(control, origin[faults.FAULTS])
    control.on_response_prepare.append(finish_headers)
    return control


def metrics(counters: stats.Stats) -> str:
    registry = Registry()
    registry.add(
        Gauge(
            "pinedge_origin_requests_total",
            "Requests that reached the public listener (since the last DELETE /_origin/stats).",
            lambda: counters.total,
            kind="counter",
        )
    )
    return registry.render()


def bearer_token(token: str) -> Middleware:
    """Refuse every request that does not carry `token` as a Bearer token."""
    check = BearerToken(
        token,
        realm="pinedge origin",
        ask="send the token in PINEDGE_ORIGIN_TOKEN as Authorization: Bearer TOKEN",
        unset=None,
    )

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        refused = check.check(request)
        if refused is None:
            return await handler(request)
        log.warning(
            "origin control %s %s from %s refused: no or wrong token",
            request.method,
            request.path,
            request.remote,
        )
        return refused.response({"status": 401, "error": "unauthorized", "reason": check.ask})

    return guard


async def finish_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = request.app[SERVER_NAME]
    response.headers["Cache-Control"] = "no-store"
