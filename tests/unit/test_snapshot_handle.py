"""SnapshotMapHandle (issue 12): the map's whole API through a per-thread handle, both implementations.

The handle of the pure map is ftmap._snapshot.SnapshotMapHandle; the C map's is
ftmap._snapshot_c.SnapshotMapHandle (a thin Python subclass of the C base). Every test runs
on both (the C one only where the C core imports, even under FTMAP_PURE_PYTHON=1).
"""

from __future__ import annotations

import copy
import pickle
import random
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any

import pytest

import ftmap
from ftmap import RecursiveUpdateError, Snapshot, _impl
from ftmap._snapshot import SnapshotMapHandle as PureHandle
from tests.threads import within

HANDLES = _impl.variants("SnapshotMapHandle")
MAPS = {name: cls for name, cls in _impl.variants("SnapshotMap").items() if name in HANDLES}


@pytest.fixture(params=sorted(MAPS))
def cls(request: pytest.FixtureRequest) -> Any:
    return MAPS[request.param]


def test_both_variants_are_registered_when_the_core_imports() -> None:
    assert HANDLES["python"] is PureHandle
    assert ftmap.SnapshotMapHandle is HANDLES[_impl.implementation_of("SnapshotMapHandle")]


def test_handle_is_the_maps_own_kind_and_a_mutable_mapping(cls: Any) -> None:
    m = cls(a=1)
    h = m.handle()
    variant = "c" if cls is MAPS.get("c") else "python"
    assert type(h) is HANDLES[variant]
    assert isinstance(h, MutableMapping) and isinstance(h, Mapping) and isinstance(h, PureHandle)
    assert h.map is m


def test_reads_through_a_handle(cls: Any) -> None:
    m = cls({"a": 1, "b": [2]}, history=3)
    h = m.handle()
    assert h["a"] == 1 and h.get("a") == 1 and h.get("z") is None and h.get("z", 0) == 0
    assert "a" in h and "z" not in h
    assert h["b"] == (2,)  # frozen, as the map holds it
    with pytest.raises(KeyError) as caught:
        h["z"]
    assert caught.value.args == ("z",)
    with pytest.raises(KeyError) as tuple_key:
        h[(1, 2)]
    assert tuple_key.value.args == ((1, 2),)
    snap = h.snapshot()
    assert isinstance(snap, Snapshot) and snap is m.snapshot() and h.version == m.version == 1
    assert len(h) == 2 and sorted(h) == ["a", "b"] and list(h.keys()) == ["a", "b"]
    assert list(h.items()) == [("a", 1), ("b", (2,))] and list(h.values()) == [1, (2,)]
    assert h == {"a": 1, "b": (2,)} and h == m and h == m.handle() and h != {"a": 1}
    assert repr(m) in repr(h) and type(h).__name__ in repr(h)
    with pytest.raises(TypeError):
        hash(h)
    with pytest.raises(TypeError):
        h.get()  # type: ignore[call-arg]
    with pytest.raises(AttributeError):
        h.version = 3  # type: ignore[misc]


def test_writes_through_a_handle_are_the_maps_and_the_handle_reads_its_own_writes(cls: Any) -> None:
    m = cls(a=1, history=20)
    h = m.handle()
    seen: list[int] = []
    h.subscribe(lambda change: seen.append(change.new.version))
    h["b"] = 2
    assert h["b"] == 2 and m["b"] == 2 and h.version == 2
    del h["a"]
    assert "a" not in h and h.get("a") is None and m.version == 3
    assert h.pop("b") == 2 and h.pop("b", "d") == "d" and "b" not in h
    assert h.setdefault("s", [1]) == (1,) and h.setdefault("s", 9) == (1,) and h["s"] == (1,)
    h.update({"u": 1}, v=2)
    assert h["u"] == 1 and h["v"] == 2
    assert h.popitem() == ("v", 2) and "v" not in h
    version = h.replace({"x": 1})
    assert version == m.version and h == {"x": 1}
    assert h.compare_and_replace(h.version, {"y": 1}) and h == {"y": 1}
    assert not h.compare_and_replace(h.version - 1, {"z": 1}) and h == {"y": 1}
    assert h.transform(lambda snap: {**snap, "t": len(snap)}) == m.version and h["t"] == 1
    assert h.rollback(h.version - 1) == m.version and h == {"y": 1}
    assert h.history_versions() == m.history_versions() and h.history_versions()[-1] == h.version
    h.clear()
    assert len(h) == 0 and h == {} and m == {}
    assert h.flush()
    assert seen == list(range(2, m.version + 1))
    c = h.copy()
    assert type(c) is type(m) and c == m and c is not m


