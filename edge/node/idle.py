"""How much of the machine's CPU time went unused: for background work that should
only take what the hit path leaves.

Linux only (/proc/stat); elsewhere the share is unknown and callers decide.
"""

from __future__ import annotations

from pathlib import Path

PROC_STAT = Path("/proc/stat")


class IdleMeter:
    """The share of all CPUs' time spent idle between two readings."""

    def __init__(self, path: Path = PROC_STAT) -> None:
        self.path = path
        self.last = self._read()

    def share(self) -> float | None:
        """Idle share since the previous call (0..1); None if unknown or if no clock
        tick has passed since."""
        now = self._read()
        last = self.last
        if now is None or last is None:
            self.last = now
            return None
        total = now[1] - last[1]
        if total <= 0:
            return None
        self.last = now
        return (now[0] - last[0]) / total

    def _read(self) -> tuple[int, int] | None:
        """(idle ticks, all ticks) over every CPU since boot."""
        try:
            with self.path.open("rb") as stat:
                fields = stat.readline().split()
        except OSError:
            return None
        if len(fields) < 5 or fields[0] != b"cpu":
            return None
        try:
            # user nice system idle iowait irq softirq steal; guest time is already
            # counted in user and nice.
            ticks = [int(value) for value in fields[1:9]]
        except ValueError:
            return None
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
        return idle, sum(ticks)
