"""UnsafeMap: the dict protocol, and each detection made deterministic.

A key whose __hash__ blocks holds one thread inside a map operation for as
long as the test likes, so every race below is constructed, not hoped for.
"""

from __future__ import annotations

import pickle
import queue
import sys
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from ftmap import (
    ConcurrentIterationError,
    ConcurrentMapError,
    ConcurrentReadWriteError,
    ConcurrentWriteError,
    ThreadInfo,
    UnsafeMap,
    race_log,
)
from tests.threads import InThread


class BlockingKey:
    """A key whose __hash__ waits until released: its caller stays inside the operation."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __hash__(self) -> int:
        self.entered.set()
        assert self.release.wait(10), "never released"
        return 1

    def __repr__(self) -> str:
        return "BlockingKey()"


@contextmanager
def another_thread_writing(m: UnsafeMap[Any, Any]) -> Iterator[InThread]:
    """Hold a thread named "writer" inside ``m[key] = "blocked"`` for the body's length."""
    key = BlockingKey()
    writer = InThread(lambda: m.__setitem__(key, "blocked"), name="writer")
    assert key.entered.wait(10)
    try:
        yield writer
    finally:
        key.release.set()
        writer.join()


# -- what UnsafeMap adds to the shared protocol (test_mapping_protocol): dict's order -----


def test_ordered_like_dict() -> None:
    m = UnsafeMap(a=1, b=2, c=3)
    assert list(m) == ["a", "b", "c"] and list(reversed(m)) == ["c", "b", "a"]
    assert list(m.keys()) == ["a", "b", "c"] and list(reversed(m.keys())) == ["c", "b", "a"]
    assert list(m.values()) == [1, 2, 3] and list(m.items()) == [("a", 1), ("b", 2), ("c", 3)]
    assert m.popitem() == ("c", 3)  # LIFO, as dict


def test_fromkeys_and_merge_operators() -> None:
    assert UnsafeMap.fromkeys("ab", 0) == {"a": 0, "b": 0}
    m = UnsafeMap(a=1)
    merged = m | {"a": 0, "b": 2}
    assert isinstance(merged, UnsafeMap) and merged == {"a": 0, "b": 2} and m == {"a": 1}
    right = {"z": 1} | UnsafeMap(a=1)
    assert isinstance(right, UnsafeMap) and list(right) == ["z", "a"]
    m |= {"f": 6}
    assert m == {"a": 1, "f": 6}


def test_own_modification_during_own_iteration_raises_like_dict() -> None:
    m = UnsafeMap(a=1, b=2)
    with pytest.raises(RuntimeError, match="changed size") as caught:
        for key in m:
            m[key + "!"] = 0
    assert not isinstance(caught.value, ConcurrentMapError)
    assert m.reports == []
    for key in m:  # a same-size change is allowed by dict, so here too
        m[key] = 5
    assert m.reports == []


def test_nested_write_from_the_same_thread_is_not_a_race() -> None:
    m: UnsafeMap[Any, int] = UnsafeMap()

    class Reentrant:
        def __hash__(self) -> int:
            m["inner"] = 1  # a write while this thread is inside m[self] = ...
            return 7

    m[Reentrant()] = 2
    assert m["inner"] == 1 and len(m) == 2 and m.reports == []


# -- bad input leaves the map unclaimed -------------------------------------------


def test_failing_hash_releases_the_write_claim() -> None:
    m = UnsafeMap(a=1)

    class BadHash:
        def __hash__(self) -> int:
            raise ValueError("no hash")

    with pytest.raises(ValueError):
        m[BadHash()] = 1  # type: ignore[index]
    with pytest.raises(ValueError):
        del m[BadHash()]  # type: ignore[arg-type]
    assert m == {"a": 1}
    # Another thread writes now: a claim left behind would be reported as a race.
    InThread(lambda: m.__setitem__("b", 2)).join()
    assert m == {"a": 1, "b": 2} and m.reports == []


# -- detection across threads --------------------------------------------------------


@pytest.mark.ftmap_races_expected
def test_write_during_another_threads_write_is_reported_and_not_performed() -> None:
    m: UnsafeMap[Any, str] = UnsafeMap()
    with another_thread_writing(m) as writer, pytest.raises(ConcurrentWriteError) as caught:
        m["mine"] = "x"
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
        ("delete", lambda m: m.__delitem__("a")),
        ("pop", lambda m: m.pop("a")),
        ("popitem", lambda m: m.popitem()),
        ("setdefault", lambda m: m.setdefault("new", 1)),
        ("update", lambda m: m.update(new=1)),
        ("clear", lambda m: m.clear()),
    ],
)
def test_every_kind_of_write_is_checked(name: str, write: Callable[[UnsafeMap[Any, Any]], object]) -> None:
    m: UnsafeMap[Any, Any] = UnsafeMap(a=1)
    with (
        another_thread_writing(m),
        pytest.raises(ConcurrentWriteError, match=f"^concurrent map writes: {name}"),
    ):
        write(m)
    assert m["a"] == 1 and len(m) == 2


