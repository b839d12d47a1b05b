"""The GeoDNS admin listener: liveness, metrics, health verdicts and reloads.

- `GET /healthz`: the process answers; `GET /readyz`: every process answers queries.
- `GET /metrics`: Prometheus text, the node's workers added up.
- `POST /health` `{"pop": "ams", "up": false}` (or `"up": null` to go back to the
  probes' own verdict): a health verdict from the control plane.
- `POST /reload`: read the config file again (as SIGHUP does).
The POSTs need `Authorization: Bearer $PINEDGE_ADMIN_TOKEN`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp import web

from pinedge.core.admin import Readiness, admin_app
from pinedge.core.auth import BearerToken
from pinedge.core.metrics import Counter as CounterMetric
from pinedge.core.metrics import Gauge, Registry


def figures(server: Any) -> dict[str, Any]:
    """What one worker reports: its counters, as plain data."""
    answerer = server.state.answerer
    return {
        "queries": [[*key, count] for key, count in answerer.counts.items()],
        "answers": dict(answerer.pop_answers),
        "dropped": dict(server.dropped),
        "rrl": dict(server.limiter.counts),
        "tcp_open": server.tcp_open,
        "prepared": len(answerer.prepared),
        "up": {
            pop.name: int(pop.name in answerer.steering.healthy) for pop in server.state.config.pops
        },
    }


def render(reports: list[dict[str, Any]]) -> str:
    """The workers' figures added up, in the Prometheus text format."""
    registry = Registry()
    queries = registry.add(
        CounterMetric(
            "pinedge_dns_queries_total",
            "Queries answered, by type, rcode and the answer's region ('-' if not steered).",
            ("qtype", "rcode", "region"),
        )
    )
    answers = registry.add(
        CounterMetric("pinedge_dns_answers_total", "Steered answers by POP.", ("pop",))
    )
    dropped = registry.add(
        CounterMetric("pinedge_dns_dropped_total", "Packets not answered, by reason.", ("reason",))
    )
    limited = registry.add(
        CounterMetric(
            "pinedge_dns_rate_limited_total",
            "Answers held back by response rate limiting: slip (sent truncated) or drop.",
            ("action",),
        )
    )
    up = registry.add(Gauge("pinedge_dns_pop_up", "1 if the POP is in answers.", labels=("pop",)))
    tcp = registry.add(Gauge("pinedge_dns_tcp_connections", "Open TCP connections."))
    prepared = registry.add(Gauge("pinedge_dns_prepared_answers", "Answers kept prepared."))
    total_tcp = total_prepared = 0
    pops: Counter[str] = Counter()
    for report in reports:
        for qtype, rcode, region, count in report["queries"]:
            queries.inc(qtype, rcode, region, amount=count)
        for pop, count in report["answers"].items():
            answers.inc(pop, amount=count)
        for reason, count in report["dropped"].items():
            dropped.inc(reason, amount=count)
        for action, count in report["rrl"].items():
            limited.inc(action, amount=count)
        for pop, value in report["up"].items():
            pops[pop] = max(pops[pop], value) if pop in pops else value
        total_tcp += report["tcp_open"]
        total_prepared += report["prepared"]
    for pop, value in pops.items():
        up.set(value, pop)
    tcp.set(total_tcp)
    prepared.set(total_prepared)
    return registry.render()


class Admin:
    def __init__(
        self,
        token: str | None,
        reports: Callable[[], list[dict[str, Any]]],
        verdict: Callable[[str, bool | None], None],
        reload: Callable[[], str | None],
        pops: Callable[[], list[str]],
        ready: Callable[[], Readiness],
    ) -> None:
        self.token = BearerToken(
            token,
            realm="pinedge dns",
            ask="send the admin token as Authorization: Bearer TOKEN",
            unset="set PINEDGE_ADMIN_TOKEN to allow changes over the admin listener",
        )
        self.reports = reports
        self.verdict = verdict
        self.reload = reload
        self.pops = pops
        self.ready = ready

    def app(self) -> web.Application:
        app = admin_app(self.ready, lambda: render(self.reports()))
        app.router.add_post("/health", self.health)
        app.router.add_post("/reload", self.reload_config)
        return app

    async def health(self, request: web.Request) -> web.Response:
        refused = self.token.check(request)
        if refused is not None:
            return refused.response()
        try:
            body = json.loads(await request.read())
            pop, up = body["pop"], body["up"]
        except (ValueError, KeyError, TypeError):
            return _error(400, 'send {"pop": NAME, "up": true, false or null}')
        if pop not in self.pops():
            return _error(404, f"no POP named {pop!r}")
        if up is not None and not isinstance(up, bool):
            return _error(400, '"up" must be true, false or null')
        self.verdict(pop, up)
        return web.json_response({"pop": pop, "up": up})

    async def reload_config(self, request: web.Request) -> web.Response:
        refused = self.token.check(request)
        if refused is not None:
            return refused.response()
        problem = self.reload()
        if problem is not None:
            return _error(400, f"the new configuration is refused, the old one kept: {problem}")
        return web.json_response({"reloaded": True})


def _error(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)
