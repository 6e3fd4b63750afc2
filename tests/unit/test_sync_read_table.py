"""The C SyncMap's read table (csrc/syncmap.c, _SyncRead): ftmap's own immutable hash table of
the published read map, probed without taking a reference to the entry (issue 12).

It must give exactly the dict's results, in the dict's order of user calls, for every key it
is built for, and must not be built where that cannot be guaranteed (a key whose hash runs
user code); it owns what it points to, so a lookup is memory-safe however the published dict
is treated; and the garbage collector must see through it.
"""

from __future__ import annotations

import enum
import gc
import weakref
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from ftmap import _impl
from tests.hostile import HostileError, plain_keys
from tests.threads import within
from tests.unit.test_sync import check_invariants
from tests.unit.test_sync_differential import OPS, SETTINGS, VALUES_AND_MARKERS, internals, run, same
from tests.unit.test_sync_model import KEYS

VARIANTS = _impl.variants("SyncMap")
pytestmark = pytest.mark.skipif("c" not in VARIANTS, reason="the C core is not built")

M = 2**61 - 1  # CPython's int hash is the value modulo this (non-negative ints): k*M + c hash alike


def c_map(items: Any = ()) -> Any:
    m = VARIANTS["c"](items)
    list(m)  # promoted: every key in the published read map
    return m


