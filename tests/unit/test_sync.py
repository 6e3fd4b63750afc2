"""SyncMap: Go's API, the promotion machinery, and which paths take no lock."""

from __future__ import annotations

import math
from typing import Any

import pytest

from ftmap import SyncMap, SyncMapStats
from tests.hostile import EqRaises, HashRaises, HostileError
from tests.threads import within


def check_invariants(m: SyncMap[Any, Any]) -> None:
    """Fail unless SyncMap's internal invariants hold and no lock is held (call it with the map at rest).

    Works from ``m._debug_state()``, which the C core provides in the same shape:
    - the dirty map exists exactly when the read map is amended;
    - without a dirty map, no entry is expunged and no miss is counted;
    - an expunged entry holds no value; no entry of the dirty map is expunged;
    - with a dirty map, each read-map entry is either expunged and absent from the
      dirty map, or is the dirty map's entry for the same key object;
    - no entry appears twice in one map; no entry lock and not the mutex is held.
    """
    state = m._debug_state()
    assert not state.mutex_held, "the mutex is held"
    assert not state.mutex_mine, "the mutex is held by this thread"
    dirty = state.dirty or ()
    held = [e for e in (*state.read, *dirty) if e.lock_held]
    assert not held, f"entry locks held: {held}"
    assert state.amended == (state.dirty is not None), f"amended={state.amended}, dirty={state.dirty}"
    assert state.misses >= 0 and state.promotions >= 0
    read_ids = {e.entry_id: e for e in state.read}
    assert len(read_ids) == len(state.read), "an entry twice in the read map"
    bad = [e for e in (*state.read, *dirty) if e.expunged and e.live]
    assert not bad, f"expunged entries with a value: {bad}"
    if state.dirty is None:
        assert state.misses == 0, f"{state.misses} misses counted without a dirty map"
        expunged = [e for e in state.read if e.expunged]
        assert not expunged, f"expunged entries without a dirty map: {expunged}"
        return
    dirty_ids = {e.entry_id: e for e in state.dirty}
    assert len(dirty_ids) == len(state.dirty), "an entry twice in the dirty map"
    expunged = [e for e in state.dirty if e.expunged]
    assert not expunged, f"expunged entries in the dirty map: {expunged}"
    for e in state.read:
        if e.expunged:
            assert e.entry_id not in dirty_ids, f"expunged, yet in the dirty map: {e}"
        else:
            assert e.entry_id in dirty_ids, (
                f"neither expunged nor in the dirty map (a store to it would be lost): {e}"
            )
            assert dirty_ids[e.entry_id].key is e.key, f"in the dirty map under another key object: {e}"


def promoted(**items: int) -> SyncMap[str, int]:
    """A map whose keys are all in the read map (nothing amended)."""
    m: SyncMap[str, int] = SyncMap(items)
    list(m)  # iteration promotes an amended dirty map (len does not)
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


def test_a_map_built_from_a_mapping_starts_promoted() -> None:
    # Go's Store never promotes: built key by key, every key would stay in the dirty map and
    # every store to it would take the mutex until misses promoted it. The constructor
    # promotes once, so stores to the keys it was given take no mutex from the start.
    assert SyncMap().stats() == SyncMapStats(promotions=0, misses=0, read_size=0, dirty_size=0, amended=False)
    m: SyncMap[str, int] = SyncMap({"a": 1}, b=2)
    assert m.stats() == SyncMapStats(promotions=1, misses=0, read_size=2, dirty_size=0, amended=False)
    with m._mu:  # held by this thread: a store that needed it would block
        within(10, lambda: m.store("a", 3))
        assert within(10, lambda: m.swap("b", 4)) == (2, True)
    assert m == {"a": 3, "b": 4}
    m["c"] = 5  # a new key: the dirty map, as in Go
    assert m.stats() == SyncMapStats(promotions=1, misses=0, read_size=2, dirty_size=3, amended=True)


def test_a_read_hit_writes_no_shared_state() -> None:
    m = promoted(a=1)
    before = (m.stats(), m._read, m._dirty)
    for _ in range(100):
        m.load("a")
        _ = m["a"]
    assert (m.stats(), m._read, m._dirty) == before


