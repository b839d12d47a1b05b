"""Text compression for derived variants: br, zstd and gzip.

Levels trade time for size: a variant made on a miss for a short-lived object
uses a fast level; one that will be served for a long time (fresh for a day
or more) earns a slower, smaller one, since it is made once and sent often.
"""

from __future__ import annotations

import gzip

import brotli
import zstandard

LONG_LIVED = 86400.0  # seconds of freshness from which the size-first levels are used

FAST_LEVELS = {"br": 4, "zstd": 3, "gzip": 6}
SMALL_LEVELS = {"br": 9, "zstd": 12, "gzip": 9}


def level_for(encoding: str, lifetime: float) -> int:
    table = SMALL_LEVELS if lifetime >= LONG_LIVED else FAST_LEVELS
    return table[encoding]


def compress(body: bytes, encoding: str, level: int) -> bytes:
    if encoding == "br":
        return brotli.compress(body, quality=level)
    if encoding == "zstd":
        return zstandard.ZstdCompressor(level=level).compress(body)
    if encoding == "gzip":
        return gzip.compress(body, compresslevel=level, mtime=0)
    raise ValueError(f"unknown content coding {encoding!r}")
