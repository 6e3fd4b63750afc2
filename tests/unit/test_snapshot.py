"""SnapshotMap: versions, read-only snapshots, deep freezing, history, change callbacks."""

from __future__ import annotations

import copy
import json
import logging
import pickle
import threading
import time
from typing import Any

import pytest

from ftmap import Change, FrozenDict, Snapshot, SnapshotMap, _impl, freeze
from tests.threads import InThread, within


def test_every_write_publishes_exactly_one_version() -> None:
    m: SnapshotMap[str, int] = SnapshotMap(a=1)
    assert m.version == 1
    m["b"] = 2
    assert m.version == 2
    del m["a"]
    assert m.version == 3
    m.update({"c": 3, "d": 4}, e=5)  # one version for the batch
    assert m.version == 4 and m == {"b": 2, "c": 3, "d": 4, "e": 5}
    assert m.replace({"x": 1}) == 5 and m == {"x": 1}
    assert m.transform(lambda snap: {**snap, "y": snap["x"] + 1}) == 6 and m["y"] == 2
    m.clear()
    assert m.version == 7 and m == {}
    with pytest.raises(KeyError):
        del m["missing"]
    assert m.version == 7  # a failed write publishes nothing


def test_snapshot_is_read_only_consistent_and_kept_forever() -> None:
    m: SnapshotMap[str, int] = SnapshotMap(a=1, b=2)
    snap = m.snapshot()
    assert isinstance(snap, Snapshot) and snap.version == 1 and snap == {"a": 1, "b": 2}
    m["a"] = 10
    assert snap == {"a": 1, "b": 2} and snap.version == 1  # old snapshot unchanged
    assert m.snapshot().version == 2 and m.snapshot()["a"] == 10
    for change in (
        lambda: snap.__setitem__("a", 3),
        lambda: snap.update(a=3),
        snap.clear,
        lambda: snap.pop("a"),
    ):
        with pytest.raises(TypeError, match="read-only"):
            change()
    assert snap is m.snapshot() or m.snapshot() is m.snapshot()  # no copy per call


@pytest.mark.parametrize("implementation", sorted(_impl.variants("SnapshotMap")))
def test_get_and_snapshot_come_from_one_reference(implementation: str) -> None:
    m: SnapshotMap[str, int] = _impl.variants("SnapshotMap")[implementation](a=1)
    if implementation == "python":
        # The pure map publishes the current snapshot's own dict.get: a pure-only internal.
        # The C map's get, snapshot() and version read one published reference in C
        # (csrc/snapshotmap.c), which the model test checks for both through their results.
        assert m.get.__self__ is m.snapshot()  # type: ignore[attr-defined]
    assert m.get("a") == 1 and m.get("z") is None and m.get("z", 5) == 5
    m["a"] = 2
    snap = m.snapshot()
    assert snap.version == m.version == 2 and snap["a"] == m.get("a") == m["a"] == 2


def test_compare_and_replace_never_lets_a_stale_writer_win() -> None:
    m: SnapshotMap[str, int] = SnapshotMap(a=1)
    seen = m.version
    assert m.compare_and_replace(seen, {"a": 2})
    assert not m.compare_and_replace(seen, {"a": 3})  # stale: version moved on
    assert m == {"a": 2} and m.version == seen + 1


def test_values_are_deep_frozen_on_publish() -> None:
    config = {"db": {"hosts": ["a", "b"], "tags": {"x"}}, "n": 1}
    m: SnapshotMap[str, Any] = SnapshotMap(config)
    db = m["db"]
    assert isinstance(db, FrozenDict) and db["hosts"] == ("a", "b") and db["tags"] == frozenset({"x"})
    with pytest.raises(TypeError):
        db["hosts"] = []
    config["db"]["hosts"].append("c")  # the caller's objects are not the published ones
    assert m["db"]["hosts"] == ("a", "b")
    # Frozen content is still JSON: FrozenDict is a dict, tuples become lists.
    plain: SnapshotMap[str, Any] = SnapshotMap({"db": {"hosts": ["a", "b"]}, "n": 1})
    assert json.loads(json.dumps(plain.snapshot())) == {"db": {"hosts": ["a", "b"]}, "n": 1}
    assert freeze([{"a": [1]}]) == ({"a": (1,)},) and freeze("text") == "text"


def test_frozen_values_copy_and_pickle() -> None:
    frozen = freeze({"a": [1, 2]})
    assert copy.deepcopy(frozen) is frozen and copy.copy(frozen) is frozen
    assert pickle.loads(pickle.dumps(frozen)) == frozen
    snap = Snapshot({"a": 1}, 7)
    again = pickle.loads(pickle.dumps(snap))
    assert again == snap and again.version == 7
    m: SnapshotMap[str, int] = SnapshotMap(a=1)
    assert pickle.loads(pickle.dumps(m)) == m


