"""Eviction policies: the budget holds whatever the store does, and S3-FIFO resists scans.

Policies work on record numbers; the store gives a number to another object once
the policy has let go of it. S3-FIFO over arrays must decide exactly as it did
over OrderedDicts keyed by name (`DictS3FIFO` below, the first version), numbers
given again included.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pinedge.edge.store.eviction import LRU, S3FIFO, Ghost, Policy, make_policy
from pinedge.edge.store.numbertable import NumberTable

FACTORIES: dict[str, Callable[[int], Policy]] = {
    "lru": LRU,
    "s3fifo": S3FIFO,
    "s3fifo-small-5%": lambda budget: S3FIFO(budget, 0.05),
    "s3fifo-small-25%": lambda budget: S3FIFO(budget, 0.25),
}

records = st.integers(0, 39)
# Mostly objects that pass through S3-FIFO's small queue, some that skip it or exceed the budget.
sizes = st.one_of(st.integers(0, 300), st.integers(0, 300), st.integers(0, 8_000))
operations = st.lists(
    st.one_of(
        st.tuples(st.just("admit"), records, sizes),
        st.tuples(st.just("hit"), records, st.just(0)),
        st.tuples(st.just("remove"), records, st.just(0)),
    ),
    min_size=30,
    max_size=400,
)


@pytest.mark.slow
@pytest.mark.parametrize("name", FACTORIES)
@settings(max_examples=150, deadline=None)
@given(budget=st.integers(min_value=0, max_value=6_000), ops=operations)
def test_random_operations_keep_the_books(
    name: str, budget: int, ops: list[tuple[str, int, int]]
) -> None:
    policy = FACTORIES[name](budget)
    resident: dict[int, int] = {}
    for op, record, size in ops:
        if op == "admit":
            evicted = policy.admit(record, size)
            assert len(evicted) == len(set(evicted))
            if size > budget:
                assert evicted == [record]
                assert record not in policy
                resident.pop(record, None)
            else:
                assert record not in evicted
                assert record in policy
                resident[record] = size
                for gone in evicted:
                    assert gone in resident and gone not in policy
                    del resident[gone]
        elif op == "hit":
            policy.hit(record)
        else:
            policy.remove(record)
            assert record not in policy
            resident.pop(record, None)
        assert policy.size <= budget
        assert policy.size == sum(resident.values())
        assert len(policy) == len(resident)
        assert all(r in policy and policy.size_of(r) == s for r, s in resident.items())


class DictS3FIFO:
    """S3-FIFO as first written: OrderedDicts keyed by the object's name."""

    MAX_FREQ = 3

    def __init__(self, budget: int, small_ratio: float = 0.1) -> None:
        self.budget = budget
        self.size = 0
        self.small_budget = int(budget * small_ratio)
        self._small: OrderedDict[str, int] = OrderedDict()
        self._main: OrderedDict[str, int] = OrderedDict()
        self._ghost: OrderedDict[str, None] = OrderedDict()
        self._freq: dict[str, int] = {}
        self._small_bytes = 0

    def __contains__(self, key: str) -> bool:
        return key in self._freq

    def hit(self, key: str) -> None:
        freq = self._freq.get(key)
        if freq is not None and freq < self.MAX_FREQ:
            self._freq[key] = freq + 1

    def admit(self, key: str, size: int) -> list[str]:
        to_main, freq = False, 0
        if key in self._freq:
            to_main, freq = key in self._main, self._freq[key]
            self.remove(key)
        if size > self.budget:
            return [key]
        if key in self._ghost:
            del self._ghost[key]
            to_main = True
        evicted = []
        while self.size + size > self.budget:
            evicted.append(self._evict())
        if to_main or size > self.small_budget:
            self._main[key] = size
        else:
            self._small[key] = size
            self._small_bytes += size
        self._freq[key] = freq
        self.size += size
        return evicted

    def remove(self, key: str) -> None:
        if self._freq.pop(key, None) is None:
            return
        size = self._small.pop(key, None)
        if size is not None:
            self._small_bytes -= size
        else:
            size = self._main.pop(key)
        self.size -= size

    def _evict(self) -> str:
        if self._small_bytes > self.small_budget or not self._main:
            victim = self._evict_small()
            if victim is not None:
                return victim
        return self._evict_main()

    def _evict_small(self) -> str | None:
        while self._small:
            key, size = self._small.popitem(last=False)
            self._small_bytes -= size
            if self._freq[key] > 0:
                self._freq[key] = 0
                self._main[key] = size
                continue
            del self._freq[key]
            self.size -= size
            self._remember(key)
            return key
        return None

    def _evict_main(self) -> str:
        while True:
            key, size = self._main.popitem(last=False)
            freq = self._freq[key]
            if freq > 0:
                self._freq[key] = freq - 1
                self._main[key] = size
                continue
            del self._freq[key]
            self.size -= size
            return key

    def _remember(self, key: str) -> None:
        self._ghost[key] = None
        while len(self._ghost) > max(len(self._main), len(self._small), 1):
            self._ghost.popitem(last=False)