def test_errors_through_a_handle_leave_the_map_intact(cls: Any) -> None:
    m = cls(a=1)
    h = m.handle()
    before = (m.version, dict(m.snapshot()))
    with pytest.raises(KeyError):
        del h["z"]
    with pytest.raises(KeyError):
        h.pop("z")
    with pytest.raises(TypeError, match="at most 2 arguments"):
        h.pop("a", 1, 2)
    with pytest.raises(TypeError):
        h[[]] = 1  # unhashable key
    with pytest.raises(ValueError, match="not in the history"):
        h.rollback(99)

    def bad(snap: Any) -> Any:
        raise RuntimeError("refused")

    with pytest.raises(RuntimeError, match="refused"):
        h.transform(bad)

    def writes(snap: Any) -> Any:
        h["inner"] = 1  # a write from inside a write, through the handle
        return snap

    with pytest.raises(RecursiveUpdateError):
        h.transform(writes)
    assert (m.version, dict(m.snapshot())) == before and dict(h.snapshot()) == before[1]
    # a handle may read the map from inside a write's user code
    assert h.transform(lambda snap: {**snap, "seen": h["a"] + h.version}) == 2 and h["seen"] == 2


def test_a_handle_cannot_be_pickled_or_copied_but_its_map_can(cls: Any) -> None:
    m = cls(a=1)
    h = m.handle()
    with pytest.raises(TypeError, match="belongs to its thread"):
        pickle.dumps(h)
    with pytest.raises(TypeError, match="belongs to its thread"):
        copy.copy(h)
    assert pickle.loads(pickle.dumps(h.map)) == {"a": 1}


def test_a_handle_sees_writes_made_through_the_map_and_other_handles(cls: Any) -> None:
    m = cls(a=1)
    h, other = m.handle(), m.handle()
    assert h["a"] == 1
    m["a"] = 2
    assert h["a"] == 2 and other["a"] == 2
    other["a"] = 3
    assert h["a"] == 3 and h.get("a") == 3 and h.snapshot()["a"] == 3 and h.version == 3


def test_a_handle_made_on_one_thread_works_on_another(cls: Any) -> None:
    m = cls(a=1)
    h = within(10, m.handle)  # made by another thread
    assert h["a"] == 1
    h["a"] = 2
    assert within(10, lambda: (h["a"], h.get("a"), "a" in h, h.version)) == (2, 2, True, 2)
    assert m["a"] == 2


@pytest.mark.parallel_threads(1)  # runs its own threads
def test_one_handle_shared_by_threads_reads_every_threads_own_writes(cls: Any, ftmap_seed: int) -> None:
    m = cls()
    h = m.handle()
    threads, rounds = 4, 300
    barrier = threading.Barrier(threads)
    errors: list[str] = []

    def work(index: int) -> None:
        rng = random.Random(ftmap_seed + index)
        barrier.wait(10)
        for i in range(rounds):
            key = f"t{index}"
            h[key] = i
            if h[key] != i or h.get(key) != i or key not in h or h.snapshot()[key] != i:
                errors.append(f"thread {index} wrote {i} and read {h.get(key)} (seed {ftmap_seed})")
            if rng.random() < 0.1:
                h.pop(key)
                if key in h:
                    errors.append(f"thread {index} popped {key} and still found it")

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert not any(worker.is_alive() for worker in workers)
    assert errors == []
    assert m.version >= 1 + threads * rounds
