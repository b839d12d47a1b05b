"""The sample origin's settings: what `pinedge origin --config FILE` reads and flags override.

The TOML file's keys are top-level (no table), e.g. ``listen = "0.0.0.0:8090"``.
`PINEDGE_ORIGIN_TOKEN`, when set, is the Bearer token the control listener asks for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from pinedge.core.config import duration_field, hostport_field, parse_hostport, setting


@dataclass
class OriginConfig:
    listen: str = hostport_field("127.0.0.1:8090", doc="HOST:PORT to serve on")
    admin: str = hostport_field(
        "127.0.0.1:8091",
        doc="HOST:PORT of the control listener (/_origin/stats, /_origin/faults); keep it private",
    )
    name: str = setting("pinedge-origin", doc="sent as the Server header, to tell origins apart")
    page_size: int = setting(12, doc="pins per home, board and user page")
    max_per_page: int = setting(50, doc="largest per_page the JSON API accepts (larger is capped)")
    html_ttl: float = duration_field("60s", doc="max-age of HTML pages")
    api_ttl: float = duration_field("10s", doc="max-age of JSON API responses")
    api_stale: float = duration_field("30s", doc="stale-while-revalidate of JSON API responses")
    photos: str | None = setting(
        None, doc="directory with catalog.json and the photos (default: the bundled set)"
    )
    access_log: bool = setting(False, doc="log every request (costs throughput in benchmarks)")
    admin_token: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.page_size < 1:
            raise ValueError("page_size must be at least 1")
        if self.max_per_page < 1:
            raise ValueError("max_per_page must be at least 1")
        admin_host, admin_port = parse_hostport(self.admin)
        if admin_port and (admin_host, admin_port) == parse_hostport(self.listen):
            raise ValueError("admin must be another address than listen")
        self.admin_token = os.environ.get("PINEDGE_ORIGIN_TOKEN") or None