class _KeyErrorHash:
    def __hash__(self) -> int:
        raise KeyError(self)

    def __repr__(self) -> str:
        return "_KeyErrorHash()"


class _KeyErrorEq:
    def __hash__(self) -> int:
        return hash("a")

    def __eq__(self, other: object) -> bool:
        raise KeyError(self)

    def __repr__(self) -> str:
        return "_KeyErrorEq()"


def _get_outcome(call: Any) -> tuple[str, Any]:
    try:
        return "returned", call()
    except Exception as error:
        return "raised", (type(error), error.args)


@pytest.mark.parametrize(
    "args",
    [("a",), ("zz",), ("zz", 7), ("n",), ([],), (_KeyErrorHash(),), (_KeyErrorEq(),), (), ("a", 1, 2)],
    ids=repr,
)
def test_a_frozen_dicts_get_answers_as_dict_get(args: tuple[Any, ...]) -> None:
    # On free-threaded 3.13 FrozenDict.get is a subscript (dict.get parks a thread reading
    # another thread's objects there); everywhere it must be dict.get's answers and errors.
    content = {"a": 1, "n": None}
    for frozen in (FrozenDict(content), Snapshot(content, 3), SnapshotMap(content).snapshot()):
        expected = _get_outcome(lambda: dict.get(content, *args))
        assert _get_outcome(lambda f=frozen: f.get(*args)) == expected
    m: SnapshotMap[str, Any] = SnapshotMap(content)
    assert _get_outcome(lambda: m.get(*args)) == expected
    assert within(10, lambda: _get_outcome(lambda: m.get(*args))) == expected  # another thread
    with pytest.raises(TypeError, match=r"get\(\) takes no keyword arguments"):
        m.get("a", default=1)


def test_a_frozen_dict_subclass_with_missing_keeps_dict_gets_answer() -> None:
    class Defaulting(FrozenDict[str, int]):
        def __missing__(self, key: str) -> int:
            return -1

    d = Defaulting(a=1)
    assert d["zz"] == -1  # a subscript calls __missing__ ...
    assert d.get("zz") is None and d.get("zz", 5) == 5 and d.get("a") == 1  # ... dict.get never


def test_history_and_rollback() -> None:
    m: SnapshotMap[str, int] = SnapshotMap(a=1, history=3)
    for i in range(2, 6):
        m["a"] = i
    assert m.history_versions() == [3, 4, 5]
    assert m.rollback(3) == 6 and m["a"] == 3  # republished as a new version
    with pytest.raises(ValueError, match="not in the history"):
        m.rollback(1)


@pytest.mark.parametrize("history", [0, -1, 2.5, True])
def test_history_must_be_a_positive_int(history: Any) -> None:
    with pytest.raises(ValueError, match="history must be an int"):
        SnapshotMap(history=history)


def test_atomic_setdefault_pop_popitem() -> None:
    m: SnapshotMap[str, int] = SnapshotMap(a=1)
    assert m.setdefault("a", 5) == 1 and m.version == 1  # present: nothing published
    assert m.setdefault("b", 2) == 2 and m.version == 2
    assert m.pop("b") == 2 and m.pop("b", 0) == 0 and m.version == 3
    assert m.popitem() == ("a", 1) and m == {}
    with pytest.raises(KeyError):
        m.popitem()


# -- change callbacks ------------------------------------------------------------------------


def test_subscribers_get_each_change_in_version_order() -> None:
    m: SnapshotMap[str, int] = SnapshotMap(a=1, b=2)
    changes: list[Change] = []
    unsubscribe = m.subscribe(changes.append)
    m.update(b=3, c=4)
    del m["a"]
    assert [c.new.version for c in changes] == [2, 3]
    first = changes[0]
    assert (first.added, first.removed, first.changed) == (frozenset({"c"}), frozenset(), frozenset({"b"}))
    assert first.old == {"a": 1, "b": 2} and first.new == {"a": 1, "b": 3, "c": 4}
    assert changes[1].removed == frozenset({"a"})
    unsubscribe()
    m["z"] = 0
    assert len(changes) == 2


def test_a_failing_subscriber_is_logged_and_never_stops_the_others(caplog: pytest.LogCaptureFixture) -> None:
    m: SnapshotMap[str, int] = SnapshotMap()
    got: list[int] = []

    def broken(change: Change) -> None:
        raise RuntimeError("subscriber bug")

    m.subscribe(broken)
    m.subscribe(lambda change: got.append(change.new.version))
    with caplog.at_level(logging.ERROR, logger="ftmap"):
        m["a"] = 1
        m["b"] = 2
    assert got == [2, 3] and m.version == 3
    assert "subscriber bug" in caplog.text and "failed on version 2" in caplog.text


