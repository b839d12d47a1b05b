"""One transform, as an ordered list of small steps (imgproxy's mainPipeline).

`transform` runs STEPS top to bottom on one Job and checks the time budget
between them. A step returns None to go on, or the Result that ends the run.
The work steps (load .. encode) are done by the engine that settings.engines
names for the operation and the output format; both engines offer the same
functions, so a step is one line.
"""

from __future__ import annotations

import contextlib
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from pinedge.edge.images import pillow, vips
from pinedge.edge.images.model import (
    Format,
    Limits,
    Result,
    Settings,
    SourceInfo,
    Variant,
    timeout,
)
from pinedge.edge.images.probe import probe
from pinedge.edge.images.shared import SharedDecodes

LQIP_WIDTH = 24
# A source decoded for one variant is kept, upright, sRGB and 8-bit, at up to
# this width, so its other widths and formats skip the decode (decoded images
# are only read once kept, so the pool's threads can share them).
PREPARED_WIDTH = 1200
PREPARED_MIN_WIDTH = 736
PREPARED_BYTES = 64 * 1024 * 1024

PreparedKey = tuple[str, int, int]


class Prepared:
    """A small byte-bounded LRU of decoded sources; a wider decode of a source
    replaces a narrower one."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.size = 0
        self.images: OrderedDict[PreparedKey, tuple[Any, int]] = OrderedDict()
        self.lock = threading.Lock()

    def clear(self) -> None:
        with self.lock:
            self.images.clear()
            self.size = 0

    def get(self, key: PreparedKey) -> Any:
        with self.lock:
            found = self.images.get(key)
            if found is None:
                return None
            self.images.move_to_end(key)
            return found[0]

    def put(self, key: PreparedKey, image: Any, size: int) -> None:
        if size > self.budget:
            return
        with self.lock:
            old = self.images.pop(key, None)
            if old is not None:
                self.size -= old[1]
            self.images[key] = (image, size)
            self.size += size
            while self.size > self.budget:
                _, (_, dropped) = self.images.popitem(last=False)
                self.size -= dropped


PREPARED = Prepared(PREPARED_BYTES)
# Set in each worker of a node with several (share_decodes): the workers' decodes.
SHARED: SharedDecodes | None = None


def share_decodes(root: Path | None, budget: int) -> None:
    """Share decoded sources with the node's other workers through files under
    `root` (None: keep them to this process)."""
    global SHARED
    SHARED = SharedDecodes(root, budget) if root is not None and budget > 0 else None


def prepared_key(job: Job) -> PreparedKey | None:
    """The decoded-source cache key for jobs that can use it: still images at up
    to PREPARED_WIDTH. Each engine keeps its own decodes."""
    if job.pages != 1 or job.width > PREPARED_WIDTH:
        return None
    return job.engine.NAME, zlib.crc32(job.data), len(job.data)


def prepared_width(job: Job) -> int:
    """How wide to decode a source that will be kept: wide enough for the common
    widths below it, not so wide that the first variant pays much for the rest."""
    return min(job.info.width, max(job.width, PREPARED_MIN_WIDTH))


LQIP_BLUR = 1.2
LQIP_QUALITY = 40


class Engine(Protocol):
    """What an engine module offers; `Any` is the engine's own image type."""

    NAME: str

    def load(self, data: bytes, info: SourceInfo, width: int, pages: int) -> Any: ...
    def prepare(self, image: Any, width: int) -> Any: ...
    def bytes_of(self, image: Any) -> int: ...
    def shrink(self, image: Any, width: int) -> Any: ...
    def width_of(self, image: Any) -> int: ...
    def to_raw(self, image: Any) -> tuple[dict[str, Any], bytes]: ...
    def from_raw(self, meta: dict[str, Any], pixels: memoryview) -> Any: ...
    def autorotate(self, image: Any) -> Any: ...
    def to_srgb(self, image: Any) -> Any: ...
    def to_8bit(self, image: Any) -> Any: ...
    def resize(self, image: Any, width: int) -> Any: ...
    def blur(self, image: Any, sigma: float) -> Any: ...
    def strip(self, image: Any, keep_copyright: bool) -> Any: ...
    def encode(
        self, image: Any, fmt: Format, settings: Settings, deadline: float, palette: bool = False
    ) -> tuple[bytes, int, int]: ...


