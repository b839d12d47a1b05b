"""pinedge's sample origin: real photos as pins, HTML pages, a JSON API, static
files, realistic caching headers, and, on a control listener of their own,
request counters and fault injection.

Public names: `OriginConfig`, `RunningOrigin`, `create_app`, `start`, `add_arguments`, `run`.
"""

from pinedge.origin.app import RunningOrigin, create_app, start
from pinedge.origin.cli import add_arguments, run
from pinedge.origin.config import OriginConfig

__all__ = ["OriginConfig", "RunningOrigin", "add_arguments", "create_app", "run", "start"]
