"""The sample origin's settings: what `pinedge origin --config FILE` reads and flags override.

The TOML file's keys are top-level (no table), e.g. ``listen = "0.0.0.0:8090"``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pinedge.core.config import duration_field, hostport_field, setting


@dataclass
class OriginConfig:
    listen: str = hostport_field("127.0.0.1:8090", doc="HOST:PORT to serve on")
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

    def __post_init__(self) -> None:
        if self.page_size < 1:
            raise ValueError("page_size must be at least 1")
        if self.max_per_page < 1:
            raise ValueError("max_per_page must be at least 1")