ENGINES: dict[str, Engine] = {vips.NAME: vips, pillow.NAME: pillow}


@dataclass(slots=True)
class Job:
    """One transform's state as the steps fill it in."""

    data: bytes
    variant: Variant
    limits: Limits
    settings: Settings
    deadline: float
    info: SourceInfo = field(init=False)
    format: Format = field(init=False)
    width: int = field(init=False)
    pages: int = field(init=False)
    engine: Engine = field(init=False)
    image: Any = field(init=False)
    prepared: bool = False  # the image came from PREPARED: upright, sRGB, 8-bit
    prepared_key: PreparedKey | None = None
    decoded: str = "source"  # where the pixels came from: source, kept or shared
    held: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    encoded: tuple[bytes, int, int] = field(init=False)


Step = Callable[[Job], Result | None]


def transform(data: bytes, variant: Variant, limits: Limits, settings: Settings) -> Result:
    """The variant of `data`; raises ImageError (415, 422, 504) when it cannot."""
    job = Job(data, variant, limits, settings, time.monotonic() + limits.time_budget)
    with job.held:
        for step in STEPS:
            result = step(job)
            if result is not None:
                return result
            if time.monotonic() > job.deadline:
                raise timeout(log=f"over {limits.time_budget}s after {step.__name__}")
    raise AssertionError("the last step returns a Result")


# ── the steps, in order ──────────────────────────────────────────────────────


def check_source(job: Job) -> None:
    job.info = probe(job.data, job.limits)


def choose_output(job: Job) -> Result | None:
    info, variant = job.info, job.variant
    if variant.lqip:
        job.width = min(LQIP_WIDTH, info.width)
        job.format = lqip_format(info, variant.format, job.settings)
        job.pages = 1
        return None
    job.width = target_width(info, variant.width)
    job.format = choose_format(info, variant.format, job.settings, job.width)
    job.pages = info.frames if info.frames > 1 and job.format is Format.WEBP else 1
    if job.format is Format.GIF:
        return source_result(job, engine="none")
    return None


def pick_engine(job: Job) -> None:
    engines = job.settings.engines
    operation = "animate" if job.pages > 1 else "cmyk" if job.info.cmyk else "resize"
    name = engines.get((operation, job.format)) or engines.get(("resize", job.format), vips.NAME)
    if name not in ENGINES:
        raise ValueError(f"unknown image engine {name!r} for {operation} to {job.format}")
    job.engine = ENGINES[name]


def load(job: Job) -> None:
    key = prepared_key(job)
    if key is None:
        job.image = job.engine.load(job.data, job.info, job.width, job.pages)
        return
    if take_prepared(job, key):
        return
    shared = shared_for(job)
    # Another worker (or thread) may be decoding this source: wait for its copy.
    waited = shared is not None and job.held.enter_context(
        shared.turn(shared_name(key), job.deadline)
    )
    if waited and take_prepared(job, key):
        return
    job.prepared_key = key
    job.image = job.engine.load(job.data, job.info, prepared_width(job), 1)


def take_prepared(job: Job, key: PreparedKey) -> bool:
    """Start from a kept decode of the source wide enough for the job, if any."""
    engine = job.engine
    ready, job.decoded = PREPARED.get(key), "kept"
    if ready is None or engine.width_of(ready) < job.width:
        shared = shared_for(job)
        ready = shared.get(shared_name(key), engine.from_raw) if shared is not None else None
        if ready is None or engine.width_of(ready) < job.width:
            job.decoded = "source"
            return False
        PREPARED.put(key, ready, engine.bytes_of(ready))
        job.decoded = "shared"
    job.image = engine.shrink(ready, job.width)
    job.prepared = True
    return True


def shared_for(job: Job) -> SharedDecodes | None:
    # The raw pixels carry no metadata; a copyright to keep stays with each worker.
    return None if job.settings.keep_copyright else SHARED


