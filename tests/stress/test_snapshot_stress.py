"""SnapshotMap under real threads: never torn, versions never go back, callbacks in order."""

from __future__ import annotations

import gc
import random
import threading

from ftmap import Change, SnapshotMap
from ftmap._snapshot import SnapshotMap as PureSnapshotMap
from ftmap.scenarios import SCENARIOS, run_scenario
from ftmap.testing import run_threads


def test_readers_never_see_a_torn_snapshot_and_versions_never_decrease(ftmap_seed: int) -> None:
    m: SnapshotMap[str, int] = SnapshotMap(a=0, b=0, c=0)
    done = threading.Event()

    def write() -> int:
        try:
            for i in range(1, 10_001):
                m.replace({"a": i, "b": 2 * i, "c": 3 * i})
        finally:
            done.set()
        return 10_000

    def read(thread: int) -> int:
        checks, last_version = 0, 0
        while not done.is_set() or checks < 1_000:
            snap = m.snapshot()
            assert snap["b"] == 2 * snap["a"] and snap["c"] == 3 * snap["a"], f"torn: {snap}"
            assert snap.version >= last_version, f"version went back: {last_version} -> {snap.version}"
            assert snap.version == snap["a"] + 1  # each replace is exactly one version
            last_version = snap.version
            checks += 1
        return checks

    run = run_threads(lambda t, rng: write() if t == 0 else read(t), threads=5, seed=ftmap_seed)
    assert m.version == 10_001
    assert all(t.results[0] >= 1_000 for t in run.threads[1:])


def test_concurrent_writers_each_publish_exactly_one_version_and_callbacks_arrive_in_order(
    ftmap_seed: int,
) -> None:
    m: SnapshotMap[str, int] = SnapshotMap()
    delivered: list[int] = []
    m.subscribe(lambda change: delivered.append(change.new.version))

    def write(thread: int, rng: random.Random) -> None:
        for i in range(500):
            m[f"{thread}-{i % 20}"] = i

    run_threads(write, threads=4, seed=ftmap_seed, pin=True)
    assert m.version == 1 + 4 * 500
    assert delivered == list(range(2, 2 + 4 * 500))  # every version, once, in order


def test_a_slow_subscriber_never_holds_up_publishing() -> None:
    m: SnapshotMap[str, int] = SnapshotMap()
    release = threading.Event()
    started = threading.Event()
    changes: list[Change] = []

    def slow(change: Change) -> None:
        started.set()
        release.wait(10)
        changes.append(change)

    m.subscribe(slow)
    first = threading.Thread(target=lambda: m.__setitem__("first", 1), daemon=True)
    first.start()
    assert started.wait(10)  # the first writer is now delivering, stuck in the callback
    for i in range(100):
        m[f"k{i}"] = i  # other publishes go through meanwhile
    assert m.version == 102
    release.set()
    first.join(10)
    assert [c.new.version for c in changes] == list(range(2, 103))


def test_iteration_and_finalizer_scenarios_fixed_with_snapshot_map_do_no_damage() -> None:
    for name in ("iterate-while-write", "finalizer-read"):
        scenario = next(s for s in SCENARIOS if s.name == name)
        for _ in range(10):
            outcome = run_scenario(scenario, SnapshotMap, "ftmap", 20_000)
            assert outcome.damage == 0, outcome.damage_text
            assert not outcome.errors


def test_per_thread_readers_never_read_older_than_a_finished_publish(ftmap_seed: int) -> None:
    m: SnapshotMap[str, int] = SnapshotMap(v=0)
    finished = [0]  # the last version whose publish has returned (written by the writer only)
    done = threading.Event()

    def write() -> None:
        try:
            for i in range(1, 5_001):
                m.replace({"v": i})
                finished[0] = i
        finally:
            done.set()

    def read(thread: int) -> int:
        reader, checks, last = m.reader(), 0, 0
        while not done.is_set() or checks < 1_000:
            floor = finished[0]  # read before: this publish had finished when the read began
            value = reader["v"]
            assert value >= floor, f"read {value} after version {floor} had been published"
            assert value >= last, f"went back from {last} to {value}"
            last = value
            checks += 1
        return checks

    run_threads(lambda t, rng: write() if t == 0 else read(t), threads=3, seed=ftmap_seed)
    assert m["v"] == 5_000


def test_a_new_reader_is_never_older_than_a_finished_publish(ftmap_seed: int) -> None:
    # Readers register their stale flag and take their first copy under the writer lock:
    # no publish can fall between the two, however they race.
    m: SnapshotMap[str, int] = SnapshotMap(v=0)
    finished = [0]
    done = threading.Event()

    def write() -> None:
        try:
            for i in range(1, 3_001):
                m.replace({"v": i})
                finished[0] = i
        finally:
            done.set()

    def make_readers(thread: int) -> int:
        made = 0
        while not done.is_set() or made < 200:
            floor = finished[0]
            reader = m.reader()
            for _ in range(3):
                assert reader["v"] >= floor, f"a new reader read {reader['v']} after {floor} was published"
                floor = finished[0]
            made += 1
        return made

    run_threads(lambda t, rng: write() if t == 0 else make_readers(t), threads=3, seed=ftmap_seed)
    if isinstance(m, PureSnapshotMap):  # the pure readers are followers (the C readers have none)
        gc.collect()
        assert m._published.followers() == 0, "a dead reader is still flagged by every publish"


def test_subscribing_and_unsubscribing_while_others_publish_gives_contiguous_versions(
    ftmap_seed: int,
) -> None:
    m: SnapshotMap[str, int] = SnapshotMap()
    done = threading.Event()

    def write(thread: int) -> None:
        try:
            for i in range(2_000):
                m[f"{thread}"] = i
        finally:
            done.set()

    def subscribe_often(thread: int) -> int:
        rounds = 0
        while not done.is_set() or rounds < 50:
            records: list[Change] = []
            unsubscribe = m.subscribe(records.append)
            subscribed_at = m.version
            for _ in range(50):
                m.get("0")
            unsubscribe()
            versions = [c.new.version for c in records]
            if versions:
                assert versions == list(range(versions[0], versions[-1] + 1)), "a version was skipped"
                assert versions[0] <= subscribed_at + 1, f"from {versions[0]}, subscribed at {subscribed_at}"
            rounds += 1
        return rounds

    run_threads(lambda t, rng: write(t) if t < 2 else subscribe_often(t), threads=3, seed=ftmap_seed)
    assert m.flush() and m.version == 1 + 2 * 2_000