# -- user code that raises while the map changes: all or nothing (issue 13, break 3) ----


class Armed:
    """A key that hashes like its name until armed; then its __hash__ raises ``error``."""

    def __init__(self, name: str, error: type[BaseException] = HostileError) -> None:
        self.name = name
        self.error = error
        self.armed = False

    def __hash__(self) -> int:
        if self.armed:
            raise self.error(f"__hash__ of {self.name} refused")
        return hash(self.name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Armed) and other.name == self.name

    def __repr__(self) -> str:
        return f"Armed({self.name!r})"


def deleted_in_read(bad: Armed, *live: Any) -> SyncMap[Any, int]:
    """A promoted map (no dirty map) whose read map holds deleted keys "p0", bad, "p2", then "live", *live."""
    m: SyncMap[Any, int] = SyncMap()
    for key in ("p0", bad, "p2", "live", *live):
        m[key] = 1
    list(m)
    del m["p0"], m[bad], m["p2"]
    assert m.stats().dirty_size == 0 and not m.stats().amended
    return m


def test_a_deleted_key_whose_hash_raises_never_fails_a_store_of_another_key() -> None:
    # Building the dirty map used to re-hash every key: the store of a new key raised the
    # old key's error, and left "p0" expunged with no dirty map.
    bad = Armed("bad")
    m = deleted_in_read(bad)
    bad.armed = True
    m["new"] = 2  # builds the dirty map: bad cannot be removed from it, so it stays as a deleted entry
    check_invariants(m)
    m["p0"] = 3  # expunged by that build, put back
    check_invariants(m)
    assert dict(m.items()) == {"live": 1, "new": 2, "p0": 3}
    bad.armed = False
    m[bad] = 4
    list(m)  # promote
    check_invariants(m)
    assert dict(m.items()) == {"live": 1, "new": 2, "p0": 3, bad: 4}


def test_a_live_key_whose_hash_raises_never_fails_a_store_of_another_key() -> None:
    bad = Armed("bad")
    m: SyncMap[Any, int] = SyncMap({"a": 1})
    m[bad] = 2
    list(m)
    del m["a"]
    bad.armed = True  # live keys are copied with their stored hash, never re-hashed
    m["new"] = 3
    check_invariants(m)
    bad.armed = False
    assert dict(m.items()) == {bad: 2, "new": 3}


def test_a_base_exception_while_the_dirty_map_is_built_undoes_every_expunge() -> None:
    # The AssertionError: a __hash__ raising mid-build left "p0" expunged with no
    # dirty map, and the next store to "p0" hit `assert self._dirty is not None`.
    # The old build re-hashed the live keys (live_bad raises there); this one removes the
    # deleted keys (bad raises there). Either way a BaseException propagates mid-build.
    bad, live_bad = Armed("bad", KeyboardInterrupt), Armed("live-bad", KeyboardInterrupt)
    m = deleted_in_read(bad, live_bad)
    bad.armed = live_bad.armed = True
    with pytest.raises(KeyboardInterrupt):
        m["new"] = 2
    bad.armed = live_bad.armed = False
    m["p0"] = 3  # raised AssertionError: expunged, yet no dirty map to put it back in
    check_invariants(m)
    m["new"] = 2
    check_invariants(m)
    assert dict(m.items()) == {"live": 1, "p0": 3, "new": 2, live_bad: 1}


@pytest.mark.parametrize(
    "operation",
    [
        lambda m, k: m.store(k, 1),
        lambda m, k: m.swap(k, 1),
        lambda m, k: m.load_or_store(k, 1),
        lambda m, k: m.setdefault(k, 1),
        lambda m, k: m.load(k),
        lambda m, k: m.get(k),
        lambda m, k: k in m,
        lambda m, k: m.load_and_delete(k),
        lambda m, k: m.compare_and_swap(k, 1, 2),
        lambda m, k: m.compare_and_delete(k, 1),
    ],
)
@pytest.mark.parametrize(
    "bad", [HashRaises(), EqRaises(0), []], ids=["hash-raises", "eq-raises", "unhashable"]
)
def test_a_bad_key_raises_on_every_path_and_changes_nothing(operation: Any, bad: Any) -> None:
    for amended in (False, True):
        m: SyncMap[Any, int] = SyncMap({0: 5, "x": 1})  # 0 collides with EqRaises(0)
        list(m)
        if amended:
            m["y"] = 2
        before = (dict(m.items()), m.stats())
        with pytest.raises((HostileError, TypeError)):
            operation(m, bad)
        check_invariants(m)
        assert (dict(m.items()), m.stats()) == before


