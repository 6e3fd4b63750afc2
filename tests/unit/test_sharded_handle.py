"""ShardedMapHandle (issue 12): the per-thread handle, through both implementations.

Every test runs against each implementation importable here (the pure map's handle and, where
the C core imports, the C map's handle, even under FTMAP_PURE_PYTHON=1). The handle must give
the map's exact results, exceptions and messages; share the map's re-entrancy rules (a callback
may read the map or a handle, never write either: RecursiveUpdateError, never a deadlock) and
marker rules; stay correct when another thread uses it; and refuse pickling and copying.
"""

from __future__ import annotations

import copy
import gc
import operator
import pickle
import threading
import weakref
from collections.abc import Callable, MutableMapping
from typing import Any

import pytest

import ftmap
from ftmap import DELETE, MISSING, RecursiveUpdateError, _impl, _sharded
from ftmap._fnv import shard_of
from tests.threads import InThread, within

MAPS = _impl.variants("ShardedMap")
HANDLES = _impl.variants("ShardedMapHandle")


@pytest.fixture(params=list(MAPS))
def impl(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


def make(impl: str, *args: Any, **kwargs: Any) -> Any:
    return MAPS[impl](*args, **kwargs)


def test_the_registered_classes() -> None:
    assert set(HANDLES) == set(MAPS)
    assert HANDLES["python"].__module__ == "ftmap._sharded"
    if "c" in HANDLES:
        assert HANDLES["c"].__module__ == "ftmap._sharded_c"
        assert HANDLES["c"].__mro__[1].__name__ == "ShardedMapHandleBase"
    selected = ftmap.ShardedMapHandle
    assert selected is HANDLES["c" if _impl.implementation_of("ShardedMap") == "c" else "python"]
    assert "ShardedMapHandle" in ftmap.__all__


def test_handle_is_a_mutable_mapping_of_its_map(impl: str) -> None:
    m = make(impl, {"a": 1})
    h = m.handle()
    assert type(h) is HANDLES[impl]
    assert isinstance(h, MutableMapping)
    assert h.map is m
    assert h == m and h == {"a": 1} and m == h and h == m.handle()
    assert repr(h) == f"ShardedMapHandle({m!r})"
    with pytest.raises(TypeError):
        hash(h)


def test_a_handle_needs_its_own_implementations_map(impl: str) -> None:
    for other in MAPS:
        if other != impl:
            with pytest.raises(TypeError, match="ShardedMapHandle needs"):
                HANDLES[impl](make(other))
    with pytest.raises(TypeError, match="ShardedMapHandle needs"):
        HANDLES[impl]({})


# -- the single-key API: the same answers as the map ---------------------------------------


class HashKeyError:
    """A key whose __hash__ raises KeyError: the caller's error, never taken for a cache miss."""

    def __hash__(self) -> int:
        raise KeyError("__hash__ refused")


OPERATIONS: list[tuple[str, Callable[[Any], Any]]] = [
    ("getitem", lambda t: t["a"]),
    ("getitem missing", lambda t: t["zz"]),
    ("get", lambda t: t.get("a")),
    ("get missing", lambda t: t.get("zz")),
    ("get default", lambda t: t.get("zz", 7)),
    ("get no args", lambda t: t.get()),
    ("in", lambda t: ("a" in t, "zz" in t)),
    ("setitem", lambda t: t.__setitem__("n", 5)),
    ("setitem marker", lambda t: t.__setitem__("n", MISSING)),
    ("delitem", lambda t: t.__delitem__("a")),
    ("delitem missing", lambda t: t.__delitem__("zz")),
    ("pop", lambda t: t.pop("a")),
    ("pop missing", lambda t: t.pop("zz")),
    ("pop default", lambda t: t.pop("zz", 3)),
    ("pop too many", lambda t: t.pop("zz", 3, 4)),
    ("setdefault", lambda t: (t.setdefault("a", 9), t.setdefault("s"), t.setdefault("t", 2))),
    ("setdefault marker", lambda t: t.setdefault("a", DELETE)),
    ("set_if_absent", lambda t: (t.set_if_absent("a", 9), t.set_if_absent("s", 2))),
    ("set_if_absent marker", lambda t: t.set_if_absent("s", MISSING)),
    ("replace", lambda t: (t.replace("a", 1, 2), t.replace("a", 1, 3), t.replace("zz", 1, 2))),
    ("replace marker", lambda t: t.replace("a", 1, DELETE)),
    ("remove", lambda t: (t.remove("a", 2), t.remove("a", 1), t.remove("zz", 1))),
    ("compute", lambda t: (t.compute("a", lambda v: v + 1), t.compute("c", lambda v: v))),
    ("compute delete", lambda t: t.compute("a", lambda v: DELETE)),
    ("compute_if_absent", lambda t: (t.compute_if_absent("a", str), t.compute_if_absent("q", str))),
    ("compute_if_absent marker", lambda t: t.compute_if_absent("q", lambda k: MISSING)),
    (
        "compute_if_present",
        lambda t: (t.compute_if_present("a", lambda v: v * 10), t.compute_if_present("q", str)),
    ),
    ("merge", lambda t: (t.merge("a", 5, operator.add), t.merge("m", 5, operator.add))),
    ("merge marker", lambda t: t.merge("a", DELETE, operator.add)),
    ("merge to delete", lambda t: t.merge("a", 5, lambda o, n: DELETE)),
    (
        "upsert",
        lambda t: (t.upsert("a", 5, lambda e, o, n: (e, o, n)), t.upsert("u", 5, lambda e, o, n: (e, o, n))),
    ),
    ("remove_if", lambda t: (t.remove_if("a", lambda k, v, e: e), t.remove_if("zz", lambda k, v, e: True))),
    ("unhashable", lambda t: t[[]]),
    ("hash raises KeyError getitem", lambda t: t[HashKeyError()]),
    ("hash raises KeyError get", lambda t: t.get(HashKeyError(), 1)),
    ("hash raises KeyError in", lambda t: HashKeyError() in t),
    ("hash raises KeyError setitem", lambda t: t.__setitem__(HashKeyError(), 1)),
    ("hash raises KeyError pop", lambda t: t.pop(HashKeyError(), 1)),
    ("hash raises KeyError merge", lambda t: t.merge(HashKeyError(), 1, operator.add)),
    ("hash raises KeyError compute", lambda t: t.compute(HashKeyError(), lambda v: 1)),
    ("unhashable set", lambda t: t.__setitem__([], 1)),
    ("wrong arity", lambda t: t.compute("a")),
]


def outcome(target: Any, fn: Callable[[Any], Any]) -> tuple[str, Any]:
    try:
        return "returned", fn(target)
    except Exception as error:
        # Python's own argument-binding errors name the method called (ShardedMapHandle.get()):
        # the one place where the texts may differ by the class name.
        return "raised", (type(error), str(error).replace("ShardedMapHandle.", "ShardedMap."))


@pytest.mark.parametrize(("name", "operation"), OPERATIONS, ids=[name for name, _ in OPERATIONS])
def test_every_operation_answers_as_the_map_does(
    impl: str, name: str, operation: Callable[[Any], Any]
) -> None:
    del name
    by_map = make(impl, {"a": 1, "b": 2}, shards=4)
    by_handle = make(impl, {"a": 1, "b": 2}, shards=4)
    h = by_handle.handle()
    assert outcome(h, operation) == outcome(by_map, operation)
    assert list(by_handle.items()) == list(by_map.items())
    assert not by_handle._debug_state()["locked"] and not by_handle._debug_state()["marked"]


@pytest.mark.parametrize(("name", "operation"), OPERATIONS, ids=[name for name, _ in OPERATIONS])
def test_every_operation_from_another_thread_answers_as_the_map_does(
    impl: str, name: str, operation: Callable[[Any], Any]
) -> None:
    del name
    by_map = make(impl, {"a": 1, "b": 2}, shards=4)
    by_handle = make(impl, {"a": 1, "b": 2}, shards=4)
    h = by_handle.handle()  # made here, used on another thread: the map's way, same answers
    assert within(10, lambda: outcome(h, operation)) == outcome(by_map, operation)
    assert list(by_handle.items()) == list(by_map.items())


def test_a_hasher_places_keys_as_through_the_map(impl: str) -> None:
    m = make(impl, shards=8, hasher=lambda k: k * 3)
    h = m.handle()
    for k in range(40):
        h[k] = k
    assert (
        m.shard_sizes()
        == make(impl, {k: k for k in range(40)}, shards=8, hasher=lambda k: k * 3).shard_sizes()
    )
    assert all(h[k] == k and k in h and h.get(k) == k for k in range(40))
    bad = make(impl, shards=8, hasher=lambda k: "x")
    with pytest.raises(TypeError) as by_handle:
        bad.handle()["k"] = 1
    with pytest.raises(TypeError) as by_map:
        bad["k"] = 1
    assert str(by_handle.value) == str(by_map.value)
    assert not bad


def test_whole_map_operations_go_to_the_map(impl: str) -> None:
    m = make(impl, {"a": 1}, shards=4)
    h = m.handle()
    h.update({"b": 2}, c=3)
    h.mset({"d": 4})
    h |= {"e": 5}
    assert (h | {"f": 6}) == {**m, "f": 6} and ({"f": 6} | h) == {"f": 6, **m}
    assert type(h | {}) is type(m) and type({} | h) is type(m)
    del h["e"]
    assert len(h) == 4 and sorted(h) == ["a", "b", "c", "d"]
    assert sorted(h.keys()) == sorted(m.keys()) and sorted(h.items()) == sorted(m.items())
    assert sorted(h.values()) == [1, 2, 3, 4]
    assert h.shards == 4 and h.shard_sizes() == m.shard_sizes()
    assert h.shard_index("a") == m.shard_index("a")
    duplicate = h.copy()
    assert type(duplicate) is type(m) and duplicate == m
    key, value = h.popitem()
    assert key not in m and len(m) == 3 and value in (1, 2, 3, 4)
    h.clear()
    assert not m and len(h) == 0


def test_a_handle_cannot_be_pickled_and_copies_to_a_map(impl: str) -> None:
    h = make(impl, {"a": 1}).handle()
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(h)
    with pytest.raises(TypeError, match="cannot be pickled"):
        copy.deepcopy(h)
    duplicate = copy.copy(h)
    assert type(duplicate) is type(h.map) and duplicate == {"a": 1} and duplicate is not h.map
    assert pickle.loads(pickle.dumps(h.map)) == {"a": 1}  # its map can


def test_a_handle_keeps_its_map_alive(impl: str) -> None:
    m = make(impl, {"a": 1})
    h = m.handle()
    ref = weakref.ref(m)
    del m
    gc.collect()
    assert ref() is not None and h["a"] == 1
    h.map["self"] = h  # a cycle through the map
    del h
    gc.collect()
    assert ref() is None


# -- re-entrancy (issue 13) and markers ------------------------------------------------------

WRITES: list[Callable[[Any], Any]] = [
    lambda t: t.__setitem__("other", 1),
    lambda t: t.__delitem__("x"),
    lambda t: t.pop("x", None),
    lambda t: t.setdefault("other", 1),
    lambda t: t.set_if_absent("other", 1),
    lambda t: t.replace("x", 1, 2),
    lambda t: t.remove("x", 1),
    lambda t: t.compute("x", lambda old: 1),
    lambda t: t.compute_if_absent("new", lambda k: 1),
    lambda t: t.compute_if_present("x", lambda old: 1),
    lambda t: t.merge("other", 1, operator.add),
    lambda t: t.upsert("other", 1, lambda e, o, n: n),
    lambda t: t.remove_if("x", lambda k, v, e: True),
    lambda t: t.mset({"y": 1}),
    lambda t: t.update({"y": 1}),
    lambda t: t.clear(),
    lambda t: t.popitem(),
]


@pytest.mark.parametrize("outer_through", ["map", "handle"])
@pytest.mark.parametrize("inner_through", ["map", "handle", "another handle"])
@pytest.mark.parametrize("recurse", WRITES)
def test_a_callback_that_writes_the_map_raises_instead_of_deadlocking(
    impl: str, outer_through: str, inner_through: str, recurse: Callable[[Any], Any]
) -> None:
    def run() -> None:
        m = make(impl, {"x": 1}, shards=1)  # one shard: any key would deadlock
        h = m.handle()
        outer = m if outer_through == "map" else h
        inner = {"map": m, "handle": h, "another handle": m.handle()}[inner_through]

        def callback(*args: Any) -> int:
            recurse(inner)
            return 99

        with pytest.raises(RecursiveUpdateError, match="inside the callback of its compute"):
            outer.compute("x", callback)
        assert m == {"x": 1}
        h["x"] = 2  # the shard is unlocked and no thread is marked
        m["x"] = 3
        assert h["x"] == 3 and not m._debug_state()["marked"] and not m._debug_state()["locked"]

    within(10, run)  # the handle's owner thread is the one that runs the callback


@pytest.mark.parametrize("through", ["map", "handle"])
def test_a_callback_may_read_the_map_and_the_handle(impl: str, through: str) -> None:
    m = make(impl, {"a": 1, "b": 2}, shards=1)
    h = m.handle()
    outer = m if through == "map" else h

    def reads(old: int) -> int:
        looked_up = h["b"] + m["b"] + len(h) + ("b" in h) + h.get("b") + h.compute_if_absent("b", str)
        return old + looked_up + sum(h.values())

    assert outer.compute("a", reads) == 1 + 2 + 2 + 2 + 1 + 2 + 2 + 3


def test_a_callback_that_raises_leaves_the_key_unchanged_and_the_shard_unlocked(impl: str) -> None:
    m = make(impl, {"k": 1}, shards=1)
    h = m.handle()

    def fail(*args: Any) -> int:
        raise ValueError("callback failed")

    for operation in (
        lambda: h.compute("k", fail),
        lambda: h.compute_if_present("k", fail),
        lambda: h.compute_if_absent("new", fail),
        lambda: h.merge("k", 1, fail),
        lambda: h.upsert("k", 1, fail),
        lambda: h.remove_if("k", fail),
    ):
        with pytest.raises(ValueError, match="callback failed"):
            operation()
        assert m == {"k": 1}
        assert not m._debug_state()["marked"] and not m._debug_state()["locked"]
    assert h.merge("k", 1, operator.add) == 2


@pytest.mark.parametrize("marker", [MISSING, DELETE])
def test_markers_are_never_values_through_a_handle(impl: str, marker: Any) -> None:
    m = make(impl, {"k": 1})
    h = m.handle()
    for store in (
        lambda: h.__setitem__("k", marker),
        lambda: h.setdefault("n", marker),
        lambda: h.set_if_absent("n", marker),
        lambda: h.replace("k", 1, marker),
        lambda: h.merge("k", marker, operator.add),
        lambda: h.update({"n": marker}),
        lambda: h.mset({"n": marker}),
    ):
        with pytest.raises(ValueError, match="cannot be stored in a ShardedMap"):
            store()
    assert m == {"k": 1}
    assert h.compute("k", lambda v: marker) is MISSING and "k" not in m
    assert h.compute_if_absent("n", lambda k: marker) is MISSING and "n" not in m
    assert h.upsert("n", 1, lambda *a: marker) is MISSING and "n" not in m


# -- one handle, several threads ------------------------------------------------------------


def test_a_thread_that_is_not_the_owner_gets_its_own_marks(impl: str) -> None:
    """A callback running on another thread through the owner's handle holds the shard lock
    with THAT thread's mark: the owner, meanwhile, writes another shard through the same handle
    (no false RecursiveUpdateError) and waits, not raises, for the held shard."""
    m = make(impl, shards=2)
    h = m.handle()
    keys = {}
    i = 0
    while len(keys) < 2:
        keys.setdefault(m.shard_index(f"k{i}"), f"k{i}")
        i += 1
    held, other = keys[0], keys[1]
    inside, leave = threading.Event(), threading.Event()

    def callback(old: Any) -> int:
        inside.set()
        assert leave.wait(10)
        return 1

    worker = InThread(lambda: h.compute(held, callback))
    assert inside.wait(10)
    h[other] = 2  # the owner, the same handle, another shard: fine
    assert h[other] == 2
    blocked = InThread(lambda: h.__setitem__(held, 3))  # the same shard: waits
    blocked.thread.join(0.2)
    assert blocked.thread.is_alive()
    leave.set()
    assert worker.join() == 1
    blocked.join()
    assert m[held] == 3


@pytest.mark.parametrize("threads", [4])
def test_one_handle_shared_by_threads_counts_exactly(impl: str, threads: int) -> None:
    m = make(impl, shards=4)
    h = m.handle()
    rounds = 2000
    barrier = threading.Barrier(threads)

    def work(n: int) -> None:
        barrier.wait(10)
        for i in range(rounds):
            h.merge("total", 1, operator.add)
            h.compute(f"t{n}", lambda v: 1 if v is MISSING else v + 1)
            h[f"k{n}-{i % 10}"] = i

    workers = [InThread(lambda n=n: work(n)) for n in range(threads)]  # type: ignore[misc]
    for worker in workers:
        worker.join(60)
    assert m["total"] == threads * rounds
    assert all(m[f"t{n}"] == rounds for n in range(threads))


def test_the_pure_handles_placement_cache_agrees_and_stays_bounded() -> None:
    m = _sharded.ShardedMap(shards=64)
    h = m.handle()
    for i in range(3 * _sharded._PLACES_MIN):
        assert h.get(i) is None
        assert h._places[hash(i)] == shard_of(i, 6) == m.shard_index(i)
    assert len(h._places) <= _sharded._PLACES_MIN
