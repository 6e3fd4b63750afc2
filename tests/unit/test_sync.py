"""SyncMap: Go's API, the promotion machinery, and which paths take no lock."""

from __future__ import annotations

import math
from typing import Any

import pytest

from ftmap import SyncMap, SyncMapStats
from tests.threads import within


def promoted(**items: int) -> SyncMap[str, int]:
    """A map whose keys are all in the read map (nothing amended)."""
    m: SyncMap[str, int] = SyncMap(items)
    len(m)  # iteration promotes an amended dirty map
    assert not m.stats().amended
    return m


# -- Go's API ---------------------------------------------------------------------


def test_load_store_delete() -> None:
    m: SyncMap[str, int | None] = SyncMap()
    assert m.load("k") == (None, False)
    m.store("k", 1)
    assert m.load("k") == (1, True)
    m.store("k", None)
    assert m.load("k") == (None, True)  # a stored None is present
    m.delete("k")
    m.delete("k")
    assert m.load("k") == (None, False)


def test_load_or_store_and_load_and_delete() -> None:
    m: SyncMap[str, int] = SyncMap()
    assert m.load_or_store("k", 1) == (1, False)
    assert m.load_or_store("k", 2) == (1, True)
    assert m.load_and_delete("k") == (1, True)
    assert m.load_and_delete("k") == (None, False)


def test_swap() -> None:
    m: SyncMap[str, int] = SyncMap()
    assert m.swap("k", 1) == (None, False)
    assert m.swap("k", 2) == (1, True)
    assert m["k"] == 2


def test_compare_and_swap_and_delete_compare_by_identity_then_equality() -> None:
    nan = math.nan
    value = [1, 2]  # unhashable values are fine
    m: SyncMap[str, Any] = SyncMap(n=nan, v=value)
    assert m.compare_and_swap("n", nan, 1.0)  # identity: nan != nan, yet it is the same object
    assert not m.compare_and_swap("n", 2.0, 3.0) and m["n"] == 1.0
    assert m.compare_and_swap("v", [1, 2], [3])  # equality
    assert m["v"] == [3]
    assert not m.compare_and_swap("absent", None, 1) and "absent" not in m
    assert not m.compare_and_delete("v", [4]) and m.compare_and_delete("v", [3])
    assert "v" not in m and not m.compare_and_delete("v", [3])


def test_compare_and_swap_whose_eq_uses_the_map_does_not_deadlock() -> None:
    m: SyncMap[str, Any] = SyncMap()

    class Reentrant:
        def __eq__(self, other: object) -> bool:
            m.load("k")
            m.store("other", 1)
            return True

        __hash__ = object.__hash__

    m.store("k", Reentrant())
    assert within(10, lambda: m.compare_and_swap("k", object(), "new"))
    assert m["k"] == "new" and m["other"] == 1


def test_range_visits_each_key_once_and_stops_on_false() -> None:
    m = SyncMap({i: i * 10 for i in range(10)})
    seen: list[tuple[int, int]] = []
    m.range(lambda k, v: seen.append((k, v)))
    assert sorted(seen) == [(i, i * 10) for i in range(10)]
    visited: list[int] = []
    m.range(lambda k, v: visited.append(k) or len(visited) < 3)
    assert len(visited) == 3


def test_range_callback_may_use_the_map_and_its_exception_propagates() -> None:
    m = SyncMap({i: i for i in range(5)})

    def grow(key: int, value: int) -> bool:
        m.store(key + 100, value)
        m.delete(key)
        return True

    within(10, lambda: m.range(grow))
    assert sorted(m) == [100, 101, 102, 103, 104]

    def fail(key: int, value: int) -> bool:
        raise ValueError("from the callback")

    with pytest.raises(ValueError, match="from the callback"):
        m.range(fail)
    m.store(1, 1)
    assert m[1] == 1 and len(m) == 6


def test_iteration_while_this_thread_writes_never_raises_nor_repeats() -> None:
    m = SyncMap({i: i for i in range(100)})
    seen = []
    for key in m:
        seen.append(key)
        m.store(key + 1000, 0)
        m.delete(key)
    assert sorted(seen) == list(range(100))


# -- the promotion machinery --------------------------------------------------------


def test_new_keys_go_to_the_dirty_map_and_misses_promote_it() -> None:
    m = promoted(a=1)
    m["b"] = 2
    assert m.stats() == SyncMapStats(promotions=1, misses=0, read_size=1, dirty_size=2, amended=True)
    m.load("b")  # a miss: found only in dirty
    assert m.stats().misses == 1 and m.stats().amended
    m.load("nope")  # misses count absent keys too; 2 misses >= 2 dirty entries: promoted
    assert m.stats() == SyncMapStats(promotions=2, misses=0, read_size=2, dirty_size=0, amended=False)
    for _ in range(10):
        assert m.load("b") == (2, True)  # read hits: no misses
    assert m.stats().misses == 0


def test_deleted_then_restored_key_survives_the_next_promotion() -> None:
    # delete leaves nil in read; the next new key builds dirty and expunges it;
    # storing it again must unexpunge it into dirty, or the promotion would lose it.
    m = promoted(a=1, b=2)
    del m["a"]
    m["c"] = 3  # dirty is built from read: "a" is expunged, not copied
    assert m.stats().dirty_size == 2
    m["a"] = 10  # unexpunged and put back in dirty
    assert m.stats().dirty_size == 3
    list(m)  # promote
    assert m == {"a": 10, "b": 2, "c": 3} and not m.stats().amended


def test_clear_resets_read_dirty_and_misses() -> None:
    m = promoted(a=1)
    m["b"] = 2
    m.load("b")
    m.clear()
    assert m.stats() == SyncMapStats(promotions=1, misses=0, read_size=0, dirty_size=0, amended=False)
    assert m == {} and m.load("a") == (None, False)
    m.clear()  # already empty: nothing to do


# -- what takes no lock ---------------------------------------------------------------


def test_read_hit_and_store_to_a_promoted_key_take_no_mutex() -> None:
    m = promoted(a=1)
    with m._mu:  # held by this thread: anything that needs it would block
        assert within(10, lambda: m.load("a")) == (1, True)
        assert within(10, lambda: m.get("a")) == 1
        within(10, lambda: m.store("a", 2))
        assert within(10, lambda: m.compare_and_swap("a", 2, 3))
        assert within(10, lambda: m.load_or_store("a", 9)) == (3, True)
        assert within(10, lambda: m.load("not-there")) == (None, False)  # not amended: no lock
    assert m["a"] == 3


def test_a_read_hit_writes_no_shared_state() -> None:
    m = promoted(a=1)
    before = (m.stats(), m._read, m._dirty)
    for _ in range(100):
        m.load("a")
        _ = m["a"]
    assert (m.stats(), m._read, m._dirty) == before
