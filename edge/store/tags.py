"""Tags: the names an origin gives its responses so that they can be purged together.

They come from `Surrogate-Key` (space-separated, Fastly's field) and `Cache-Tag`
(comma-separated, Cloudflare's). The store indexes every object under its tags;
to keep that index bounded, an object keeps at most MAX_TAGS tags of at most
MAX_TAG_BYTES bytes each (longer ones are ignored, and past MAX_TAGS the first in
sorted order are kept, so every worker keeps the same ones).
"""

from __future__ import annotations

from collections.abc import Iterable

TAG_FIELDS = ("Surrogate-Key", "Cache-Tag")
MAX_TAGS = 128
MAX_TAG_BYTES = 256


def tags_of(headers: Iterable[tuple[str, str]]) -> frozenset[str]:
    """The tags named by these header fields (name, value pairs)."""
    found: set[str] = set()
    for name, value in headers:
        lower = name.lower()
        if lower == "surrogate-key":
            found.update(value.split())
        elif lower == "cache-tag":
            found.update(tag.strip() for tag in value.split(","))
    kept = {
        tag for tag in found if tag and len(tag.encode("utf-8", "surrogateescape")) <= MAX_TAG_BYTES
    }
    if len(kept) > MAX_TAGS:
        kept = set(sorted(kept)[:MAX_TAGS])
    return frozenset(kept)