@pytest.mark.ftmap_races_expected
@pytest.mark.parametrize(
    ("name", "read"),
    [
        ("read", lambda m: m["a"]),
        ("read", lambda m: m.get("a")),
        ("contains", lambda m: "a" in m),
        ("len", len),
        ("repr", repr),
        ("compare", lambda m: m == {}),
        ("copy", lambda m: m.copy()),
    ],
)
def test_read_during_another_threads_write_is_reported(
    name: str, read: Callable[[UnsafeMap[Any, Any]], object]
) -> None:
    m: UnsafeMap[Any, Any] = UnsafeMap(a=1)
    expected = f"^concurrent map read and map write: {name}"
    with another_thread_writing(m), pytest.raises(ConcurrentReadWriteError, match=expected):
        read(m)


@pytest.mark.ftmap_races_expected
def test_write_that_begins_and_ends_inside_a_read_is_reported() -> None:
    # Go checks only when a read starts; this read is overtaken by a whole write.
    key = BlockingKey()
    m: UnsafeMap[Any, Any] = UnsafeMap()
    reader = InThread(lambda: m.get(key), name="reader")
    assert key.entered.wait(10)
    m["x"] = 1  # a complete write while the reader is inside get()
    key.release.set()
    with pytest.raises(ConcurrentReadWriteError) as caught:
        reader.join()
    assert caught.value.thread.name == "reader"
    assert caught.value.other_thread.ident == threading.get_ident()


ITERATORS = [iter, lambda m: iter(m.keys()), lambda m: iter(m.values()), lambda m: iter(m.items()), reversed]
ITERATOR_IDS = ["iter", "keys", "values", "items", "reversed"]


@pytest.mark.parametrize("make_iterator", ITERATORS, ids=ITERATOR_IDS)
def test_queue_hand_off_between_iteration_steps_is_not_a_race(
    make_iterator: Callable[[Any], Iterator[Any]],
) -> None:
    # Issue 13, break 1: A iterates part-way, hands the map to B through a queue.Queue,
    # B overwrites a value (no size change) and hands it back, A continues. Go and a
    # dict both accept this program, so UnsafeMap must too.
    m = UnsafeMap(a=1, b=2, c=3)
    model = {"a": 1, "b": 2, "c": 3}
    to_b: queue.Queue[None] = queue.Queue()
    to_a: queue.Queue[None] = queue.Queue()

    def b_side() -> None:
        to_b.get(timeout=10)
        m["a"] = 10
        to_a.put(None)

    other = InThread(b_side, name="b")
    steps = make_iterator(m)
    expected = make_iterator(model)
    first = next(steps)
    assert first == next(expected)
    to_b.put(None)
    to_a.get(timeout=10)
    other.join()
    model["a"] = 10
    assert [first, *steps] == [first, *expected]
    assert m.reports == []


@pytest.mark.parametrize("make_iterator", ITERATORS, ids=ITERATOR_IDS)
def test_size_change_between_steps_by_another_thread_raises_as_a_dict_does(
    make_iterator: Callable[[Any], Iterator[Any]],
) -> None:
    m = UnsafeMap(a=1, b=2)
    steps = make_iterator(m)
    next(steps)
    InThread(lambda: m.__setitem__("c", 3), name="writer").join()  # synchronised: joined
    with pytest.raises(RuntimeError, match="changed size during iteration") as caught:
        next(steps)
    assert not isinstance(caught.value, ConcurrentMapError) and m.reports == []


@contextmanager
def inside_the_next_c_call(action: Callable[[], object], steps: Iterator[Any]) -> Iterator[list[bool]]:
    """Run action() once, on this thread, just before an UnsafeMap iterator calls next().

    A profile hook sees every call to a C function before it runs: this holds an
    iteration step open, between its entry check and its dict step, for as long as
    action takes (action runs a whole write on another thread and waits for it).
    The C iterator's step is one C function with no call to see: its test hook
    (compiled into ftmap's own builds only) runs action at the same place.
    """
    done = [False]
    if hasattr(steps, "_test_inside_step"):

        def inside() -> None:
            done[0] = True
            action()

        steps._test_inside_step = inside
        try:
            yield done
        finally:
            steps._test_inside_step = None
        return

    def hook(frame: types.FrameType, event: str, arg: object) -> None:
        # The call of next() made by the iterator's __next__, not the test's own call.
        if event == "c_call" and arg is next and frame.f_code.co_name == "__next__" and not done[0]:
            done[0] = True
            sys.setprofile(None)
            action()

    sys.setprofile(hook)
    try:
        yield done
    finally:
        sys.setprofile(None)