# -- len and bool never promote (issue 13, break 3) ---------------------------------------


def test_len_and_bool_count_the_dirty_map_without_promoting() -> None:
    m = promoted(a=1, b=2)
    m["c"] = 3
    del m["a"]
    stats = m.stats()
    assert len(m) == 2 and bool(m)
    assert m.stats() == stats  # no promotion, no miss
    m.clear()
    assert len(m) == 0 and not m
    m["d"] = 4
    assert len(m) == 1 and m and m.stats().promotions == stats.promotions


def test_store_then_bool_in_a_loop_never_promotes() -> None:
    # `if m:` promoted the dirty map, and the next new key rebuilt it from the whole read
    # map: O(n) per step, quadratic in all (8,000 keys: 42 s). The timing is checked in
    # the stress tests; here, the cause: promotions.
    m: SyncMap[int, int] = SyncMap()
    for i in range(500):
        m[i] = i
        assert m
        assert len(m) == i + 1
    assert m.stats().promotions == 0


def test_bool_of_a_read_map_of_deleted_keys_looks_at_the_dirty_map() -> None:
    m = promoted(a=1)
    del m["a"]
    assert not m
    m["b"] = 2  # only in the dirty map
    assert m and len(m) == 1
    del m["b"]
    assert not m and len(m) == 0


# -- nothing dropped under a lock: __del__ runs outside ---------------------------------------


class Finalizer:
    """A value (or key) whose __del__ runs ``action`` once."""

    def __init__(self, action: Any) -> None:
        self.action = action

    def __del__(self) -> None:
        action, self.action = self.action, None
        if action is not None:
            action()


@pytest.mark.parametrize(
    "replace",
    [
        lambda m: m.store("k", 2),
        lambda m: m.swap("k", 2),
        lambda m: m.load_and_delete("k"),
        lambda m: m.delete("k"),
        lambda m: m.compare_and_swap("k", m["k"], 2),
        lambda m: m.compare_and_delete("k", m["k"]),
        lambda m: m.clear(),
    ],
    ids=["store", "swap", "load_and_delete", "delete", "compare_and_swap", "compare_and_delete", "clear"],
)
@pytest.mark.parametrize("where", ["read", "dirty"])
def test_a_value_whose_del_writes_the_same_key_does_not_deadlock(replace: Any, where: str) -> None:
    # Replacing the value under the entry lock ran its __del__ there; a __del__ that wrote
    # the same key waited for that lock forever. All on one thread: on 3.13t an object
    # freed by a thread other than its creator's is finalized later, by its creator.
    m: SyncMap[str, Any] = SyncMap()

    def scenario() -> None:
        if where == "read":
            m["k"] = 0
            list(m)
        m["other"] = 0  # amended: "k" stays dirty-only when where == "dirty"
        m["k"] = Finalizer(lambda: m.store("k", "from __del__"))
        replace(m)

    within(10, scenario)
    check_invariants(m)
    assert m.get("k") == "from __del__"


def test_keys_dropped_by_clear_and_promotion_run_their_del_outside_the_mutex() -> None:
    m: SyncMap[Any, int] = SyncMap()

    def clear() -> None:
        m[Finalizer(lambda: m.store("after clear", 1))] = 0
        m.clear()  # the old read map is dropped after the mutex is released

    within(10, clear)
    assert m["after clear"] == 1

    def promote() -> None:
        key = Finalizer(lambda: m.store("after promotion", 1))
        m[key] = 0
        list(m)
        del m[key], key  # only the read map holds the key now
        m["new"] = 0  # the rebuild expunges it: only the read map still holds it
        list(m)  # promotion drops the old read map, and the key with it

    within(10, promote)
    assert m["after promotion"] == 1
    check_invariants(m)
