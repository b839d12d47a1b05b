"""Eviction policies: the budget holds whatever the store does, and S3-FIFO resists scans."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pinedge.edge.store.eviction import LRU, S3FIFO, Policy, make_policy

FACTORIES: dict[str, Callable[[int], Policy]] = {
    "lru": LRU,
    "s3fifo": S3FIFO,
    "s3fifo-small-5%": lambda budget: S3FIFO(budget, 0.05),
    "s3fifo-small-25%": lambda budget: S3FIFO(budget, 0.25),
}

keys = st.sampled_from([f"/k{i}" for i in range(40)])
# Mostly objects that pass through S3-FIFO's small queue, some that skip it or exceed the budget.
sizes = st.one_of(st.integers(0, 300), st.integers(0, 300), st.integers(0, 8_000))
operations = st.lists(
    st.one_of(
        st.tuples(st.just("admit"), keys, sizes),
        st.tuples(st.just("hit"), keys, st.just(0)),
        st.tuples(st.just("remove"), keys, st.just(0)),
    ),
    min_size=30,
    max_size=400,
)


@pytest.mark.slow
@pytest.mark.parametrize("name", FACTORIES)
@settings(max_examples=150, deadline=None)
@given(budget=st.integers(min_value=0, max_value=6_000), ops=operations)
def test_random_operations_keep_the_books(
    name: str, budget: int, ops: list[tuple[str, str, int]]
) -> None:
    policy = FACTORIES[name](budget)
    resident: dict[str, int] = {}
    for op, key, size in ops:
        if op == "admit":
            evicted = policy.admit(key, size)
            assert len(evicted) == len(set(evicted))
            if size > budget:
                assert evicted == [key]
                assert key not in policy
                resident.pop(key, None)
            else:
                assert key not in evicted
                assert key in policy
                resident[key] = size
                for gone in evicted:
                    assert gone in resident and gone not in policy
                    del resident[gone]
        elif op == "hit":
            policy.hit(key)
        else:
            policy.remove(key)
            assert key not in policy
            resident.pop(key, None)
        assert policy.size <= budget
        assert policy.size == sum(resident.values())
        assert len(policy) == len(resident)
        assert all(k in policy for k in resident)


@pytest.mark.parametrize("name", FACTORIES)
def test_admitting_a_key_again_replaces_its_size(name: str) -> None:
    policy = FACTORIES[name](10_000)
    assert policy.admit("/a", 100) == []
    assert policy.admit("/b", 200) == []
    assert policy.admit("/a", 700) == []
    assert (policy.size, len(policy)) == (900, 2)
    assert policy.admit("/a", 50) == []
    assert (policy.size, len(policy)) == (250, 2)


@pytest.mark.parametrize("name", FACTORIES)
def test_an_object_bigger_than_the_budget_is_refused_and_evicts_nothing(name: str) -> None:
    policy = FACTORIES[name](1_000)
    policy.admit("/a", 600)
    assert policy.admit("/huge", 1_001) == ["/huge"]
    assert "/huge" not in policy and "/a" in policy and policy.size == 600
    assert policy.admit("/a", 1_001) == ["/a"]
    assert "/a" not in policy and policy.size == 0


@pytest.mark.parametrize("name", FACTORIES)
def test_remove_and_hit_ignore_unknown_keys(name: str) -> None:
    policy = FACTORIES[name](1_000)
    policy.admit("/a", 10)
    policy.hit("/nope")
    policy.remove("/nope")
    policy.remove("/a")
    policy.remove("/a")
    assert (policy.size, len(policy), "/a" in policy) == (0, 0, False)


def test_s3fifo_starts_an_object_bigger_than_its_small_queue_in_main() -> None:
    policy = S3FIFO(10_000)
    assert policy.admit("/video", 5_000) == []
    for i in range(20):
        policy.admit(f"/scan/{i}", 500)
    assert "/video" in policy and policy.size <= 10_000


def test_make_policy_knows_s3fifo_and_lru_only() -> None:
    assert isinstance(make_policy("s3fifo", 100), S3FIFO)
    assert isinstance(make_policy("lru", 100), LRU)
    assert make_policy("lru", 100).budget == 100
    with pytest.raises(ValueError, match="s3fifo"):
        make_policy("arc", 100)


OBJECT = 1_000
BUDGET = 40 * OBJECT
WORKING_SET = [f"/popular/{i}" for i in range(20)]


def access(policy: Policy, key: str) -> bool:
    if key in policy:
        policy.hit(key)
        return True
    policy.admit(key, OBJECT)
    return False


def warm(policy: Policy) -> None:
    for _ in range(3):
        for key in WORKING_SET:
            access(policy, key)


@pytest.mark.parametrize(("name", "survivors"), [("s3fifo", len(WORKING_SET)), ("lru", 0)])
def test_a_scan_of_one_hit_wonders_flushes_the_working_set_only_under_lru(
    name: str, survivors: int
) -> None:
    policy = make_policy(name, BUDGET)
    warm(policy)
    for i in range(5 * BUDGET // OBJECT):
        access(policy, f"/scan/{i}")
    assert sum(key in policy for key in WORKING_SET) == survivors
    assert policy.size <= BUDGET


def test_the_working_set_keeps_hitting_during_a_scan_under_s3fifo_not_under_lru() -> None:
    ratios = {}
    for name in ("s3fifo", "lru"):
        policy = make_policy(name, BUDGET)
        warm(policy)
        hits = 0
        for i in range(1_000):
            hits += access(policy, WORKING_SET[i % len(WORKING_SET)])
            for j in range(3):
                access(policy, f"/scan/{i}/{j}")
        ratios[name] = hits / 1_000
    assert ratios["s3fifo"] == 1.0
    assert ratios["lru"] < 0.01


def test_a_key_back_soon_after_eviction_is_kept_like_a_popular_one() -> None:
    policy = S3FIFO(BUDGET)
    policy.admit("/returning", OBJECT)
    for i in range(BUDGET // OBJECT):
        access(policy, f"/fill/{i}")
    assert "/returning" not in policy
    policy.admit("/returning", OBJECT)
    for i in range(5 * BUDGET // OBJECT):
        access(policy, f"/scan/{i}")
    assert "/returning" in policy
