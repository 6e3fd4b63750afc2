"""SyncMapHandle (issue 12): the map's single-key API through a per-thread handle, both implementations."""

from __future__ import annotations

import copy
import pickle
import threading
from collections.abc import MutableMapping
from typing import Any

import pytest

from ftmap import RecursiveUpdateError, _impl
from tests.hostile import EqRaises, HashRaises, HostileError
from tests.threads import InThread, within
from tests.unit.test_sync import check_invariants

MAPS = _impl.variants("SyncMap")
HANDLES = _impl.variants("SyncMapHandle")


@pytest.fixture(params=sorted(MAPS))
def impl(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make(impl: str, *args: Any, **kwargs: Any) -> Any:
    return MAPS[impl](*args, **kwargs)


def promoted(impl: str, **items: Any) -> Any:
    m = make(impl, items)
    list(m)  # promotes
    return m


def test_both_variants_exist_where_the_core_does() -> None:
    assert set(HANDLES) == set(MAPS)
    if _impl._any_core() is not None:
        assert "c" in HANDLES


def test_handle_is_the_variants_class_and_a_mutable_mapping(impl: str) -> None:
    m = make(impl)
    h = m.handle()
    assert type(h) is HANDLES[impl]
    assert isinstance(h, MutableMapping)
    assert h.map is m


def test_single_key_api(impl: str) -> None:
    m = make(impl, a=1)
    h = m.handle()
    assert h.load("a") == (1, True)
    assert h.load("x") == (None, False)
    assert h["a"] == 1 and h.get("a") == 1 and h.get("x") is None and h.get("x", 7) == 7
    assert "a" in h and "x" not in h
    h.store("b", 2)
    h["c"] = 3
    assert m.load("b") == (2, True) and m["c"] == 3
    assert h.swap("a", 10) == (1, True)
    assert h.swap("d", 4) == (None, False)
    assert h.load_or_store("a", 99) == (10, True)
    assert h.load_or_store("e", 5) == (5, False)
    assert h.setdefault("e", 6) == 5 and h.setdefault("f", 6) == 6
    assert h.load_and_delete("f") == (6, True)
    assert h.load_and_delete("f") == (None, False)
    h.delete("e")
    h.delete("e")
    assert "e" not in m
    assert h.compare_and_swap("a", 10, 11) is True
    assert h.compare_and_swap("a", 10, 12) is False
    assert h.compare_and_swap("zz", 10, 12) is False
    assert h.compare_and_delete("a", 99) is False
    assert h.compare_and_delete("a", 11) is True
    assert h.pop("b") == 2 and h.pop("b", "dflt") == "dflt"
    with pytest.raises(KeyError):
        h.pop("b")
    del h["c"]
    with pytest.raises(KeyError):
        del h["c"]
    with pytest.raises(KeyError):
        h["c"]
    assert dict(m) == {"d": 4}
    check_invariants(m)


def test_whole_map_operations_go_to_the_map(impl: str) -> None:
    m = make(impl, a=1, b=2)
    h = m.handle()
    assert len(h) == 2 and bool(h) and sorted(h) == ["a", "b"]
    assert sorted(h.items()) == [("a", 1), ("b", 2)] and sorted(h.values()) == [1, 2]
    assert h == {"a": 1, "b": 2} and h == m and h == m
    assert repr(h) == f"SyncMapHandle({m!r})"
    assert h.stats() == m.stats()
    seen: list[Any] = []
    h.range(lambda k, v: seen.append((k, v)))
    assert sorted(seen) == [("a", 1), ("b", 2)]
    c = h.copy()
    assert type(c) is type(m) and c == m
    h.update({"c": 3}, d=4)
    assert m["c"] == 3 and m["d"] == 4
    k, _v = h.popitem()
    assert k not in m
    h.clear()
    assert len(m) == 0 and not h
    with pytest.raises(TypeError):
        hash(h)


def test_a_handle_cannot_be_pickled_or_copied(impl: str) -> None:
    h = make(impl, a=1).handle()
    with pytest.raises(TypeError, match="pickle the map"):
        pickle.dumps(h)
    with pytest.raises(TypeError):
        copy.copy(h)


@pytest.mark.parametrize(
    "call", ["h.load()", "h.store('a')", "h.get()", "h.get('a', 1, 2)", "h.load(k='a')", "h.store('a', v=1)"]
)
def test_argument_errors_are_the_pure_handles(call: str) -> None:
    def outcome(impl: str) -> str:
        h = make(impl, a=1).handle()
        with pytest.raises(TypeError) as error:
            eval(call, {"h": h})
        return str(error.value)

    expected = outcome("python")
    assert "SyncMapHandle" in expected
    for impl in MAPS:
        assert outcome(impl) == expected


def test_keywords_work(impl: str) -> None:
    h = make(impl, a=1).handle()
    assert h.load(key="a") == (1, True)
    h.store(key="b", value=2)
    assert h.map["b"] == 2


def test_the_handle_sees_promotions_dirty_keys_and_clear(impl: str) -> None:
    m = promoted(impl, a=1)
    h = m.handle()
    assert h["a"] == 1
    m["new"] = 2  # a dirty-only key: the read map is republished amended
    assert h["new"] == 2 and h.load("new") == (2, True)
    for _ in range(5):
        h.load("absent")  # misses promote
    assert m.stats().amended is False
    assert h["new"] == 2
    m.clear()
    assert h.load("a") == (None, False) and "new" not in h
    h["a"] = 5
    assert m["a"] == 5
    check_invariants(m)


def test_stores_to_read_map_keys_do_not_take_the_mutex(impl: str) -> None:
    m = promoted(impl, a=1)
    h = m.handle()
    mu = m._mu
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        mu.acquire()
        held.set()
        release.wait(10)
        mu.release()

    t = InThread(hold)
    held.wait(10)
    try:
        within(5, lambda: (h.store("a", 2), h.__setitem__("a", 3), h.load("a"), h.swap("a", 4)))
        assert within(5, lambda: h.compare_and_swap("a", 4, 5)) is True
    finally:
        release.set()
        t.join()
    assert m["a"] == 5


def test_errors_leave_the_map_intact(impl: str) -> None:
    m = promoted(impl, a=1)
    h = m.handle()
    for key in (HashRaises(), EqRaises("a")):
        for op in (h.load, h.get, h.__getitem__, h.__contains__, h.load_and_delete, h.delete):
            with pytest.raises(HostileError):
                op(key)
        for op2 in (h.store, h.__setitem__, h.swap, h.load_or_store):
            with pytest.raises(HostileError):
                op2(key, 2)
    with pytest.raises(TypeError):
        h.store([], 1)
    assert dict(m) == {"a": 1}
    check_invariants(m)


def test_reentrant_writes_follow_the_maps_rule(impl: str) -> None:
    m = make(impl)
    h = m.handle()
    outcome: list[Any] = []

    class Reenters:
        def __hash__(self) -> int:
            return 7

        def __eq__(self, other: object) -> bool:
            if m._mu._is_owned() and not outcome:
                try:
                    h.store("fresh", 1)
                except RecursiveUpdateError as error:
                    outcome.append(error)
                outcome.append(h.load("x"))
                outcome.append(m.handle().get("x"))
            return self is other

        __ne__ = object.__ne__

    k1, k2 = Reenters(), Reenters()
    h.store(k1, 1)
    h.store(k2, 2)  # under the mutex: the dict compares k2 with k1
    assert isinstance(outcome[0], RecursiveUpdateError) and "store" in str(outcome[0])
    assert outcome[1] == (None, False)
    assert "fresh" not in m
    check_invariants(m)


def test_a_shared_handle_is_correct_from_many_threads(impl: str) -> None:
    m = make(impl)
    h = m.handle()
    n, rounds = 4, 300
    barrier = threading.Barrier(n)

    def worker(t: int) -> None:
        barrier.wait(10)
        for i in range(rounds):
            key = f"{t}-{i % 20}"
            h[key] = i
            assert h[key] == i, "read-your-writes through a shared handle"
            assert h.load_or_store(key, -1) == (i, True)
            if i % 7 == 0:
                assert h.load_and_delete(key) == (i, True)
                assert key not in h
            if i % 50 == 0:
                list(m)  # promote: republish the read map under the handle

    threads = [InThread(lambda t=t: worker(t), name=f"w{t}") for t in range(n)]
    for t in threads:
        t.join(60)
    for t in range(n):
        for j in range(20):
            key = f"{t}-{j}"
            expected = max(i for i in range(rounds) if i % 20 == j)
            assert m.get(key) == (None if expected % 7 == 0 else expected)
    check_invariants(m)


def test_handles_of_many_threads_see_one_map(impl: str) -> None:
    m = make(impl, {f"k{i}": 0 for i in range(50)})
    barrier = threading.Barrier(3)

    def writer() -> None:
        h = m.handle()
        barrier.wait(10)
        for i in range(1, 400):
            h[f"k{i % 50}"] = i
            h[f"new{i}"] = i  # republishes the read map now and then

    def reader() -> int:
        h = m.handle()
        barrier.wait(10)
        last: dict[str, int] = {}
        for _ in range(2000):
            for i in (0, 17, 33):
                v = h[f"k{i}"]
                assert v >= last.get(f"k{i}", 0), "a value went back in time"
                last[f"k{i}"] = v
        return len(last)

    ts = [InThread(writer), InThread(reader), InThread(reader)]
    for t in ts:
        t.join(60)
    h = m.handle()
    assert all(h[f"new{i}"] == i for i in range(1, 400))
    check_invariants(m)


def test_pure_handle_follows_the_published_read_map() -> None:
    m = MAPS["python"]()
    assert m._pub is None  # nothing published until the first handle
    h = m.handle()
    assert m._pub is not None and m._pub.followers() >= 1
    m["x"] = 1  # builds the dirty map: a publish flags the handle
    assert h.cell[0] is True
    assert h["x"] == 1  # a miss: promotes, another publish
    assert h.load("x") == (1, True) and h.cell[0] is False  # refreshed, and nothing published since
    h.close()
    m["y"] = 2
    assert h["y"] == 2  # closed handles still work (they refresh every time)


def test_the_class_itself_makes_a_handle_of_its_own_implementation(impl: str) -> None:
    m = make(impl, a=1)
    h = HANDLES[impl](m)
    assert h.map is m and h["a"] == 1
    other = "python" if impl == "c" else "c"
    if other in MAPS and impl == "c":
        with pytest.raises(TypeError):
            HANDLES["c"](MAPS["python"]())
