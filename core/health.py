"""Rise and fall: an up/down verdict from health probes that does not flap."""

from __future__ import annotations


class RiseFall:
    """The verdict on one probed target, from its probes' results in a row.

    A target that is down comes up after `rise` successes in a row; one that is
    up goes down after `fall` failures in a row; anything less leaves it as it is.
    Use one per target, feed it every probe's result, act when it says so:

        health = RiseFall(rise=2, fall=3)        # up until probes say otherwise
        if health.record(probe_succeeded):       # True: the verdict just changed
            log.warning("now %s", "up" if health.up else "down")

    `streak` is the run behind the verdict: +n for n successes in a row, -n for
    n failures. `rise` and `fall` may be changed between probes (a reload).
    """

    __slots__ = ("fall", "rise", "streak", "up")

    def __init__(self, rise: int, fall: int, up: bool = True) -> None:
        if rise < 1 or fall < 1:
            raise ValueError("rise and fall must be at least 1")
        self.rise = rise
        self.fall = fall
        self.up = up
        self.streak = 0

    def record(self, ok: bool) -> bool:
        """Count one probe's result; True when it changed the verdict."""
        self.streak = max(self.streak, 0) + 1 if ok else min(self.streak, 0) - 1
        if not self.up and self.streak >= self.rise:
            self.up = True
            return True
        if self.up and -self.streak >= self.fall:
            self.up = False
            return True
        return False

    def __repr__(self) -> str:
        verdict = "up" if self.up else "down"
        return f"RiseFall({verdict}, streak={self.streak}, rise={self.rise}, fall={self.fall})"
