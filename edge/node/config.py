"""The edge node's settings: what `pinedge edge --config FILE` reads and flags override."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Literal

from pinedge.core.config import (
    ConfigError,
    duration_field,
    hostport_field,
    parse_url,
    setting,
    size_field,
    url_field,
)
from pinedge.edge.http.forwarding import TrustedPeers


@dataclass(kw_only=True)
class OriginConfig:
    """One origin server of a site's pool."""

    url: str = url_field(doc="origin URL, e.g. http://10.0.0.1:8090")
    weight: int = setting(1, doc="share of requests among the primaries (1-100)")
    backup: bool = setting(False, doc="used only when every primary is failing")

    def __post_init__(self) -> None:
        if self.url is None:
            raise ValueError("url: every origin needs one")
        if not 1 <= self.weight <= 100:
            raise ValueError("weight: must be between 1 and 100")


@dataclass(kw_only=True)
class RateLimitConfig:
    """Per-client request budgets (token buckets): beyond them, 429 with Retry-After."""

    requests: float = setting(0.0, doc="requests per second a client may make (0: no limit)")
    requests_burst: int = setting(
        0, doc="requests a client may make at once beyond that rate (0: two seconds' worth)"
    )
    misses: float = setting(
        0.0,
        doc="requests per second a client may send to the origin: misses, validations and "
        "passes; hits do not count (0: no limit)",
    )
    misses_burst: int = setting(
        0, doc="misses a client may make at once beyond that rate (0: two seconds' worth)"
    )

    def __post_init__(self) -> None:
        for name in ("requests", "requests_burst", "misses", "misses_burst"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: cannot be negative")

    def burst(self, rate: float, burst: int) -> float:
        return float(burst) if burst else max(2.0 * rate, 1.0)


@dataclass(kw_only=True)
class SiteConfig:
    """One site: the host names it answers for and the origin(s) behind it."""

    name: str = setting(doc="a label for logs and metrics")
    hosts: list[str] = setting([], doc="host names (without port) this site answers for")
    origin: str | None = url_field(doc="origin URL, e.g. http://127.0.0.1:8090 (or origins)")
    origins: list[OriginConfig] = setting(
        [], doc="[[sites.origins]] tables (url, weight, backup): a pool instead of origin"
    )
    preserve_host: bool = setting(
        False, doc="send the client's Host upstream instead of the origin's host"
    )
    probe_path: str = setting(
        "/", doc="path GET every probe_interval from each origin (an answer under 500 is up)"
    )
    rate_limit: RateLimitConfig | None = setting(
        None, doc="[sites.rate_limit] table: this site's client budgets instead of rate_limit's"
    )
    image_over_limits: Literal["error", "source"] | None = setting(
        None, doc="this site's answer instead of image_over_limits's"
    )

    def __post_init__(self) -> None:
        if not self.hosts:
            raise ValueError(f"site {self.name!r} needs at least one entry in hosts")
        self.hosts = [h.lower().rstrip(".") for h in self.hosts]
        if (self.origin is None) == (not self.origins):
            raise ValueError(f"site {self.name!r}: give either origin or [[sites.origins]]")
        if not any(not origin.backup for origin in self.origins) and self.origins:
            raise ValueError(f"site {self.name!r}: at least one origin must not be a backup")
        if not self.probe_path.startswith("/"):
            raise ValueError(f"probe_path: {self.probe_path!r} must start with /")

    def pool(self) -> list[tuple[str, int, bool]]:
        """(url, weight, backup) of each origin."""
        if self.origin is not None:
            return [(self.origin, 1, False)]
        return [(o.url, o.weight, o.backup) for o in self.origins]


IMAGE_OPERATIONS = ("resize", "animate", "cmyk")
IMAGE_FORMATS = ("avif", "webp", "jpeg", "png")
IMAGE_ENGINES = ("vips", "pillow")


def default_name() -> str:
    return "pinedge-" + socket.gethostname().split(".")[0]


@dataclass(kw_only=True)
class EdgeConfig:
    listen: str = hostport_field("127.0.0.1:8080", doc="HOST:PORT for client traffic")
    admin: str = hostport_field(
        "127.0.0.1:8081", doc="HOST:PORT for /healthz, /readyz, /metrics (keep it private)"
    )
    name: str = setting("", doc="node name in Cache-Status and Via (default pinedge-<hostname>)")
    origin: str | None = url_field(doc="origin URL of the single site (with --origin alone)")
    hosts: list[str] = setting(
        [], doc="extra host names the single site answers for (besides localhost and listen)"
    )
    sites: list[SiteConfig] = setting([], doc="[[sites]] tables: name, hosts, origin")
    role: Literal["edge", "shield"] = setting(
        "edge", doc="edge, or shield: a node other edges send their misses to"
    )
    shield: list[str] = setting(
        [], doc="shield URLs; each cache key goes to one, by rendezvous hashing"
    )
    shield_fallback: Literal["origin", "none"] = setting(
        "origin", doc="when every shield of a key fails: go to the origin, or answer 502"
    )
    breaker_failures: int = setting(
        5, doc="failures in a row (errors, timeouts, 5xx) that open an upstream's breaker"
    )
    breaker_cooldown: float = duration_field(
        "10s", doc="how long an open breaker skips its upstream before one trial request"
    )
    probe_interval: float = duration_field(
        "5s", doc="active health probes of each origin and shield (0: passive checks only)"
    )
    upstream_tries: int = setting(
        3, doc="upstreams tried for one request when connecting fails (idempotent requests)"
    )
    workers: int = setting(
        1, doc="worker processes sharing the port (SO_REUSEPORT) and one store, supervised"
    )
    cache_mem: int = size_field(
        "256MiB", doc="budget of the memory store (used when there is no cache_dir)"
    )
    cache_dir: str | None = setting(
        None, doc="directory of a persistent store (kept across restarts) instead of memory"
    )
    cache_disk: int = size_field("1GiB", doc="budget of the store in cache_dir")
    hot_memory: int = size_field(
        "32MiB",
        doc="per worker: recently used responses kept in process memory (bodies and what "
        "goes with them); the metadata of up to hot_memory / 2 KiB more keys",
    )
    eviction: Literal["s3fifo", "lru"] = setting(
        "s3fifo", doc="eviction policy: s3fifo (scan-resistant, default) or lru"
    )
    store_load_wait: float = duration_field(
        "5s",
        doc="at start, time spent indexing a warm store before serving; the rest is indexed "
        "while serving (meanwhile a request finds its file by its key; responses with Vary "
        "are misses until indexed)",
    )
    control: str | None = url_field(doc="control plane URL (not yet supported)")
    max_object_size: int = size_field(
        "32MiB", doc="largest response stored; larger ones stream through uncached"
    )
    max_request_body: int = size_field("64MiB", doc="largest request body accepted (413 above)")
    max_request_line: int = size_field("8KiB", doc="longest request line")
    max_header_size: int = size_field("8KiB", doc="longest single request header field")
    connect_timeout: float = duration_field("5s", doc="upstream connect timeout (504)")
    first_byte_timeout: float = duration_field(
        "30s", doc="upstream time to response headers, and between body reads (504)"
    )
    total_timeout: float = duration_field("300s", doc="upstream time for a whole response")
    collapse_timeout: float = duration_field(
        "15s", doc="how long a collapsed request waits for the leader's response headers"
    )
    drain_time: float = duration_field("10s", doc="SIGTERM: time to finish in-flight requests")
    header_timeout: float = duration_field(
        "15s", doc="time a client has to send a whole request head once it starts (408)"
    )
    keepalive_timeout: float = duration_field(
        "60s", doc="an idle client connection (no request started) is closed after this"
    )
    body_timeout: float = duration_field(
        "30s", doc="longest pause between two reads of a request body (408)"
    )
    send_timeout: float = duration_field(
        "30s", doc="a response the client takes nothing of for this long is cut off"
    )
    max_connections: int = setting(
        8192, doc="client connections the node holds at once; beyond, 503 and close"
    )
    max_client_connections: int = setting(
        256, doc="connections one client may hold at once; beyond, 429 and close (0: no limit)"
    )
    client_ipv4_prefix: int = setting(
        32, doc="IPv4 addresses that count as one client in limits (24: each /24 is one)"
    )
    client_ipv6_prefix: int = setting(
        64, doc="IPv6 addresses that count as one client in limits (a host has a whole /64)"
    )
    rate_limit: RateLimitConfig = field(
        default_factory=RateLimitConfig,
        metadata={
            "doc": "[rate_limit] table: every site's client budgets, unless the site has its own",
            "shown": "no limits",
        },
    )
    grace: float = duration_field(
        "0s", doc="serve stale this long past expiry when every upstream fails"
    )
    heuristic_fraction: float = setting(
        0.0, doc="heuristic freshness as a fraction of (Date - Last-Modified); 0 = off"
    )
    heuristic_max: float = duration_field("1d", doc="cap on heuristic freshness")
    client_cache_control: bool = setting(
        False,
        doc="also honour the client's no-cache, max-age and min-fresh (a reload then "
        "revalidates at the origin); max-stale, only-if-cached and no-store always count",
    )
    cache_set_cookie: bool = setting(False, doc="store responses that carry Set-Cookie")
    images: bool = setting(
        True, doc="serve images as variants: format by Accept (or ?fm=), width by ?w= or hints"
    )
    image_widths: list[int] = setting(
        [236, 474, 736, 1200], doc="breakpoints ?w= and Client Hints snap up to"
    )
    image_presets: dict[str, int] = setting(
        {"236x": 236, "474x": 474, "736x": 736, "1200x": 1200},
        doc="path prefixes that ask for a width: /236x/img/a.jpg is /img/a.jpg?w=236",
    )
    image_max_bytes: int = size_field("40MiB", doc="largest image source transformed")
    image_max_pixels: int = setting(
        40_000_000, doc="largest image (width x height) decoded; bombs are refused unread"
    )
    image_time_budget: float = duration_field("5s", doc="time allowed for one transform")
    avif_max_width: int = setting(1200, doc="wider variants are WebP instead of AVIF")
    image_shared_decodes: int = size_field(
        "64MiB",
        doc="with several workers: decoded sources they share in memory, so each source "
        "is decoded once for all its widths and formats (0: each worker decodes its own)",
    )
    image_engines: dict[str, str] = setting(
        {},
        doc="engine per operation and output format, over the measured defaults: "
        '{"resize.webp" = "pillow"}; operations resize, animate, cmyk; engines vips, pillow',
    )
    image_threads: int = setting(2, doc="threads transforming images (both engines free the GIL)")
    image_queue: int = setting(16, doc="transforms waiting at most; beyond, 503 with Retry-After")
    image_over_limits: Literal["error", "source"] = setting(
        "error",
        doc="a width or format asked (?w=, ?fm=, ?lqip=, a preset) of an image over "
        "image_max_pixels, image_max_bytes or 200 frames: error (422), or source (as it is)",
    )
    image_errors: Literal["source", "error"] = setting(
        "source", doc="a source that cannot be transformed: serve it as is, or the error"
    )
    compression: bool = setting(True, doc="compress text with br, zstd or gzip by Accept-Encoding")
    compress_min_size: int = size_field("1KiB", doc="smaller text is sent as it is")
    fast_path: bool = setting(
        True,
        doc="answer plain hits, and plain misses that store, straight from the request's "
        "bytes (false: always handle())",
    )
    targeted_fields: list[str] = setting(
        ["CDN-Cache-Control", "Surrogate-Control"],
        doc="targeted cache-control fields (RFC 9213) that win over Cache-Control",
    )
    trusted_proxies: list[str] = setting(
        [],
        doc="addresses or CIDRs whose Forwarded / X-Forwarded-* chain is kept and extended "
        "(this node's edges and shields, a load balancer); everyone else's is replaced",
    )
    admin_token: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.name = self.name or default_name()
        if not 1 <= self.workers <= 64:
            raise ValueError("workers: must be between 1 and 64")
        self.shield = [parse_url(url) for url in self.shield]
        if self.shield and self.role == "shield":
            raise ValueError("shield: a shield goes to the origin; it has no shields of its own")
        if self.role == "shield":
            # A shield keeps what the origin sent; its edges make the variants.
            self.images = self.compression = False
        if self.breaker_failures < 1:
            raise ValueError("breaker_failures: must be at least 1")
        if not 1 <= self.upstream_tries <= 10:
            raise ValueError("upstream_tries: must be between 1 and 10")
        if self.cache_dir is not None and self.cache_disk <= 0:
            raise ValueError("cache_disk: give the disk store a budget, e.g. 10GiB")
        if self.control is not None:
            raise ValueError("control: the control plane is not supported in this version")
        if not 0.0 <= self.heuristic_fraction <= 1.0:
            raise ValueError("heuristic_fraction: must be between 0 and 1")
        for name, engine in self.image_engines.items():
            operation, _, fmt = name.partition(".")
            if operation not in IMAGE_OPERATIONS or fmt not in IMAGE_FORMATS:
                raise ValueError(
                    f"image_engines: {name!r} is not OPERATION.FORMAT with OPERATION one of "
                    f"{', '.join(IMAGE_OPERATIONS)} and FORMAT one of {', '.join(IMAGE_FORMATS)}"
                )
            if engine not in IMAGE_ENGINES:
                raise ValueError(f"image_engines: {name} = {engine!r} is not vips or pillow")
        if self.origin is None and not self.sites:
            raise ValueError("give --origin URL or at least one [[sites]] table")
        if self.origin is not None and self.sites:
            raise ValueError("give either origin (one site) or [[sites]] tables, not both")
        if self.max_connections < 1 or self.max_client_connections < 0:
            raise ValueError("max_connections: at least 1; max_client_connections: 0 or more")
        if not 8 <= self.client_ipv4_prefix <= 32 or not 16 <= self.client_ipv6_prefix <= 128:
            raise ValueError("client_ipv4_prefix: 8 to 32; client_ipv6_prefix: 16 to 128")
        try:
            TrustedPeers.parse(self.trusted_proxies)
        except ValueError as exc:
            raise ValueError(f"trusted_proxies: {exc}") from None
        self.admin_token = os.environ.get("PINEDGE_ADMIN_TOKEN") or None

    def site_list(self) -> list[SiteConfig]:
        """The sites this node serves; `origin` alone makes one default site."""
        if self.sites:
            return self.sites
        assert self.origin is not None
        listen_host = self.listen.rsplit(":", 1)[0].strip("[]")
        hosts = ["localhost", "127.0.0.1", "[::1]", listen_host, *self.hosts]
        unique = list(dict.fromkeys(h.lower() for h in hosts if h and h != "0.0.0.0"))
        return [SiteConfig(name="default", hosts=unique, origin=self.origin)]


__all__ = ["ConfigError", "EdgeConfig", "OriginConfig", "SiteConfig"]