@pytest.mark.thread_unsafe(reason="sys.setprofile from several threads at once loses events")
@pytest.mark.ftmap_races_expected
@pytest.mark.parametrize("make_iterator", ITERATORS, ids=ITERATOR_IDS)
def test_write_that_finishes_during_an_iteration_step_is_reported(
    make_iterator: Callable[[Any], Iterator[Any]],
) -> None:
    m = UnsafeMap(a=1, b=2, c=3)
    steps = make_iterator(m)
    next(steps)
    writer: list[InThread] = []

    def write_on_another_thread() -> None:
        writer.append(InThread(lambda: m.__setitem__("a", 10), name="writer"))
        writer[0].join()

    with (
        inside_the_next_c_call(write_on_another_thread, steps) as done,
        pytest.raises(ConcurrentIterationError, match=r"^concurrent map iteration and map write") as caught,
    ):
        next(steps)
    assert done[0]
    # The writer has exited: its ident is known, its name is not.
    assert caught.value.other_thread == ThreadInfo("<exited>", writer[0].thread.ident)  # type: ignore[arg-type]
    assert not caught.value.has_key and m.reports == [caught.value]


@pytest.mark.ftmap_races_expected
def test_iteration_step_during_a_write_in_progress_is_reported() -> None:
    m: UnsafeMap[Any, Any] = UnsafeMap(a=1)
    with another_thread_writing(m), pytest.raises(ConcurrentIterationError):
        list(m)


def test_abandoned_iterator_is_not_a_race() -> None:
    m = UnsafeMap(a=1, b=2)
    steps = iter(m)
    next(steps)  # left unfinished and never advanced again
    InThread(lambda: m.__setitem__("c", 3)).join()
    assert list(m) == ["a", "b", "c"] and m.reports == []


def test_access_after_join_is_not_a_race() -> None:
    m: UnsafeMap[int, int] = UnsafeMap()
    InThread(lambda: [m.__setitem__(i, i) for i in range(1000)]).join()
    assert sum(m.values()) == sum(range(1000)) and len(m) == 1000
    InThread(m.clear).join()
    assert m == {} and m.reports == []


# -- reporting -----------------------------------------------------------------------


@pytest.mark.thread_unsafe(reason="counts the process-wide race log")
@pytest.mark.ftmap_races_expected
def test_detection_is_recorded_on_the_map_and_in_the_race_log() -> None:
    before = race_log.total
    m: UnsafeMap[Any, Any] = UnsafeMap()
    with another_thread_writing(m):
        with pytest.raises(ConcurrentReadWriteError):
            m.get("a")
        with pytest.raises(ConcurrentWriteError):
            m["a"] = 1
    assert len(m.reports) == 2
    assert race_log.total == before + 2
    assert list(race_log.recent)[-2:] == m.reports


def test_errors_are_runtime_errors_that_pickle() -> None:
    one, two = ThreadInfo("a", 1), ThreadInfo("b", 2)
    for kind in (ConcurrentWriteError, ConcurrentReadWriteError, ConcurrentIterationError):
        error = kind("write", one, two, ("k", 1))
        assert isinstance(error, ConcurrentMapError) and isinstance(error, RuntimeError)
        restored = pickle.loads(pickle.dumps(error))
        assert type(restored) is kind and str(restored) == str(error) and restored.key == ("k", 1)
    keyless = ConcurrentIterationError("iterate", one, two)
    assert not keyless.has_key and keyless.key is None
    assert str(keyless) == (
        "concurrent map iteration and map write: iterate in thread 'a' (ident 1) "
        "overlapped a write in thread 'b' (ident 2)"
    )
    assert not pickle.loads(pickle.dumps(keyless)).has_key


def test_report_survives_a_key_with_a_broken_repr() -> None:
    class BadRepr:
        def __repr__(self) -> str:
            raise ValueError

    error = ConcurrentWriteError("write", ThreadInfo("a", 1), ThreadInfo("b", 2), BadRepr())
    assert "<BadRepr object>" in str(error)
