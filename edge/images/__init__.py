"""Image variants: probe a source, choose a format and width, transform it with
libvips or Pillow, within limits, on a bounded thread pool.

A pure, synchronous library: `transform` is meant to run on a TransformPool
thread; nothing here touches the event loop except `TransformPool.run`.
"""

from pinedge.edge.images.model import (
    CONTENT_TYPES,
    Format,
    ImageError,
    Limits,
    OverLimits,
    Result,
    Settings,
    SourceInfo,
    Variant,
    format_of_content_type,
)
from pinedge.edge.images.pipeline import choose_format, transform
from pinedge.edge.images.pool import PoolFull, TransformPool
from pinedge.edge.images.probe import probe

__all__ = [
    "CONTENT_TYPES",
    "Format",
    "ImageError",
    "Limits",
    "OverLimits",
    "PoolFull",
    "Result",
    "Settings",
    "SourceInfo",
    "TransformPool",
    "Variant",
    "choose_format",
    "format_of_content_type",
    "probe",
    "transform",
]
