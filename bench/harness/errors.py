"""The one exception a benchmark's set-up raises."""


class BenchError(Exception):
    """A set-up step failed: a server did not start, or a response was not what was
    asked (a warmed object that is not a hit, say)."""
