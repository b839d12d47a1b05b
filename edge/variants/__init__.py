"""Variants derived at the edge from one stored source: image formats and widths, text codings."""