class Numbered:
    """S3FIFO driven by names as the store drives it: each resident name has a
    record number, given back when the policy lets go of it and given again
    (last freed, first given), and the name's hash as the fingerprint."""

    def __init__(self, budget: int) -> None:
        self.names: dict[int, str] = {}
        self.numbers: dict[str, int] = {}
        self.free: list[int] = []
        self.policy = S3FIFO(budget, fingerprint=lambda record: self.fingerprint(record))

    def fingerprint(self, record: int) -> int:
        return hash(self.names[record]) & ((1 << 63) - 1)

    def admit(self, name: str, size: int) -> list[str]:
        record = self.numbers.get(name)
        if record is None:
            record = self.free.pop() if self.free else len(self.names) + len(self.free)
            self.names[record], self.numbers[name] = name, record
        evicted = [self.names[victim] for victim in self.policy.admit(record, size)]
        for gone in evicted:
            self._free(gone)
        return evicted

    def hit(self, name: str) -> None:
        if name in self.numbers:
            self.policy.hit(self.numbers[name])

    def remove(self, name: str) -> None:
        if name in self.numbers:
            self.policy.remove(self.numbers[name])
            self._free(name)

    def _free(self, name: str) -> None:
        record = self.numbers.pop(name)
        del self.names[record]
        self.free.append(record)


names = st.sampled_from([f"/k{i}" for i in range(60)])
named_operations = st.lists(
    st.one_of(
        st.tuples(st.just("admit"), names, sizes),
        st.tuples(st.just("admit"), names, sizes),
        st.tuples(st.just("hit"), names, st.just(0)),
        st.tuples(st.just("remove"), names, st.just(0)),
    ),
    min_size=50,
    max_size=600,
)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(budget=st.integers(min_value=0, max_value=6_000), ops=named_operations)
def test_s3fifo_over_record_numbers_decides_as_it_did_over_names(
    budget: int, ops: list[tuple[str, str, int]]
) -> None:
    first, numbered = DictS3FIFO(budget), Numbered(budget)
    for op, name, size in ops:
        if op == "admit":
            assert numbered.admit(name, size) == first.admit(name, size)
        elif op == "hit":
            numbered.hit(name)
            first.hit(name)
        else:
            numbered.remove(name)
            first.remove(name)
        assert numbered.policy.size == first.size
        assert len(numbered.policy._ghost) == len(first._ghost)


def test_s3fifo_decides_as_it_did_on_a_long_run_with_a_large_ghost() -> None:
    """Thousands of one-hit wonders fill the ghost past what a test of a few hundred
    steps reaches: its ring is compacted and its table grows."""
    first, numbered = DictS3FIFO(200_000), Numbered(200_000)
    for step in range(60_000):
        name = f"/hot/{step % 300}" if step % 3 else f"/once/{step * 7 % 25_000}"
        size = 100 + step % 50
        if name in first:
            first.hit(name)
            numbered.hit(name)
        else:
            assert numbered.admit(name, size) == first.admit(name, size)
        if step % 97 == 0:
            first.remove(name)
            numbered.remove(name)
    assert numbered.policy.size == first.size
    assert len(numbered.policy._ghost) == len(first._ghost) > 1000


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["add", "discard", "pop"]), st.integers(0, 2**63 - 1)),
        max_size=300,
    ),
    st.sampled_from([0, 1, 7, 256, 2**40]),
    st.sampled_from([1, 3, 4096]),
)
def test_the_ghost_is_an_insertion_ordered_set(
    ops: list[tuple[str, int]], spread: int, compact_min: int
) -> None:
    ghost, model = Ghost(), OrderedDict[int, None]()
    ghost.COMPACT_MIN = compact_min
    for op, value in ops:
        fingerprint = value % 50 * spread if spread else value
        if op == "add":
            ghost.add(fingerprint)
            model.setdefault(fingerprint, None)
        elif op == "discard":
            assert ghost.discard(fingerprint) == (model.pop(fingerprint, 0) is None)
        elif model:
            ghost.pop_oldest()
            model.popitem(last=False)
        assert len(ghost) == len(model)
        assert all(held in ghost for held in model)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 400)), max_size=500),
    st.sampled_from([1, 256, 257, 2**70 + 3]),
)
def test_a_number_table_finds_what_a_dict_would(ops: list[tuple[bool, int]], spread: int) -> None:
    """Keys that share shards and home slots (multiples of 256), grown and shrunk."""
    keys: list[int] = []  # a value's key, as a record's variant id is its key
    table = NumberTable(lambda value: keys[value])
    model: dict[int, int] = {}
    for add, number in ops:
        key = number * spread
        if add and key not in model:
            model[key] = len(keys)
            keys.append(key)
            table.add(key, model[key])
        elif not add and key in model:
            table.remove(key, model.pop(key))
        assert len(table) == len(model)
        assert table.get(key) == model.get(key, -1)
    assert all(table.get(key) == value for key, value in model.items())