class Identity:
    """Hashed by identity (object.__hash__), compared by a name: its hash runs no user code."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Identity) and other.name == self.name

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"Identity({self.name!r})"


class Color(enum.Enum):
    RED = 1


class MyStr(str):
    __slots__ = ()


class OwnHash:
    def __init__(self, n: int) -> None:
        self.n = n

    def __hash__(self) -> int:
        return self.n

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OwnHash) and other.n == self.n

    def __repr__(self) -> str:
        return f"OwnHash({self.n})"


PURE_KEYS = [
    "a",
    "",
    "é" * 3,
    0,
    -1,  # hash -2
    10**40,
    True,
    1.5,
    float("inf"),
    2j,
    b"bytes",
    None,
    frozenset({1, 2}),
    (1, ("a", (None, 2.5))),
    (),
    Identity("i"),
]


@pytest.mark.parametrize("key", PURE_KEYS, ids=repr)
def test_a_read_map_whose_keys_hash_without_user_code_gets_a_table(key: Any) -> None:
    m = c_map({key: "v", "other": 1})
    assert m._read_table_size == 2
    h = m.handle()
    assert m[key] == h[key] == m.get(key) == h.get(key) == "v"
    assert key in m and key in h
    assert m.load(("absent",)) == h.load(("absent",)) == (None, False)


@pytest.mark.parametrize(
    "key",
    [Color.RED, MyStr("a"), OwnHash(1), (1, OwnHash(2)), (((((((((1,),),),),),),),),)],
    ids=repr,
)
def test_any_key_whose_hash_may_run_user_code_leaves_the_dict_to_do_the_lookups(key: Any) -> None:
    m = c_map({key: "v", "other": 1})
    assert m._read_table_size is None  # no table: the dict's own lookup, as before
    h = m.handle()
    assert m[key] == h[key] == "v" and m["other"] == h["other"] == 1
    m.delete(key)
    m["new"] = 2  # a dirty map without the deleted key (expunged)
    list(m)  # promoted: the table comes back
    assert m._read_table_size == 2


def test_the_table_follows_every_publication() -> None:
    m = VARIANTS["c"]()
    assert m._read_table_size == 0  # the empty read map of a new map
    m["a"] = 1
    assert m._read_table_size == 0  # "a" is in the dirty map only
    list(m)
    assert m._read_table_size == 1
    m.clear()
    assert m._read_table_size == 0
    m.update({i: i for i in range(100)})
    list(m)
    assert m._read_table_size == 100


def test_colliding_buckets_are_all_found_and_a_miss_ends_its_chain() -> None:
    # 200 keys in 8 classes of equal low 20 bits (distinct hashes): each class starts in one
    # bucket and probes through the others' (the table has 512 buckets).
    keys = [c + (k << 20) for c in range(8) for k in range(1, 26)]
    assert len({hash(k) for k in keys}) == len(keys)
    m = c_map({k: str(k) for k in keys})
    h = m.handle()
    assert m._read_table_size == len(keys)
    for k in keys:
        twin = int(str(k))  # equal, not identical: found by ==
        assert twin is not k
        assert m[twin] == h[twin] == str(k)
    for c in range(8):
        absent = c + (30 << 20)  # starts where 25 stored keys did, equal to none
        assert m.get(absent, "none") == h.get(absent, "none") == "none"
    assert m.get(-5) is None and 99 + (1 << 40) not in h


@pytest.mark.parametrize("pair", [(-1, -2), (5, 5 + M), ("", 0), ("a", ("b",))], ids=repr)
def test_two_keys_of_one_hash_leave_the_dict_to_do_the_lookups(pair: tuple[Any, Any]) -> None:
    # A dict compares a probe with its stored keys of equal hash in an order that depends on
    # its history of deletions; the table would not reproduce it, so it is not built.
    a, b = pair
    if hash(a) != hash(b):  # ("a", ("b",)): no collision: the control
        assert c_map({a: 1, b: 2})._read_table_size == 2
        return
    m = c_map({a: 1, b: 2})
    assert m._read_table_size is None
    assert m[a] == m.handle()[a] == 1 and m[b] == m.handle()[b] == 2


def test_after_a_delete_and_reinsert_a_probe_meets_the_colliding_keys_as_the_pure_map_does() -> None:
    # The dict puts a re-inserted key in the bucket its deletion freed, so -1 can come before -2
    # on the probe's path: the C map (no table: one hash for both) must call the same __eq__s.
    maps = {impl: VARIANTS[impl]({-2: "minus two", -1: "minus one"}) for impl in ("python", "c")}
    for m in maps.values():
        list(m)
        m.delete(-1)
        m["new"] = 0  # a dirty map without -1 (purged: its bucket freed)
        m[-1] = "again"
        list(m)  # promoted
    assert maps["c"]._read_table_size is None
    seen = {}
    for name, target in [("python", maps["python"]), ("c", maps["c"]), ("c handle", maps["c"].handle())]:
        calls: list[str] = []
        try:
            got = target.get(Probe(-2, HostileError("__eq__ refused"), calls))
        except HostileError:
            got = "raised"
        seen[name] = (got, calls)
    assert seen["c"] == seen["c handle"] == seen["python"], seen


def test_equal_keys_of_other_types_are_found_as_a_dict_finds_them() -> None:
    m = c_map({1: "one", "key": "k", (1, 2): "t", 0.5: "half"})
    h = m.handle()
    for probe, expected in [
        (1.0, "one"),
        (True, "one"),
        ("".join(["k", "ey"]), "k"),
        ((1.0, 2), "t"),
        (0.5, "half"),
    ]:
        assert m[probe] == h[probe] == expected
        assert {1: "one", "key": "k", (1, 2): "t", 0.5: "half"}[probe] == expected


class Probe:
    """Hashes like `target`, records every __eq__ call, and answers with `answer` (or raises)."""

    def __init__(self, target: Any, answer: Any, calls: list[str]) -> None:
        self.target = target
        self.answer = answer
        self.calls = calls

    def __hash__(self) -> int:
        self.calls.append("hash")
        return hash(self.target)

    def __eq__(self, other: object) -> Any:
        self.calls.append(f"eq {other!r}")
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer

    def __repr__(self) -> str:
        return f"Probe({self.target!r})"


class Recording(Identity):
    """An identity-hashed stored key that records its own __eq__ calls (so it runs first)."""

    def __init__(self, name: str, calls: list[str]) -> None:
        super().__init__(name)
        self.calls = calls

    def __eq__(self, other: object) -> Any:
        self.calls.append(f"stored eq {self.name}")
        return NotImplemented

    __hash__ = object.__hash__  # defining __eq__ drops the inherited one


@pytest.mark.parametrize("answer", [True, False, HostileError("__eq__ refused")], ids=repr)
def test_a_probe_calls_hash_once_and_the_same_eqs_as_a_dict_in_the_same_order(answer: Any) -> None:
    calls: list[str] = []
    stored = Recording("s", calls)
    content = {"x": 0, stored: "v"}
    m = c_map(content)
    assert m._read_table_size == 2
    expected = {True: "v", False: "absent"}.get(answer, "raised")  # type: ignore[call-overload]
    seen = {}
    for name, target in (("dict", content), ("map", m), ("handle", m.handle())):
        calls.clear()
        probe = Probe(stored, answer, calls)
        try:
            got = target.get(probe, "absent")
        except HostileError:
            got = "raised"
        assert got == expected, name
        seen[name] = list(calls)
    # One hash, then the stored key's __eq__ and the reflected one. A probe whose path passes
    # the stored key's bucket twice before an empty one compares twice, in the dict as in the
    # table (the same probe sequence over the same layout): so the dict is the reference.
    assert seen["dict"][:3] == ["hash", "stored eq s", "eq Identity('s')"], seen
    assert seen["map"] == seen["handle"] == seen["dict"], seen


def test_a_probe_whose_hash_raises_raises_and_finds_nothing() -> None:
    class Bad:
        def __hash__(self) -> int:
            raise HostileError("__hash__ refused")

    m = c_map({"a": 1})
    for target in (m, m.handle()):
        with pytest.raises(HostileError):
            target.get(Bad())
        with pytest.raises(HostileError):
            target[Bad()] = 1
    assert dict(m.items()) == {"a": 1}


def test_the_table_keeps_its_keys_and_entries_whatever_happens_to_the_published_dict() -> None:
    # The published dict is never changed by ftmap; if it were (by hand, through the private
    # _read), the table still owns every key and entry it points to: lookups stay memory-safe
    # and see the content as published.
    m = c_map({f"k{i}": [i] for i in range(50)})
    h = m.handle()
    published, _ = m._read
    published.clear()
    gc.collect()
    for i in range(50):
        assert m[f"k{i}"] == h[f"k{i}"] == [i]
    h["k3"] = "stored"  # a store to a table entry is the entry's compare-and-swap
    assert m["k3"] == "stored"


@pytest.mark.thread_unsafe(reason="relies on gc.collect() of objects it alone created")
def test_a_cycle_through_the_table_is_collected() -> None:
    class Value:
        pass

    m = c_map({"a": 1})
    value = Value()
    value.map = m  # type: ignore[attr-defined]
    m["a"] = value
    h = m.handle()
    assert h["a"] is value  # the handle caches the read map that holds the entry
    value.handle = h  # type: ignore[attr-defined]
    assert m._read_table_size == 1
    gone = weakref.ref(m)
    del m, h, value
    gc.collect()
    assert gone() is None


def test_a_large_read_map() -> None:
    n = 100_000
    m = c_map({i: i for i in range(n)})
    h = m.handle()
    assert m._read_table_size == n
    assert all(h[i] == i for i in range(0, n, 7))
    assert all(m.get(str(i)) is None for i in range(0, n, 1009))


# -- the C map against the pure one, stored keys pure, probes hostile ------------------------------

_READS = ("load", "get", "get_default", "getitem", "contains")
# The plain keys but -1 and "", whose hashes are -2's and 0's: two stored keys of one hash
# leave the dict to do the lookups (tested above), and this machine is about the table.
_STORED = plain_keys().filter(lambda k: not ((type(k) is int and k == -1) or k == ""))
_OTHER_OPS = sorted(name for name in OPS if name != "repr")


class TableDifferential(RuleBasedStateMachine):
    """Every stored key is plain (but -1 and ""), so the C map always has its table; probes: any key.

    The reads use the hostile and re-entrant keys (raising and re-entering __eq__ on hash
    collisions with stored keys), through the C map and its handle; the pure map is the
    reference for results, exceptions and internals.
    """

    def __init__(self) -> None:
        super().__init__()
        self.reference = VARIANTS["python"]()
        self.c = VARIANTS["c"]()
        self.handle = self.c.handle()

    def _check(self, name: str, key: Any, value: Any, other: Any, via_map: bool) -> None:
        op = OPS[name]
        expected = run(self.reference, op, key, value, other)
        got = run(self.c if via_map else self.handle, op, key, value, other)
        where = f"{name}({key!r}) through the C {'map' if via_map else 'handle'}"
        assert got[1] == expected[1], f"{where}: raised {got[1]}, the pure map {expected[1]}"
        assert got[2] == expected[2], f"{where}: a hook's write took effect in one only"
        assert same(got[0], expected[0]), f"{where}: returned {got[0]!r}, the pure map {expected[0]!r}"

    @rule(
        name=st.sampled_from(_OTHER_OPS),
        key=_STORED,
        value=VALUES_AND_MARKERS,
        other=VALUES_AND_MARKERS,
        via_map=st.booleans(),
    )
    def operation(self, name: str, key: Any, value: Any, other: Any, via_map: bool) -> None:
        self._check(name, key, value, other, via_map)

    @rule(name=st.sampled_from(_READS), key=KEYS, value=VALUES_AND_MARKERS, via_map=st.booleans())
    def probe(self, name: str, key: Any, value: Any, via_map: bool) -> None:
        self._check(name, key, value, None, via_map)

    @invariant()
    def agree(self) -> None:
        check_invariants(self.c)
        assert same(internals(self.c), internals(self.reference)), (
            internals(self.c),
            internals(self.reference),
        )
        published, _ = self.c._read
        assert self.c._read_table_size == len(published)  # the table was built, and used


@pytest.mark.thread_unsafe(reason="hypothesis runs one state machine at a time")
def test_the_table_gives_the_pure_maps_results() -> None:
    within(600, lambda: run_state_machine_as_test(TableDifferential, settings=settings(SETTINGS)))
