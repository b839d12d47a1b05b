"""pinedge: an open-source CDN edge node for image-heavy sites."""

__version__ = "0.1.0"
