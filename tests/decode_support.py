"""What a second worker does with the shared decodes, as a function a spawned
process can import by name (a test module's own name is not importable there)."""

from __future__ import annotations

from pathlib import Path

from pinedge.edge.images import Format, Limits, Settings, Variant, pipeline, transform


def transform_in_child(root: str, photo: str, width: int) -> str:
    """Transform `photo` to a WebP of `width` with the share under `root` on."""
    pipeline.share_decodes(Path(root), 64 * 1024 * 1024)
    result = transform(Path(photo).read_bytes(), Variant(Format.WEBP, width), Limits(), Settings())
    return result.decoded
