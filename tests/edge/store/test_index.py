"""The owner's index holds record numbers in arrays and tables; numbers of forgotten
records and tags are given again. Whatever it does, a lookup must answer what a
plain model of stored responses says, and its maps must agree with each other."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pinedge.edge.store.generations import Generations
from pinedge.edge.store.index import Index
from pinedge.edge.store.numbertable import NONE
from pinedge.edge.store.objectfile import Admission, Meta, variant_id
from pinedge.edge.store.purge import Selection
from pinedge.edge.store.records import Records
from pinedge.edge.store.tags import TagIndex

KEYS = ["http://a/x", "http://a/x#w=100", "http://a/y", "http://a/y/z", "http://b/x"]
TAGS = ["t1", "t2", "t3", "shared"]


@pytest.fixture(scope="module")
def generations() -> Iterator[Generations]:
    counters = Generations()
    yield counters
    counters.close()


def meta(key: str, variant: str | None, tags: frozenset[str], at: float) -> Meta:
    names, values = (("Accept",), (variant,)) if variant is not None else ((), ())
    headers = (("Surrogate-Key", " ".join(sorted(tags))),) if tags else ()
    return Meta(key, names, values, 200, "OK", headers, at, at, 100, 0, 50)


@dataclass
class Model:
    """What is stored: variant id -> (key, tags, stale since)."""

    stored: dict[str, tuple[str, frozenset[str], float | None]] = field(default_factory=dict)

    def purge(self, covered: list[str], soft: bool, at: float) -> None:
        for vid in covered:
            key, tags, since = self.stored[vid]
            if soft:
                self.stored[vid] = (key, tags, at if since is None else since)
            else:
                del self.stored[vid]

    def lookup(self, key: str) -> set[tuple[str, float | None]]:
        return {(vid, since) for vid, (k, _, since) in self.stored.items() if k == key}


def check_maps(index: Index) -> None:
    records, tags = index.records, index.tags
    live = dict(records.items())
    assert len(records) == len(live) == len(index.policy)
    for record, key in live.items():
        assert records.find(records.vid(record)) == record
        assert record in records.of_key(key) and record in index.policy
    assert sum(len(records.of_key(key)) for key in set(live.values())) == len(live)
    held: dict[int, int] = {}
    for record in live:
        for number in records.tags(record):
            held[number] = held.get(number, 0) + 1
    for number, name in enumerate(tags.names):
        assert tags.holders[number] == held.get(number, 0)
        assert (name is None) == (number not in held)
        if name is not None:
            assert tags.by_name.get(name) == number
            members = {tags.single[number]} - {NONE} | set(tags.many.get(number, ()))
            assert all(number in records.tags(record) for record in members)


operation = st.one_of(
    st.tuples(
        st.just("admit"),
        st.sampled_from(KEYS),
        st.sampled_from([None, "a", "b"]),
        st.frozensets(st.sampled_from(TAGS), max_size=3),
    ),
    st.tuples(st.just("tag"), st.sampled_from(TAGS), st.booleans()),
    st.tuples(st.just("url"), st.sampled_from(KEYS[::2]), st.booleans()),
    st.tuples(st.just("prefix"), st.sampled_from(["http://a/y", "http://b"]), st.booleans()),
    st.tuples(st.just("remove"), st.sampled_from(KEYS)),
    st.tuples(st.just("drop"), st.sampled_from(KEYS), st.sampled_from([None, "a", "b"])),
    st.tuples(st.just("settle"), st.integers(1, 5)),
)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(ops=st.lists(operation, max_size=60))
def test_lookups_answer_what_is_stored_whatever_was_done(
    ops: list[tuple], generations: Generations, tmp_path_factory: pytest.TempPathFactory
) -> None:
    index = Index(tmp_path_factory.mktemp("store"), 1 << 40, "s3fifo", generations)
    model = Model()
    clock = 1000.0
    for op, *args in ops:
        clock += 1
        if op == "admit":
            key, variant, tags = args
            stored = meta(key, variant, tags, clock)
            assert index.admit(Admission.of(stored)) == []
            model.stored[stored.variant_id] = (key, tags, None)
        elif op in ("tag", "url", "prefix"):
            name, soft = args
            if op == "tag":
                selection = Selection(tags=frozenset({name}))
                covered = [v for v, (_, tags, _) in model.stored.items() if name in tags]
            elif op == "url":
                selection = Selection(keys=frozenset({name}))
                covered = [v for v, (k, _, _) in model.stored.items() if k.split("#")[0] == name]
            else:
                selection = Selection(prefixes=(name,))
                covered = [v for v, (k, _, _) in model.stored.items() if k.startswith(name)]
            index.purge(selection, soft, now=clock)
            model.purge(covered, soft, clock)
        elif op == "remove":
            (key,) = args
            index.remove_key(key)
            gone = [v for v, (k, _, _) in model.stored.items() if key in (k, k.split("#")[0])]
            model.purge(gone, False, 0)
        elif op == "drop":
            key, variant = args
            vid = variant_id(key, ("Accept",) if variant else (), (variant,) if variant else ())
            index.drop(vid)
            model.stored.pop(vid, None)
        else:
            index.settle_some(args[0])
        for key in KEYS:
            answer = {(stored.vid, stored.purged_at) for stored in index.lookup(key)}
            assert answer == model.lookup(key), (op, args, key)
        check_maps(index)
    index.settle_some(1 << 20)
    check_maps(index)
    assert {vid for vid in index.records} == set(model.stored)


def test_records_of_a_key_are_found_however_its_variants_come_and_go() -> None:
    records = Records()
    vids = [variant_id("/k", ("Accept",), (str(n),)) for n in range(4)]
    numbers = [records.add(vid, "/k", 1.0) for vid in vids]
    other = records.add(variant_id("/o", (), ()), "/o", 1.0)
    assert sorted(records.of_key("/k")) == numbers and records.of_key("/o") == [other]
    assert all(records.key(number) is records.key(numbers[0]) for number in numbers)
    records.remove(numbers[0])  # the one the table finds the key by
    records.remove(numbers[2])
    assert sorted(records.of_key("/k")) == [numbers[1], numbers[3]]
    again = records.add(vids[0], "/k", 2.0)
    assert again == numbers[2]  # the last number freed is given first
    assert records.find(vids[0]) == again and records.find(vids[2]) == -1
    for number in records.of_key("/k"):
        records.remove(number)
    assert records.of_key("/k") == [] and not records.has_key("/k") and len(records) == 1


def test_a_tag_number_is_given_again_only_once_no_record_holds_it() -> None:
    records = Records()
    tags = TagIndex(records)
    first = records.add(variant_id("/a", (), ()), "/a", 1.0)
    second = records.add(variant_id("/b", (), ()), "/b", 1.0)
    tags.tag(first, ["pins"])
    tags.tag(second, ["pins", "boards"])
    pins, boards = tags.by_name.get("pins"), tags.by_name.get("boards")
    set_aside = tags.pop("pins")  # a purge: the records keep the tag
    assert set_aside is not None and sorted(set_aside) == [first, second]
    tags.untag(first)
    assert tags.names[pins] == "pins"  # the second still holds it
    tags.restore("pins", second)
    assert tags.single[pins] == second
    tags.untag(second)
    assert tags.names[pins] is None and tags.by_name.get("pins") == -1
    tags.tag(first, ["other"])
    assert tags.by_name.get("other") == records.tags(first)[0] in (pins, boards)
    assert tags.names_of(first) == ("other",)
