"""Variants derived at the edge from one stored source: images in the format and
width each browser should get, text in the content coding it accepts.

A source is fetched and stored as usual. When a request's answer would be a
variant of it, the variant's key is the source's key plus the normalised
variant (never the raw Accept); it is made once (collapsed: one transform per
key however many ask), stored like any response, and served as a hit after.
Responses say Vary: Accept (images) or Vary: Accept-Encoding (text).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast
from urllib.parse import parse_qsl, urlencode

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from pinedge.edge.http.key import split_host
from pinedge.edge.http.negotiate import (
    NegotiationError,
    accepted_encoding,
    compressible,
    image_request,
    image_vary,
)
from pinedge.edge.http.status import CacheStatus
from pinedge.edge.images.model import (
    CONTENT_TYPES,
    DEFAULT_ENGINES,
    Format,
    ImageError,
    Limits,
    OverLimits,
    Settings,
    Variant,
    format_of_content_type,
)
from pinedge.edge.images.pipeline import transform
from pinedge.edge.images.pool import PoolFull, TransformPool
from pinedge.edge.node.config import EdgeConfig, SiteConfig
from pinedge.edge.node.metrics import EdgeMetrics
from pinedge.edge.pipeline.collapse import Fill, Once, Outcome, Role
from pinedge.edge.pipeline.deliver import Delivery, merge_vary
from pinedge.edge.pipeline.errors import EdgeError
from pinedge.edge.store.entry import Entry
from pinedge.edge.store.view import SharedStore
from pinedge.edge.variants import compress

log = logging.getLogger("pinedge.variants")

IMAGE_PARAMS = ("w", "fm", "lqip")
FAST_MEMO_MAX = 4096
UNSET = object()

OverLimitsAnswer = Literal["error", "source"]


@dataclass(frozen=True, slots=True)
class Wanted:
    """What a request wants of a source: a derived variant (by key suffix) or the
    source itself, and the Vary field such answers carry. `over_limits`: what it
    gets when the source is over the image limits, "error" or "source" (as stored)."""

    suffix: str | None
    vary: str
    make: Callable[[Entry], Awaitable[tuple[bytes, CIMultiDict[str]]]] | None = None
    detail: str = ""
    kind: str = ""
    over_limits: OverLimitsAnswer = "source"


def split_image_params(
    target: str, presets: Mapping[str, int] | None = None
) -> tuple[str, dict[str, str]]:
    """The target without the edge's own image parameters (and a leading preset
    segment such as /236x/), and those parameters; a preset becomes a width."""
    path, _, query = target.partition("?")
    params: dict[str, str] = {}
    if presets:
        first, _, rest = path[1:].partition("/")
        if first in presets and rest:
            path = "/" + rest
            params["w"] = str(presets[first])
    if not query or not any(f"{name}=" in query for name in IMAGE_PARAMS):
        return (f"{path}?{query}" if query else path), params
    kept = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in IMAGE_PARAMS:
            params.setdefault(name, value)
        else:
            kept.append((name, value))
    return (f"{path}?{urlencode(kept)}" if kept else path), params


@dataclass(frozen=True, slots=True)
class Workshop:
    """What variants need of their worker, and no more."""

    store: SharedStore
    once: Once  # one transform per key, in the worker and across the node
    delivery: Delivery
    metrics: EdgeMetrics
    prepare: Callable[[Entry], None]  # readies a made variant for serving (the hit path's head)
    run_in_background: Callable[[Coroutine[Any, Any, None]], None]


class Variants:
    def __init__(self, config: EdgeConfig, shop: Workshop, sites: Mapping[str, SiteConfig]) -> None:
        """`sites` is recv's map of hosts to sites (for each site's image settings)."""
        self.shop = shop
        self.config = config
        self.sites = sites
        self.images = config.images
        self.compression = config.compression
        self.breakpoints = tuple(config.image_widths)
        self.limits = Limits(
            max_source_bytes=config.image_max_bytes,
            max_pixels=config.image_max_pixels,
            time_budget=config.image_time_budget,
        )
        engines = dict(DEFAULT_ENGINES)
        for name, engine in config.image_engines.items():
            operation, _, fmt = name.partition(".")
            engines[(operation, Format(fmt))] = engine
        self.settings = Settings(avif_max_width=config.avif_max_width, engines=engines)
        self.image_pool = TransformPool(threads=config.image_threads, queue=config.image_queue)
        self.text_pool = TransformPool(threads=1, queue=config.image_queue)
        self.storing: dict[str, Entry] = {}  # made and sent, being written to the store
        self.fast_codings: dict[str, object] = {}
        self.kinds_of_type: dict[str | None, str | None] = {}  # Content-Type -> kind
        self.fast_images: dict[tuple[Any, ...], object] = {}

    def close(self) -> None:
        self.image_pool.close()
        self.text_pool.close()

    # ── which stored responses have variants ────────────────────────────────

    def kind(self, entry: Entry) -> str | None:
        """ "image" or "text" when answers from `entry` are variants chosen per
        request (by Accept or Accept-Encoding); None when it is sent as it is."""
        return self.kind_of(
            entry.key, entry.status, entry.headers, entry.vary_names, len(entry.body)
        )

    def kind_of(
        self,
        key: str,
        status: int,
        headers: CIMultiDictProxy[str],
        vary_names: tuple[str, ...],
        length: int,
    ) -> str | None:
        """kind() for a stored response's parts, before (or without) its entry."""
        if status != 200 or "#" in key:
            return None
        kind = self.kind_of_type(headers)
        if kind == "image":
            return kind if "accept" not in vary_names else None
        if (
            kind == "text"
            and length >= self.config.compress_min_size
            and "accept-encoding" not in vary_names
        ):
            return kind
        return None

    def kind_of_type(self, headers: CIMultiDictProxy[str]) -> str | None:
        """What kind of variants a response of this content type and coding has,
        as far as its head tells (kind() then checks the stored response itself)."""
        if "Content-Encoding" in headers:
            return None
        content_type = headers.get("Content-Type")
        kind = self.kinds_of_type.get(content_type, UNSET)
        if kind is UNSET:
            kind = None
            if self.images and format_of_content_type(content_type) is not None:
                kind = "image"
            elif self.compression and compressible(content_type):
                kind = "text"
            self._remember(self.kinds_of_type, content_type, kind)
        return cast("str | None", kind)  # UNSET was replaced above

    def fast_suffix(
        self,
        entry: Entry,
        params: tuple[tuple[str, str], ...],
        fields: Mapping[str, str],
    ) -> str | None:
        """For the hit path: the key suffix of the stored variant this request gets
        from `entry`, or None where the general path must decide (the source itself
        is the answer, or the request's fields need more than a lookup)."""
        if entry.kind == "text":
            coding = fields.get("accept-encoding", "")
            suffix = self.fast_codings.get(coding, UNSET)
            if suffix is UNSET:
                encoding = accepted_encoding(coding)
                suffix = f"enc={encoding}" if encoding else None
                self._remember(self.fast_codings, coding, suffix)
            return cast("str | None", suffix)  # UNSET was replaced above
        accept = fields.get("accept", "")
        memo_key = (params, accept, entry.headers.get("Content-Type"))
        suffix = self.fast_images.get(memo_key, UNSET)
        if suffix is UNSET:
            suffix = None
            source_format = format_of_content_type(entry.headers.get("Content-Type"))
            try:
                wanted, _ = image_request(
                    dict(params), CIMultiDict({"Accept": accept}), self.breakpoints
                )
            except NegotiationError:
                wanted = None
            if wanted is not None and not wanted.uses_hints:
                identity = wanted.width is None and not wanted.lqip
                if not (identity and wanted.format in (None, source_format)):
                    suffix = wanted.key_suffix()
            self._remember(self.fast_images, memo_key, suffix)
        return cast("str | None", suffix)  # UNSET was replaced above

    @staticmethod
    def _remember(memo: dict[Any, Any], key: Any, value: Any) -> None:
        if len(memo) >= FAST_MEMO_MAX:
            memo.clear()
        memo[key] = value

    def wanted(self, request: web.BaseRequest, params: dict[str, str], entry: Entry) -> Wanted:
        if format_of_content_type(entry.headers.get("Content-Type")) is not None:
            return self._wanted_image(request, params, entry)
        encoding = accepted_encoding(", ".join(request.headers.getall("Accept-Encoding", ())))
        if encoding is None:
            return Wanted(None, "Accept-Encoding")
        level = compress.level_for(encoding, entry.fresh.lifetime)

        async def make(source: Entry) -> tuple[bytes, CIMultiDict[str]]:
            started = time.perf_counter()
            body = await self.text_pool.run(compress.compress, source.body, encoding, level)
            self.shop.metrics.transform_duration.observe(time.perf_counter() - started, "text")
            headers = derived_headers(source, "Accept-Encoding", encoding)
            headers["Content-Encoding"] = encoding
            return body, headers

        return Wanted(f"enc={encoding}", "Accept-Encoding", make, "compressed", "text")

    def _wanted_image(
        self, request: web.BaseRequest, params: dict[str, str], entry: Entry
    ) -> Wanted:
        try:
            wanted, _ = image_request(params, request.headers, self.breakpoints)
        except NegotiationError as exc:
            raise EdgeError(400, exc.reason, "bad-image-params") from None
        vary = image_vary(wanted.uses_hints)
        source_format = format_of_content_type(entry.headers.get("Content-Type"))
        if wanted.width is None and not wanted.lqip and wanted.format in (None, source_format):
            return Wanted(None, vary)
        variant = Variant(format=wanted.format, width=wanted.width, lqip=wanted.lqip)

        async def make(source: Entry) -> tuple[bytes, CIMultiDict[str]]:
            metrics, started = self.shop.metrics, time.perf_counter()
            result = await self.image_pool.run(
                transform, source.body, variant, self.limits, self.settings
            )
            metrics.transform_duration.observe(time.perf_counter() - started, "image")
            if result.decoded != "none":
                metrics.image_decodes.inc(result.decoded)
            headers = derived_headers(source, vary, wanted.key_suffix())
            headers["Content-Type"] = CONTENT_TYPES[result.format]
            return result.body, headers

        # A variant the URL names (?w=, ?fm=, ?lqip=, a preset) promises a small image:
        # a source over the limits then gets the site's answer. One only negotiated
        # from Accept or Client Hints is the URL itself, which the source still is.
        over_limits = self.site_answer(request) if params else "source"
        return Wanted(
            wanted.key_suffix(), vary, make, "transformed", "image", over_limits=over_limits
        )

    def site_answer(self, request: web.BaseRequest) -> OverLimitsAnswer:
        """The request's site's image_over_limits ("error" or "source"), or the node's."""
        site = self.sites.get(split_host(request.host or ""))
        chosen = site.image_over_limits if site is not None else None
        return chosen or self.config.image_over_limits

    # ── answering with a variant ─────────────────────────────────────────────

    async def respond(
        self,
        request: web.BaseRequest,
        params: dict[str, str],
        source: Entry,
        status: CacheStatus,
    ) -> web.StreamResponse:
        """The answer for this request from a fresh stored source."""
        shop = self.shop
        wanted = self.wanted(request, params, source)
        now = time.time()
        if wanted.suffix is None or wanted.make is None:
            return shop.delivery.from_entry(
                request, source, status, source.age(now), source.fresh.no_cache_fields, wanted.vary
            )
        key = derived_key(source, wanted.suffix)
        made = self.storing.get(key)
        if made is None:
            stored = await shop.store.load(key)
            made = stored[0] if stored else None
        if made is None or made.ttl(now) <= 0:
            made = await self.derive(key, source, wanted, status)
            if made is None:
                return shop.delivery.from_entry(
                    request,
                    source,
                    status,
                    source.age(now),
                    source.fresh.no_cache_fields,
                    wanted.vary,
                )
            now = time.time()
        else:
            shop.store.hit(made)
        status.ttl = made.ttl(now)
        return shop.delivery.from_entry(
            request, made, status, made.age(now), made.fresh.no_cache_fields
        )

    async def derive(
        self, key: str, source: Entry, wanted: Wanted, status: CacheStatus
    ) -> Entry | None:
        """The variant, made once per key however many ask; None: serve the source."""
        shop = self.shop
        make = wanted.make
        assert make is not None

        async def make_once(fill: Fill) -> bool:
            try:
                body, headers = await make(source)
            except PoolFull as exc:
                shop.metrics.variants.inc(wanted.kind, "busy")
                fill.settle(Outcome.ERROR)
                if wanted.kind == "text":
                    status.detail = "compression-busy"
                    return False  # the uncompressed source is a fine answer
                raise EdgeError(
                    503,
                    "the image workers are busy; try again",
                    "image-queue-full",
                    headers={"Retry-After": str(exc.retry_after)},
                ) from None
            except ImageError as exc:
                shop.metrics.variants.inc(wanted.kind, exc.detail)
                fill.settle(Outcome.ERROR, error=exc)
                log.info("variant %s not made: %s %s", key, exc.reason, exc.log)
                return False
            shop.metrics.variants.inc(wanted.kind, "made")
            derived = source.derive(key, CIMultiDictProxy(headers), body)
            shop.prepare(derived)
            # Written to the store after it is sent: the client does not wait
            # for the write, and until it is done this worker serves it from here.
            status.stored = True
            status.detail = wanted.detail
            fill.settle(Outcome.UPDATED, entry=derived)
            self.storing[key] = derived
            shop.run_in_background(self.store(derived, fill))
            return True

        async def stored() -> Entry | None:
            made = await shop.store.load(key)
            return made[0] if made else None

        fill, role = await shop.once(key, make_once, stored)
        if fill.outcome is Outcome.UPDATED and fill.entry is not None:
            if role is not Role.LED:
                status.collapsed = True
            return fill.entry
        if isinstance(fill.error, ImageError):
            self.unmade(fill.error, wanted, status)
        return None

    def unmade(self, exc: ImageError, wanted: Wanted, status: CacheStatus) -> None:
        """When an image variant cannot be made: raise its error, or return (the
        source is sent, as stored, with the reason in Cache-Status), as the request
        says for a source over the limits and image_errors for any other failure.
        Neither is stored under the variant's key: a changed setting applies at once."""
        answer = wanted.over_limits if isinstance(exc, OverLimits) else self.config.image_errors
        if answer == "error":
            raise EdgeError(exc.status, exc.reason, exc.detail, log=exc.log) from None
        status.detail = exc.detail

    async def store(self, derived: Entry, fill: Fill) -> None:
        """Write a made variant to the store, then let the node's waiters have it."""
        try:
            fill.stored = await self.shop.store.put(derived)
        except OSError as exc:
            self.shop.metrics.not_stored.inc("store-error")
            log.error("could not store the variant %s: %s", derived.key, exc)
        finally:
            self.storing.pop(derived.key, None)
            self.shop.once.release(fill)


def derived_key(source: Entry, suffix: str) -> str:
    """The key of a variant of `source`: the source's key, which stored response it
    was made from (its Vary selection and version), then the variant. A '#' cannot
    occur in a request's own key (recv refuses fragments)."""
    version = source.headers.get("ETag") or repr(source.fresh.response_time)
    made_from = hashlib.sha256(f"{source.vid}|{version}".encode()).hexdigest()[:12]
    return f"{source.key}#{made_from}#{suffix}"


def derived_headers(source: Entry, vary: str, suffix: str) -> CIMultiDict[str]:
    """The source's fields for a variant of it: its own length, a distinct ETag,
    and the request fields it varies on."""
    headers = CIMultiDict(source.headers)
    headers.pop("Content-Length", None)
    etag = source.headers.get("ETag")
    if etag and etag.endswith('"'):
        tag = hashlib.sha256(suffix.encode()).hexdigest()[:8]
        headers["ETag"] = f'{etag[:-1]}-{tag}"'
    headers["Vary"] = merge_vary(source.headers.getall("Vary", ()), vary)
    return headers
