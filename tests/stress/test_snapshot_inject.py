"""SnapshotMap under asynchronous exceptions (issue 13, break 6): thousands of rounds of
tests/inject.py, each an exception thrown at a random moment into a thread that writes,
publishes, delivers to subscribers and refreshes a reader and a handle (some writes go
through the handle).

After every round: no lock held; the content is that of the writes that completed (plus
perhaps the interrupted one, all or nothing); version = publishes + 1; the history ends
with the current snapshot and is contiguous; the reader is current; and once flushed,
every subscriber has had every version once, in order. After the rounds, another thread
writes and flushes the last map within a timeout.
"""

from __future__ import annotations

from typing import Any

from ftmap import Change, SnapshotMap
from tests.inject import inject_rounds
from tests.threads import within

HISTORY = 5
BATCH = 16


class State:
    def __init__(self) -> None:
        self.map: SnapshotMap[str, Any] = SnapshotMap(k0=0, history=HISTORY)
        # C callables (list.append): no Python frame, so an exception can only land before
        # or after the call, and each version is recorded exactly once.
        self.first: list[Change] = []
        self.last: list[Change] = []
        self.map.subscribe(self.first.append)
        self.map.subscribe(lambda change: change.changed)  # Python code in the delivery: a target
        self.map.subscribe(self.last.append)
        self.reader = self.map.reader()
        self.handle = self.map.handle()  # some writes go through it, and it must stay current


def _bump(current: Any) -> dict[str, Any]:
    return {**current, "t": current.get("t", 0) + 1}


def operation(state: State, i: int) -> None:
    m, kind, h = state.map, i % 8, state.handle
    if kind == 0:
        h[f"k{i}"] = [i]
    elif kind == 1:
        m.update({f"u{i}": i, "k0": i})
    elif kind == 2:
        m.pop(f"k{i - 2}", None)
    elif kind == 3:
        h.setdefault(f"s{i}", i)
    elif kind == 4:
        m.transform(_bump)
    elif kind == 5:
        m.compare_and_replace(m.version, {**m.snapshot(), "c": i})
    elif kind == 6:
        m.rollback(m.version - 1)
    else:
        del m[f"u{i - 6}"]
    state.reader.get("t")  # a refresh after every publish: a target too
    h.get("t")


def expected_contents() -> list[dict[str, Any]]:
    """contents[v - 1]: the content of version v when the operations run uninterrupted."""
    contents: list[dict[str, Any]] = [{"k0": 0}]
    for i in range(BATCH):
        d, kind = dict(contents[-1]), i % 8
        if kind == 0:
            d[f"k{i}"] = (i,)
        elif kind == 1:
            d.update({f"u{i}": i, "k0": i})
        elif kind == 2:
            d.pop(f"k{i - 2}", None)
        elif kind == 3:
            d.setdefault(f"s{i}", i)
        elif kind == 4:
            d = _bump(d)
        elif kind == 5:
            d["c"] = i
        elif kind == 6:
            d = dict(contents[-2])
        else:
            del d[f"u{i - 6}"]
        contents.append(d)
    return contents


CONTENTS = expected_contents()
ALL_KEYS = sorted({k for content in CONTENTS for k in content} | {"never"})


def assert_unlocked(m: SnapshotMap[Any, Any]) -> None:
    for name in ("_lock", "_delivering"):
        lock = getattr(m, name)
        assert lock.acquire(blocking=False), f"{name} left held"
        lock.release()


def check(state: State, done: int, inside: bool) -> None:
    m = state.map
    assert_unlocked(m)
    version = m.version
    # Every operation publishes one version: the done ones, and the interrupted one all or nothing.
    assert version == 1 + done or (inside and version == 2 + done), (version, done, inside)
    snapshot = m.snapshot()
    assert dict(snapshot) == CONTENTS[version - 1]
    history = m.history_versions()
    assert history == list(range(max(1, version - HISTORY + 1), version + 1))
    assert m._history[-1] is snapshot
    for key in ALL_KEYS:  # the reader and the handle are current, present keys and absent ones alike
        assert state.reader.get(key, "absent") == snapshot.get(key, "absent"), key
        assert state.handle.get(key, "absent") == snapshot.get(key, "absent"), key
    assert state.handle.snapshot() is snapshot and state.handle.version == version
    assert m.flush(), "a delivery is still pending after flush()"
    for records in (state.first, state.last):
        assert [c.new.version for c in records] == list(range(2, version + 1))
        assert all(c.old.version + 1 == c.new.version for c in records)
    assert_unlocked(m)


def test_async_exceptions_in_writes_publishes_deliveries_and_refreshes(ftmap_seed: int) -> None:
    states: list[State] = []

    def setup() -> State:
        states.append(State())
        del states[:-1]
        return states[-1]

    stats = inject_rounds(setup, operation, check, rounds=3000, seed=ftmap_seed, batch=BATCH)
    print(stats)
    assert stats.rounds == 3000
    assert stats.inside >= 600, f"too few exceptions landed inside an operation: {stats}"
    m = states[-1].map
    version = m.version
    within(10, lambda: (m.__setitem__("probe", 1), m.flush()))
    assert m.version == version + 1 and [c.new.version for c in states[-1].last][-1] == version + 1


def test_async_exceptions_in_subscribe_unsubscribe_and_reader_creation(ftmap_seed: int) -> None:
    class Subscribers:
        def __init__(self) -> None:
            self.map: SnapshotMap[str, int] = SnapshotMap()
            self.unsubscribes: list[Any] = []
            self.records: list[Change] = []
            self.readers: list[Any] = []

    def operation(state: Subscribers, i: int) -> None:
        kind = i % 4
        if kind == 0:
            state.unsubscribes.append(state.map.subscribe(state.records.append))
        elif kind == 1:
            state.map[f"k{i}"] = i
        elif kind == 2:
            state.readers.append(state.map.reader())
        elif state.unsubscribes:
            state.unsubscribes.pop()()

    def check(state: Subscribers, done: int, inside: bool) -> None:
        m = state.map
        assert_unlocked(m)
        assert m.flush()
        versions = [c.new.version for c in state.records]
        assert versions == sorted(versions) and len(set(versions)) == len(versions)
        assert m.history_versions()[-1] == m.version
        for reader in state.readers:
            assert dict(reader.items()) == dict(m.snapshot())
            assert all(reader[k] == v for k, v in m.snapshot().items())
        within(10, lambda: m.__setitem__("probe", 1))  # another thread can still write it
        assert_unlocked(m)

    stats = inject_rounds(Subscribers, operation, check, rounds=1000, seed=ftmap_seed, batch=12)
    print(stats)
    assert stats.inside >= 200, f"too few exceptions landed inside an operation: {stats}"
