"""ShardedMap after an asynchronous exception at every point where one can land (issue 13, break 6).

The same deterministic injection as tests/unit/test_unsafe_async.py: a profile
hook raises ``Injected`` at the n-th delivery point (function entry, return,
return from a C call) for every n. After each: no shard lock is held (by
this thread, or for another), this thread is not marked as holding one, and
the map is as before or as after the operation (bulk operations: every key
as before or as after, each whole).
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable
from typing import Any

import pytest

from ftmap import DELETE, MISSING, ShardedMap
from tests.threads import within
from tests.unit.test_unsafe_async import Interruption, PyKey, interrupt_everywhere

pytestmark = pytest.mark.thread_unsafe(reason="sys.setprofile from several threads at once loses events")

SHARDS = 4


def initial() -> dict[Any, Any]:
    return {"a": 1, "b": 2, PyKey("p"): 3, PyKey("q"): 4, 5: 5}


def inc(old: Any) -> Any:
    return 1 if old is MISSING else old + 1


def add(exists: bool, old: Any, new: Any) -> Any:
    return (old or 0) + new


def always(key: Any, value: Any, exists: bool) -> bool:
    return True


def factory(key: Any) -> Any:
    return [key]


WRITES: dict[str, Callable[[Any], object]] = {
    "set new": lambda m: m.__setitem__(PyKey("new"), 9),
    "set existing": lambda m: m.__setitem__(PyKey("p"), 9),
    "delete": lambda m: m.__delitem__(PyKey("q")),
    "pop": lambda m: m.pop(PyKey("p")),
    "pop default": lambda m: m.pop(PyKey("zz"), None),
    "setdefault": lambda m: m.setdefault(PyKey("s"), 7),
    "set_if_absent": lambda m: m.set_if_absent(PyKey("s"), 7),
    "replace": lambda m: m.replace(PyKey("p"), 3, 30),
    "remove": lambda m: m.remove(PyKey("q"), 4),
    "compute": lambda m: m.compute(PyKey("p"), inc),
    "compute new": lambda m: m.compute(PyKey("c"), inc),
    "compute delete": lambda m: m.compute("a", lambda old: DELETE),
    "compute_if_absent": lambda m: m.compute_if_absent(PyKey("f"), factory),
    "compute_if_present": lambda m: m.compute_if_present(PyKey("q"), inc),
    "merge": lambda m: m.merge(PyKey("p"), 10, operator.add),
    "merge new": lambda m: m.merge(PyKey("m"), 10, operator.add),
    "upsert": lambda m: m.upsert(PyKey("q"), 10, add),
    "remove_if": lambda m: m.remove_if(PyKey("p"), always),
    "mset": lambda m: m.mset({PyKey("x"): 1, "a": 10, PyKey("p"): 30, 5: 50, "y": 2}),
    "update": lambda m: m.update([(PyKey("x"), 1), ("a", 10)], y=2),
    "ior": lambda m: m.__ior__({PyKey("x"): 1, 5: 50}),
    "clear": lambda m: m.clear(),
    "popitem": lambda m: m.popitem(),
}
BULK = {"mset", "update", "ior", "clear"}

READS: dict[str, Callable[[Any], object]] = {
    "get": lambda m: m.get(PyKey("p")),
    "getitem": lambda m: m[PyKey("q")],
    "contains": lambda m: PyKey("zz") in m,
    "len": len,
    "iterate": list,
    "items": lambda m: list(m.items()),
    "values": lambda m: list(m.values()),
    "repr": repr,
    "compare": lambda m: m == initial(),
    "copy": lambda m: m.copy(),
    "copy.copy": copy.copy,
    "or": lambda m: m | {PyKey("o"): 1},
    "compute_if_absent present": lambda m: m.compute_if_absent(PyKey("p"), factory),
    "a whole-map read inside a callback": lambda m: m.compute("a", lambda old: len(list(m)) + len(repr(m))),
}


def key_per_shard(m: ShardedMap[Any, Any]) -> list[int]:
    found: dict[int, int] = {}
    i = 1000
    while len(found) < m.shards:
        found.setdefault(m.shard_index(i), i)
        i += 1
    return list(found.values())


def assert_unlocked_and_usable(m: ShardedMap[Any, Any]) -> None:
    # Both implementations' test hook: the pure map reports its cells and the RLocks this thread
    # owns; the C map this thread's held-lock records and every PyMutex held by any thread.
    state = m._debug_state()  # type: ignore[attr-defined]
    assert not state["marked"], f"a thread is still marked as holding a shard lock: {state['marked']}"
    assert not state["locked"], f"a shard lock leaked: {state['locked']}"
    probes = key_per_shard(m)

    def probe() -> None:  # another thread takes every shard's lock
        for key in probes:
            m[key] = 1
            assert m.merge(key, 1, operator.add) == 2
            del m[key]
        list(m)

    within(10, probe)
    m.compute(probes[0], lambda old: 1)  # and so does this thread: it is not marked
    del m[probes[0]]


def outcome(operation: Callable[[Any], object]) -> dict[Any, Any]:
    """The content after an uninterrupted operation."""
    m = ShardedMap(initial(), shards=SHARDS)
    operation(m)
    return dict(m.items())


def same(a: Any, b: Any) -> bool:
    return bool(a is b or a == b)


@pytest.mark.parametrize("name", list(WRITES))
def test_a_write_interrupted_anywhere_leaves_no_lock_and_a_consistent_map(name: str) -> None:
    operation = WRITES[name]
    before, after = initial(), outcome(operation)

    def check(run: Interruption[ShardedMap[Any, Any]]) -> None:
        m = run.state
        assert_unlocked_and_usable(m)
        content = dict(m.items())
        where = f"point {run.point}: {content}"
        if not run.escaped:
            if name == "popitem":
                assert len(content) == len(before) - 1 and content.items() <= before.items(), where
            else:
                assert content == after, where
        elif name in BULK:
            # atomic per key: each key as before or as after
            assert set(content) <= set(before) | set(after), where
            for key, value in content.items():
                assert any(same(value, side[key]) for side in (before, after) if key in side), where
            assert all(k in content for k in before if k in after), where
        elif name == "popitem":
            one_less = len(content) == len(before) - 1 and content.items() <= before.items()
            assert content == before or one_less, where
        else:
            assert content in (before, after), where

    assert interrupt_everywhere(lambda: ShardedMap(initial(), shards=SHARDS), operation, check) >= 3


@pytest.mark.parametrize("name", list(READS))
def test_a_read_interrupted_anywhere_changes_nothing_and_holds_nothing(name: str) -> None:
    def check(run: Interruption[ShardedMap[Any, Any]]) -> None:
        assert_unlocked_and_usable(run.state)
        content = dict(run.state.items())
        if name == "a whole-map read inside a callback" and not run.escaped:
            assert content["a"] > 1
        else:
            assert content in (initial(), outcome(READS[name])), f"point {run.point}"

    assert interrupt_everywhere(lambda: ShardedMap(initial(), shards=SHARDS), READS[name], check) >= 2


def test_construction_interrupted_anywhere_leaves_a_usable_map() -> None:
    built: list[ShardedMap[Any, Any]] = []

    def build(_: None) -> None:
        built.clear()
        m = ShardedMap.__new__(ShardedMap)
        built.append(m)
        m.__init__(initial(), shards=SHARDS)  # type: ignore[misc]

    def check(run: Interruption[None]) -> None:
        if not built:
            return
        m = built[0]
        try:
            shards = m._debug_state()["shards"]  # type: ignore[attr-defined]
        except AttributeError:
            return  # interrupted before the map had its fields: there is no map to use
        if shards == SHARDS:
            assert_unlocked_and_usable(m)
            assert dict(m.items()).items() <= initial().items()

    assert interrupt_everywhere(lambda: None, build, check) >= 10
