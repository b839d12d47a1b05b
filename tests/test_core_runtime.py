"""The runtime every service shares (core/): the service runner, the worker pool,
the admin listener's Bearer check and the rise/fall health counter, seen through
real processes, real listeners on loopback and raw sockets."""

from __future__ import annotations

import pytest

from pinedge.core.health import RiseFall

# ── rise and fall ────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("results", "verdicts"),
    [
        pytest.param("ff", "uD", id="up-goes-down-after-fall-failures"),
        pytest.param("fsf", "uuu", id="a-success-between-failures-keeps-it-up"),
        pytest.param("ffss", "uDdU", id="down-comes-up-after-rise-successes"),
        pytest.param("ffsfs", "uDddd", id="a-failure-between-successes-keeps-it-down"),
    ],
)
def test_a_target_changes_verdict_only_after_rise_or_fall_results_in_a_row(
    results: str, verdicts: str
) -> None:
    """Verdicts: u/d up or down, capitals where record() said it changed."""
    health = RiseFall(rise=2, fall=2)
    seen = ""
    for result in results:
        changed = health.record(result == "s")
        letter = "u" if health.up else "d"
        seen += letter.upper() if changed else letter
    assert seen == verdicts


def test_a_target_can_start_down_and_rise_and_fall_cannot_be_zero() -> None:
    health = RiseFall(rise=1, fall=3, up=False)
    assert health.record(True) and health.up and health.streak == 1
    with pytest.raises(ValueError):
        RiseFall(rise=0, fall=1)
