"""SnapshotMap, C against pure Python: the same random operations give the same results.

Both implementations (ftmap._impl.variants) are driven with one sequence of operations
(hypothesis): writes, reads through the map and through a reader, snapshots, history,
rollbacks, transforms that read or write the map, subscribers, keys whose __hash__ or
__eq__ raises or re-enters the map (reads and writes), unhashable keys, NaN, the markers
MISSING and DELETE as values, and misused arguments. Every operation must give the same
result, or raise the same exception type with the same message, and after every operation
both maps hold the very same key objects in the same order with equal values, the same
version and history, and their subscribers have seen the same changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftmap import DELETE, MISSING, Change, _impl
from tests.hostile import NAN, CallbackKey, EqRaises, HashRaises, HostileError

VARIANTS = _impl.variants("SnapshotMap")
pytestmark = pytest.mark.skipif(
    "c" not in VARIANTS, reason=f"no C SnapshotMap: {_impl.implementation_reason}"
)


class Driven:
    """One implementation under test, and what its subscriber has seen."""

    def __init__(self, cls: Any) -> None:
        self.map = cls({"a": 1, NAN: "nan"}, history=3)
        self.reader = self.map.reader()
        self.changes: list[tuple[Any, ...]] = []
        self.map.subscribe(self.record)

    def record(self, change: Change) -> None:
        # Computing the diff hashes the keys: re-entrant keys must not write from here, or
        # each write's delivery would write again, forever (in both implementations).
        saved = TARGET[:]
        TARGET.clear()
        try:
            self._record(change)
        finally:
            TARGET[:] = saved

    def _record(self, change: Change) -> None:
        self.changes.append(
            (
                change.old.version,
                change.new.version,
                sorted(map(repr, change.added)),
                sorted(map(repr, change.removed)),
                sorted(map(repr, change.changed)),
            )
        )


TARGET: list[Any] = []  # the map the current operation runs on: re-entrant keys reach it here


def _write_target() -> None:
    if TARGET:
        TARGET[0]["written"] = 1


def _read_target() -> None:
    if not TARGET:
        return
    TARGET[0].get("a")
    TARGET[0].version  # noqa: B018
    TARGET[0].history_versions()


KEYS: list[Any] = [
    "a",
    "b",
    1,
    1.0,
    True,
    (1, 2),
    NAN,
    float("nan"),
    HashRaises(),
    EqRaises(0),
    EqRaises(0),
    [],
    CallbackKey("w", _write_target),
    CallbackKey("r", _read_target),
    CallbackKey("a", _read_target, on_hash=False),
]
VALUES: list[Any] = [0, None, "v", [1, [2]], {"x": [3]}, {4, 5}, NAN, MISSING, DELETE, bytearray(b"z")]


def _transform(kind: str) -> Callable[[Any], Any]:
    def fn(current: Any) -> Any:
        if kind == "write":
            TARGET[0]["inner"] = 1
        if kind == "raise":
            raise HostileError("transform refused")
        if kind == "read":
            return {**current, "seen": (TARGET[0].version, tuple(TARGET[0].history_versions()))}
        return {**current, "t": len(current)}

    return fn


key = st.sampled_from(range(len(KEYS)))
value = st.sampled_from(range(len(VALUES)))
OPERATIONS = st.one_of(
    st.tuples(st.just("set"), key, value),
    st.tuples(st.just("del"), key),
    st.tuples(st.just("pop"), key, st.booleans()),
    st.tuples(st.just("popitem")),
    st.tuples(st.just("setdefault"), key, value),
    st.tuples(st.just("update"), st.lists(st.tuples(key, value), max_size=3)),
    st.tuples(st.just("clear")),
    st.tuples(st.just("replace"), st.lists(st.tuples(st.sampled_from(range(8)), value), max_size=3)),
    st.tuples(st.just("cas"), st.integers(-1, 0)),
    st.tuples(st.just("rollback"), st.integers(0, 4)),
    st.tuples(st.just("transform"), st.sampled_from(["add", "write", "raise", "read"])),
    st.tuples(st.just("read"), key, st.sampled_from(["[]", "get", "get default", "in"])),
    st.tuples(st.just("reader"), key, st.sampled_from(["[]", "get", "get default", "get kw", "in"])),
    st.tuples(
        st.just("misuse"),
        st.sampled_from(
            [
                "get()",
                "get(1, 2, 3)",
                "get(key=)",
                "reader.get()",
                "reader.get(1, 2, 3)",
                "reader.get(nope=)",
                "reader.get(1, key=)",
                "snapshot(1)",
                "reader.snapshot(1)",
                "version=",
                "del version",
                "pop(1, 2, 3)",
            ]
        ),
    ),
)


def run(driven: Driven, operation: tuple[Any, ...]) -> Any:  # noqa: PLR0911  (one branch an operation)
    m, kind = driven.map, operation[0]
    if kind == "set":
        m[KEYS[operation[1]]] = VALUES[operation[2]]
        return None
    if kind == "del":
        del m[KEYS[operation[1]]]
        return None
    if kind == "pop":
        return m.pop(KEYS[operation[1]], "default") if operation[2] else m.pop(KEYS[operation[1]])
    if kind == "popitem":
        return m.popitem()
    if kind == "setdefault":
        return m.setdefault(KEYS[operation[1]], VALUES[operation[2]])
    if kind == "update":
        return m.update([(KEYS[k], VALUES[v]) for k, v in operation[1]])
    if kind == "clear":
        return m.clear()
    if kind == "replace":
        return m.replace({KEYS[k]: VALUES[v] for k, v in operation[1]})
    if kind == "cas":
        return m.compare_and_replace(m.version + operation[1], {"cas": m.version})
    if kind == "rollback":
        return m.rollback(m.version - operation[1])
    if kind == "transform":
        return m.transform(_transform(operation[1]))
    if kind in ("read", "reader"):
        target = m if kind == "read" else driven.reader
        k, how = KEYS[operation[1]], operation[2]
        if how == "[]":
            return target[k]
        if how == "get":
            return target.get(k)
        if how == "get default":
            return target.get(k, "absent")
        if how == "get kw":
            return target.get(key=k, default="absent")
        return k in target
    return misuse(driven, operation[1])


def misuse(driven: Driven, how: str) -> Any:  # noqa: PLR0911  (one branch a misuse)
    m, r = driven.map, driven.reader
    if how == "get()":
        return m.get()
    if how == "get(1, 2, 3)":
        return m.get(1, 2, 3)
    if how == "get(key=)":
        return m.get(key="a")
    if how == "reader.get()":
        return r.get()
    if how == "reader.get(1, 2, 3)":
        return r.get(1, 2, 3)
    if how == "reader.get(nope=)":
        return r.get("a", nope=1)
    if how == "reader.get(1, key=)":
        return r.get("a", key="a")
    if how == "snapshot(1)":
        return m.snapshot(1)
    if how == "reader.snapshot(1)":
        return r.snapshot(1)
    if how == "version=":
        m.version = 5
        return None
    if how == "del version":
        del m.version
        return None
    return m.pop(1, 2, 3)


def outcome(driven: Driven, operation: tuple[Any, ...]) -> tuple[str, str]:
    TARGET[:] = [driven.map]
    try:
        return "ok", repr(run(driven, operation))
    except Exception as error:
        return type(error).__name__, str(error)


def state(driven: Driven) -> tuple[Any, ...]:
    m = driven.map
    TARGET.clear()  # comparing the states runs no re-entrant key's writes
    snapshot = m.snapshot()
    assert driven.map.flush()
    reader_view = [(repr(k), repr(driven.reader.get(k, "absent"))) for k in list(snapshot)]
    return (
        m.version,
        snapshot.version,
        m.history_versions(),
        [(repr(k), repr(v)) for k, v in snapshot.items()],
        reader_view,
        len(m),
        len(driven.reader),
        repr(m),
        list(driven.changes),
    )


@pytest.mark.parallel_threads(1)  # TARGET is shared: one run at a time
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPERATIONS, max_size=25))
def test_c_and_pure_snapshot_maps_give_the_same_results(operations: list[tuple[Any, ...]]) -> None:
    pure, c = Driven(VARIANTS["python"]), Driven(VARIANTS["c"])
    for operation in operations:
        expected, got = outcome(pure, operation), outcome(c, operation)
        assert got == expected, (operation, expected, got)
        assert state(c) == state(pure), operation
        # the very same key objects, in the same order
        assert all(a is b for a, b in zip(c.map.snapshot(), pure.map.snapshot(), strict=True))


def test_the_differential_test_can_fail() -> None:
    # A C map whose get ignored the default would be caught: outcomes compare reprs exactly.
    pure = Driven(VARIANTS["python"])
    assert outcome(pure, ("read", 1, "get default")) == ("ok", "'absent'")
    assert outcome(pure, ("read", 1, "get")) == ("ok", "None")
    missing = "SnapshotReader.get() missing 1 required positional argument: 'key'"
    assert outcome(pure, ("misuse", "reader.get()"))[1] == missing
