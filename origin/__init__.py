"""pinedge's sample origin: real photos as pins, HTML pages, a JSON API, static
files, realistic caching headers, request counters and fault injection.

Public names: `OriginConfig`, `create_app`, `start`, `add_arguments`, `run`.
"""

from pinedge.origin.app import create_app, start
from pinedge.origin.cli import add_arguments, run
from pinedge.origin.config import OriginConfig

__all__ = ["OriginConfig", "add_arguments", "create_app", "run", "start"]