@pytest.mark.parametrize("name", FACTORIES)
def test_admitting_a_record_again_replaces_its_size(name: str) -> None:
    policy = FACTORIES[name](10_000)
    assert policy.admit(1, 100) == []
    assert policy.admit(2, 200) == []
    assert policy.admit(1, 700) == []
    assert (policy.size, len(policy)) == (900, 2)
    assert policy.admit(1, 50) == []
    assert (policy.size, len(policy)) == (250, 2)


@pytest.mark.parametrize("name", FACTORIES)
def test_an_object_bigger_than_the_budget_is_refused_and_evicts_nothing(name: str) -> None:
    policy = FACTORIES[name](1_000)
    policy.admit(1, 600)
    assert policy.admit(9, 1_001) == [9]
    assert 9 not in policy and 1 in policy and policy.size == 600
    assert policy.admit(1, 1_001) == [1]
    assert 1 not in policy and policy.size == 0


@pytest.mark.parametrize("name", FACTORIES)
def test_remove_and_hit_ignore_unknown_records(name: str) -> None:
    policy = FACTORIES[name](1_000)
    policy.admit(1, 10)
    policy.hit(5)
    policy.hit(100_000)
    policy.remove(5)
    policy.remove(100_000)
    policy.remove(1)
    policy.remove(1)
    assert (policy.size, len(policy), 1 in policy, 100_000 in policy) == (0, 0, False, False)


def test_s3fifo_starts_an_object_bigger_than_its_small_queue_in_main() -> None:
    policy = S3FIFO(10_000)
    assert policy.admit(0, 5_000) == []
    for i in range(1, 21):
        policy.admit(i, 500)
    assert 0 in policy and policy.size <= 10_000


def test_make_policy_knows_s3fifo_and_lru_only() -> None:
    assert isinstance(make_policy("s3fifo", 100), S3FIFO)
    assert isinstance(make_policy("lru", 100), LRU)
    assert make_policy("lru", 100).budget == 100
    with pytest.raises(ValueError, match="s3fifo"):
        make_policy("arc", 100)


OBJECT = 1_000
BUDGET = 40 * OBJECT
WORKING_SET = range(20)
SCAN = 1_000  # scanned objects are numbered from here on


def access(policy: Policy, record: int) -> bool:
    if record in policy:
        policy.hit(record)
        return True
    policy.admit(record, OBJECT)
    return False


def warm(policy: Policy) -> None:
    for _ in range(3):
        for record in WORKING_SET:
            access(policy, record)


@pytest.mark.parametrize(("name", "survivors"), [("s3fifo", len(WORKING_SET)), ("lru", 0)])
def test_a_scan_of_one_hit_wonders_flushes_the_working_set_only_under_lru(
    name: str, survivors: int
) -> None:
    policy = make_policy(name, BUDGET)
    warm(policy)
    for i in range(5 * BUDGET // OBJECT):
        access(policy, SCAN + i)
    assert sum(record in policy for record in WORKING_SET) == survivors
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
                access(policy, SCAN + 3 * i + j)
        ratios[name] = hits / 1_000
    assert ratios["s3fifo"] == 1.0
    assert ratios["lru"] < 0.01


def test_a_key_back_soon_after_eviction_is_kept_like_a_popular_one() -> None:
    policy = S3FIFO(BUDGET)
    returning = 999
    policy.admit(returning, OBJECT)
    for i in range(BUDGET // OBJECT):
        access(policy, SCAN + i)
    assert returning not in policy
    policy.admit(returning, OBJECT)
    for i in range(5 * BUDGET // OBJECT):
        access(policy, 2 * SCAN + i)
    assert returning in policy
