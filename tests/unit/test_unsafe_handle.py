"""UnsafeMapHandle (issue 12): the map's API and exactly the map's checks, through a handle.

Both implementations: the pure handle on the pure map and the C handle on the C map
(the C variant runs even under FTMAP_PURE_PYTHON=1; skipped where the C core is absent).
Every detection test of tests/unit/test_unsafe.py that a single-key operation can make
is made here through a handle, on the side that detects and on the side that writes.
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import pytest

from ftmap import (
    ConcurrentIterationError,
    ConcurrentReadWriteError,
    ConcurrentWriteError,
    ThreadInfo,
    _impl,
)
from tests.threads import InThread

MAPS = _impl.variants("UnsafeMap")
HANDLES = _impl.variants("UnsafeMapHandle")


@pytest.fixture(params=["python", "c"])
def impl(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name not in MAPS or name not in HANDLES:
        pytest.skip("no C UnsafeMapHandle here (the C core is not importable)")
    return name


@pytest.fixture
def make(impl: str) -> Callable[..., Any]:
    return MAPS[impl]  # type: ignore[no-any-return]


class BlockingKey:
    """A key whose __hash__ waits until released: its caller stays inside the operation."""

    def __init__(self, armed: bool = True) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.armed = armed

    def __hash__(self) -> int:
        if not self.armed:
            return 1
        self.entered.set()
        assert self.release.wait(10), "never released"
        return 1

    def __repr__(self) -> str:
        return "BlockingKey()"


@contextmanager
def another_thread_writing(target: Any) -> Iterator[InThread]:
    """Hold a thread named "writer" inside ``target[key] = "blocked"`` (a map or a handle)."""
    key = BlockingKey()
    writer = InThread(lambda: target.__setitem__(key, "blocked"), name="writer")
    assert key.entered.wait(10)
    try:
        yield writer
    finally:
        key.release.set()
        writer.join()


# -- the API -------------------------------------------------------------------------------


def test_handle_is_the_map(impl: str, make: Callable[..., Any]) -> None:
    m = make(a=1, b=2)
    h = m.handle()
    assert type(h) is HANDLES[impl] and h.map is m
    assert isinstance(h, MutableMapping)
    assert h["a"] == 1 and h.get("b") == 2 and h.get("z") is None and h.get("z", 0) == 0
    assert "a" in h and "z" not in h and len(h) == 2
    h["c"] = 3
    assert m["c"] == 3 and h["c"] == 3  # read-your-writes, both ways
    m["d"] = 4
    assert h["d"] == 4
    del h["a"]
    assert "a" not in m and list(h) == ["b", "c", "d"] and list(reversed(h)) == ["d", "c", "b"]
    assert list(h.keys()) == ["b", "c", "d"] and list(h.values()) == [2, 3, 4]
    assert list(h.items()) == [("b", 2), ("c", 3), ("d", 4)]
    assert h == {"b": 2, "c": 3, "d": 4} and h == m and h != {}
    assert repr(h) == f"{type(h).__name__}({m!r})"
    assert h.pop("b") == 2 and h.pop("b", "gone") == "gone"
    assert h.setdefault("c", 0) == 3 and h.setdefault("e") is None and m["e"] is None
    assert h.popitem() == ("e", None)
    h.update({"f": 6}, g=7)
    assert m == {"c": 3, "d": 4, "f": 6, "g": 7}
    copied = h.copy()
    assert type(copied) is type(m) and copied == m and copied is not m
    assert (h | {"h": 8})["h"] == 8 and "h" not in m
    assert ({"z": 0} | h) == {"z": 0, **m}
    h |= {"i": 9}
    assert m["i"] == 9
    h.clear()
    assert len(m) == 0 and m.reports == []
    with pytest.raises(TypeError):
        hash(h)


def test_missing_keys_raise_the_maps_errors(make: Callable[..., Any]) -> None:
    m = make(a=1)
    h = m.handle()
    for fn in (lambda t: t["x"], lambda t: t.__delitem__("x"), lambda t: t.pop("x")):
        with pytest.raises(KeyError) as through_map:
            fn(m)
        with pytest.raises(KeyError) as through_handle:
            fn(h)
        assert through_handle.value.args == through_map.value.args == ("x",)
    m.clear()
    with pytest.raises(KeyError) as empty:
        h.popitem()
    assert "empty" in str(empty.value)
    with pytest.raises(TypeError):
        h[[]] = 1
    with pytest.raises(TypeError):
        h.get([])
    with pytest.raises(TypeError):
        [] in h  # noqa: B015
    assert m.reports == [] and len(m) == 0


def test_handle_needs_a_map_of_its_own_implementation(impl: str) -> None:
    with pytest.raises(TypeError):
        HANDLES[impl]({})
    for other in MAPS:
        if other != impl:
            with pytest.raises(TypeError):
                HANDLES[impl](MAPS[other]())


def test_pickling_a_handle_is_refused(make: Callable[..., Any]) -> None:
    m = make(a=1)
    with pytest.raises(TypeError, match="per-thread handle"):
        pickle.dumps(m.handle())
    assert pickle.loads(pickle.dumps(m)) == {"a": 1}


def test_reinit_keeps_handles_valid(make: Callable[..., Any]) -> None:
    m = make(a=1)
    h = m.handle()
    m.__init__({"b": 2})
    assert h.get("a") is None and h["b"] == 2 and "b" in h and list(h) == ["b"]
    h["c"] = 3
    assert m == {"b": 2, "c": 3} and m.reports == []


# -- errors leave the map intact and unclaimed -------------------------------------------


def test_failing_hash_through_a_handle_releases_the_claim(make: Callable[..., Any]) -> None:
    m = make(a=1)
    h = m.handle()

    class BadHash:
        def __hash__(self) -> int:
            raise ValueError("no hash")

    for fn in (
        lambda: h.__setitem__(BadHash(), 1),
        lambda: h.__delitem__(BadHash()),
        lambda: h.pop(BadHash()),
        lambda: h.setdefault(BadHash()),
        lambda: h[BadHash()],
        lambda: h.get(BadHash()),
        lambda: BadHash() in h,
    ):
        with pytest.raises(ValueError, match="no hash"):
            fn()
    assert m == {"a": 1} and 0 not in m._state
    InThread(lambda: m.handle().__setitem__("b", 2)).join()
    assert m == {"a": 1, "b": 2} and m.reports == []


def test_nested_write_through_a_handle_is_not_a_race(make: Callable[..., Any]) -> None:
    m = make()
    h = m.handle()

    class Reentrant:
        def __hash__(self) -> int:
            h["inner"] = 1  # a write while this thread is inside h[self] = ...
            return 7

    h[Reentrant()] = 2
    assert h["inner"] == 1 and len(m) == 2 and m.reports == []


def test_own_modification_during_own_iteration_raises_like_dict(make: Callable[..., Any]) -> None:
    m = make(a=1, b=2)
    h = m.handle()
    with pytest.raises(RuntimeError, match="changed size"):
        for key in h:
            h[key + "!"] = 0
    assert m.reports == []


# -- detection: the map's, exactly -----------------------------------------------------------


@pytest.mark.ftmap_races_expected
@pytest.mark.parametrize("writer_side", ["map", "handle"])
def test_write_during_another_threads_write_is_reported_and_not_performed(
    make: Callable[..., Any], writer_side: str
) -> None:
    m = make()
    h = m.handle()
    target = m if writer_side == "map" else m.handle()
    with another_thread_writing(target) as writer, pytest.raises(ConcurrentWriteError) as caught:
        h["mine"] = "x"
    error = caught.value
    assert str(error).startswith("concurrent map writes: write of key 'mine'")
    assert error.operation == "write" and error.has_key and error.key == "mine"
    assert error.thread == ThreadInfo(threading.current_thread().name, threading.get_ident())
    assert error.other_thread == ThreadInfo("writer", writer.thread.ident)  # type: ignore[arg-type]
    assert "mine" not in m and list(m.values()) == ["blocked"]
    assert m.reports == [error]


@pytest.mark.ftmap_races_expected
@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("delete", lambda h: h.__delitem__("a")),
        ("pop", lambda h: h.pop("a")),
        ("popitem", lambda h: h.popitem()),
        ("setdefault", lambda h: h.setdefault("new", 1)),
        ("update", lambda h: h.update(new=1)),
        ("clear", lambda h: h.clear()),
    ],
)
def test_every_kind_of_write_through_a_handle_is_checked(
    make: Callable[..., Any], name: str, write: Callable[[Any], object]
) -> None:
    m = make(a=1)
    h = m.handle()
    with (
        another_thread_writing(m),
        pytest.raises(ConcurrentWriteError, match=f"^concurrent map writes: {name}"),
    ):
        write(h)
    assert m["a"] == 1 and len(m) == 2 and len(m.reports) == 1


@pytest.mark.ftmap_races_expected
@pytest.mark.parametrize(
    ("name", "read", "key"),
    [
        ("read", lambda h: h["a"], "a"),
        ("read", lambda h: h.get("a"), "a"),
        ("contains", lambda h: "a" in h, "a"),
        ("len", len, None),
        ("repr", repr, None),
        ("compare", lambda h: h == {}, None),
        ("copy", lambda h: h.copy(), None),
    ],
)
@pytest.mark.parametrize("writer_side", ["map", "handle"])
def test_read_through_a_handle_during_another_threads_write_is_reported(
    make: Callable[..., Any], name: str, read: Callable[[Any], object], key: object, writer_side: str
) -> None:
    m = make(a=1)
    h = m.handle()
    target = m if writer_side == "map" else m.handle()
    expected = f"^concurrent map read and map write: {name}"
    with (
        another_thread_writing(target) as writer,
        pytest.raises(ConcurrentReadWriteError, match=expected) as caught,
    ):
        read(h)
    assert caught.value.other_thread == ThreadInfo("writer", writer.thread.ident)  # type: ignore[arg-type]
    assert caught.value.key == key and m.reports == [caught.value]


@pytest.mark.ftmap_races_expected
@pytest.mark.parametrize(
    ("name", "read"),
    [("read", lambda h, k: h[k]), ("read", lambda h, k: h.get(k)), ("contains", lambda h, k: k in h)],
)
@pytest.mark.parametrize("writer_side", ["map", "handle"])
def test_write_that_begins_and_ends_inside_a_handle_read_is_reported(
    make: Callable[..., Any], name: str, read: Callable[[Any, Any], object], writer_side: str
) -> None:
    key = BlockingKey(armed=False)
    m = make()
    m[key] = 0  # stored while unarmed: the read below finds it
    key.armed = True

    def reading() -> object:
        return read(m.handle(), key)

    reader = InThread(reading, name="reader")
    assert key.entered.wait(10)
    target = m if writer_side == "map" else m.handle()
    target["x"] = 1  # a complete write while the reader is inside its read
    key.release.set()
    with pytest.raises(
        ConcurrentReadWriteError, match=f"^concurrent map read and map write: {name}"
    ) as caught:
        reader.join()
    assert caught.value.thread.name == "reader"
    assert caught.value.other_thread.ident == threading.get_ident()
    assert m.reports == [caught.value]


@pytest.mark.ftmap_races_expected
def test_iteration_through_a_handle_during_a_write_is_reported(make: Callable[..., Any]) -> None:
    m = make(a=1)
    h = m.handle()
    with another_thread_writing(m), pytest.raises(ConcurrentIterationError):
        list(h)
    with another_thread_writing(m), pytest.raises(ConcurrentIterationError):
        list(h.items())


def test_access_after_join_is_not_a_race(make: Callable[..., Any]) -> None:
    m = make()
    InThread(lambda: [m.handle().__setitem__(i, i) for i in range(1000)]).join()
    h = m.handle()
    assert sum(h[i] for i in range(1000)) == sum(range(1000)) and len(h) == 1000
    InThread(h.clear).join()  # a handle used by another thread: still the map's operation
    assert m == {} and m.reports == []


# -- one handle shared by several threads ------------------------------------------------------


@pytest.mark.parametrize("synchronised", [True])
def test_one_handle_shared_by_threads_under_a_lock(make: Callable[..., Any], synchronised: bool) -> None:
    m = make()
    h = m.handle()
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def work(index: int) -> None:
        barrier.wait(10)
        for i in range(500):
            key = f"{index}-{i % 50}"
            with lock:
                h[key] = h.get(key, 0) + 1
                assert key in h
                if i % 7 == 0:
                    del h[key]
                    h.setdefault(key, h.pop(key, 0) + 1)

    threads = [InThread(lambda index=index: work(index), name=f"t{index}") for index in range(4)]
    for thread in threads:
        thread.join(60)
    assert m.reports == [] and len(m) == 200 and 0 not in m._state


def test_the_pure_map_counts_writes_from_its_first_handle_on() -> None:
    m = MAPS["python"](a=1)
    m["b"] = 2
    assert 2 not in m._state  # no handle: the map's write path only tests for the key
    h = m.handle()
    assert m._state[2] == 0
    m["c"] = 3
    h["d"] = 4
    del h["d"]
    m.pop("c")
    assert m._state[2] == 4
    for _ in range(300):
        h["e"] = 5
    assert m._state[2] == (4 + 300) % 256  # modulo 256: an immortal small int