def test_a_subscriber_may_write_the_map_without_deadlock() -> None:
    m: SnapshotMap[str, int] = SnapshotMap(n=0)
    seen: list[int] = []

    def bump(change: Change) -> None:
        seen.append(change.new.version)
        if change.new["n"] < 3:
            m["n"] = change.new["n"] + 1

    m.subscribe(bump)
    worker = threading.Thread(target=lambda: m.__setitem__("n", 1), daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive() and m["n"] == 3 and seen == [2, 3, 4]


# -- per-thread readers ---------------------------------------------------------------------


def test_reader_sees_every_publish_from_the_moment_it_completes() -> None:
    m: SnapshotMap[str, int] = SnapshotMap(a=1)
    reader = m.reader()
    assert reader["a"] == 1 and reader.get("a") == 1 and "a" in reader and reader.get("z", 0) == 0
    m["a"] = 2
    assert reader["a"] == 2  # no stale copy after the publish returned
    del m["a"]
    assert "a" not in reader and reader.get("a") is None
    with pytest.raises(KeyError):
        reader["a"]
    m.replace({"x": 1, "y": 2})
    assert sorted(reader) == ["x", "y"] and len(reader) == 2 and reader.snapshot() is m.snapshot()


def test_a_reader_made_in_another_thread_reads_the_same_map() -> None:
    m: SnapshotMap[str, int] = SnapshotMap(a=1)
    got: list[int] = []
    worker = threading.Thread(target=lambda: got.append(m.reader()["a"]))
    worker.start()
    worker.join(10)
    assert got == [1]


def test_history_versions_are_contiguous_and_end_with_the_current_version() -> None:
    m: SnapshotMap[str, int] = SnapshotMap(a=0, history=4)
    for i in range(1, 8):
        m["a"] = i
        versions = m.history_versions()
        assert versions[-1] == m.version and versions == list(range(versions[0], m.version + 1))
    assert len(m.history_versions()) == 4


def test_flush_with_nothing_pending_returns_true_and_bad_subscribers_are_refused() -> None:
    m: SnapshotMap[str, int] = SnapshotMap()
    assert m.flush()
    with pytest.raises(TypeError, match="callable"):
        m.subscribe(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="at most 2 arguments"):
        m.pop("a", 1, 2)


# -- readers: no new/old inversion between two readers (issue 12's milestone 0) ------------------

_IDLE_READERS = 300  # registered between the two readers: a publish takes a while to flag them all


def _new_then_old(cls: Any, seconds: float, threads: int = 2) -> tuple[list[str], int, int]:
    """Readers `first` and `last` (idle readers registered between them) read "v" one after the
    other on `threads` threads while another thread publishes 1, 2, 3 ...: every time a read
    through `last` returned less than the read through `first` just before it (an inversion:
    the first read had ended before the second began), the publishes, and the reads made."""
    m = cls(v=0)
    first = m.reader()
    idle = [m.reader() for _ in range(_IDLE_READERS)]
    last = m.reader()
    done = threading.Event()
    barrier = threading.Barrier(threads + 1)
    found: list[str] = []
    reads = [0]

    def read() -> None:
        barrier.wait(10)
        count = 0
        while not done.is_set():
            new = first["v"]
            old = last["v"]
            if old < new:
                found.append(f"read {new} through one reader, then {old} through another")
            count += 1
        reads[0] += count

    def write() -> int:
        barrier.wait(10)
        deadline = time.monotonic() + seconds
        published = 0
        try:
            while time.monotonic() < deadline:
                published += 1
                m["v"] = published
        finally:
            done.set()
        return published

    workers = [InThread(read, name=f"reader-{i}") for i in range(threads)]
    published = within(seconds + 30, write)
    for worker in workers:
        worker.join(30)
    del idle
    return found, published, reads[0]


@pytest.mark.parallel_threads(1)  # runs its own threads
@pytest.mark.parametrize("implementation", sorted(_impl.variants("SnapshotMap")))
def test_two_followers_never_see_new_then_old(implementation: str) -> None:
    # The old pure reader cleared its flag, then copied, and a publish stored the snapshot
    # before flagging the readers: a reader flagged early could read the new version, and one
    # flagged late the old one after that (caught here within a second).
    found, published, reads = _new_then_old(_impl.variants("SnapshotMap")[implementation], seconds=2)
    print(f"{published} publishes, {reads} pairs of reads")
    assert published >= 50 and reads >= 1_000, (published, reads)
    assert found == [], found[:5]