def shared_name(key: PreparedKey) -> str:
    engine, crc, length = key
    return f"{engine}-{crc:08x}-{length}"


def autorotate(job: Job) -> None:
    if not job.prepared:
        job.image = job.engine.autorotate(job.image)


def to_srgb(job: Job) -> None:
    if not job.prepared:
        job.image = job.engine.to_srgb(job.image)


def to_8bit(job: Job) -> None:
    if job.prepared:
        return
    job.image = job.engine.to_8bit(job.image)
    key = job.prepared_key
    if key is not None:
        engine = job.engine
        ready = engine.prepare(job.image, prepared_width(job))
        shared = shared_for(job)
        if shared is not None and shared.put(shared_name(key), ready, engine.to_raw):
            # Keep the mapped copy: one copy of the pixels per node, not per worker.
            ready = shared.get(shared_name(key), engine.from_raw) or ready
        job.held.close()  # others waiting for this decode may go on
        PREPARED.put(key, ready, engine.bytes_of(ready))
        job.image = engine.shrink(ready, job.width)


def resize(job: Job) -> None:
    job.image = job.engine.resize(job.image, job.width)


def blur(job: Job) -> None:
    if job.variant.lqip:
        job.image = job.engine.blur(job.image, LQIP_BLUR)


def strip(job: Job) -> None:
    job.image = job.engine.strip(job.image, job.settings.keep_copyright)


def encode(job: Job) -> None:
    settings, palette = job.settings, False
    if job.variant.lqip:
        settings = replace(settings, jpeg_quality=LQIP_QUALITY, webp_quality=LQIP_QUALITY)
        palette = True
    job.encoded = job.engine.encode(job.image, job.format, settings, job.deadline, palette)
    job.image = None


def prefer_smaller(job: Job) -> Result:
    body, width, height = job.encoded
    same_format = job.format is job.info.format
    if same_format and not job.variant.lqip and len(body) >= len(job.data):
        return source_result(job, engine=job.engine.NAME)
    return Result(body, job.format, width, height, job.engine.NAME, False, job.decoded)


STEPS: tuple[Step, ...] = (
    check_source,
    choose_output,
    pick_engine,
    load,
    autorotate,
    to_srgb,
    to_8bit,
    resize,
    blur,
    strip,
    encode,
    prefer_smaller,
)


# ── decisions ────────────────────────────────────────────────────────────────


def choose_format(
    info: SourceInfo, wanted: Format | None, settings: Settings, width: int
) -> Format:
    """The output format for `wanted` (None: the source's family) at `width`.

    Animations stay animated: WebP when WebP or AVIF is wanted (or the source is
    an animated WebP), otherwise the GIF passes through. Alpha never becomes
    JPEG (PNG instead: a browser that asked for JPEG may not take WebP). GIF is
    never encoded: a still GIF becomes PNG. AVIF is WebP beyond avif_max_width.
    """
    if info.frames > 1:
        if wanted in (Format.WEBP, Format.AVIF) or info.format is Format.WEBP:
            return Format.WEBP
        return info.format
    fmt = wanted or info.format
    if fmt is Format.GIF:
        fmt = Format.PNG
    if fmt is Format.JPEG and info.has_alpha:
        fmt = Format.PNG
    if fmt is Format.AVIF and width > settings.avif_max_width:
        fmt = Format.WEBP
    return fmt


def lqip_format(info: SourceInfo, wanted: Format | None, settings: Settings) -> Format:
    """A placeholder's format: WebP where WebP or AVIF would do (smallest when
    tiny), else JPEG or PNG as choose_format says."""
    still = replace(info, frames=1)
    fmt = choose_format(still, wanted, settings, LQIP_WIDTH)
    return Format.WEBP if fmt is Format.AVIF else fmt


def target_width(info: SourceInfo, wanted: int | None) -> int:
    """The width to make: as asked, never wider than the source (no upscaling)."""
    if wanted is None or wanted >= info.width:
        return info.width
    return max(1, wanted)


def source_result(job: Job, engine: str) -> Result:
    info = job.info
    return Result(job.data, info.format, info.width, info.height, engine, served_source=True)
