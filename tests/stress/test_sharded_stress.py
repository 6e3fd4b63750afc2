"""ShardedMap under real threads: exact counters, one factory call per key, linearizable."""

from __future__ import annotations

import operator
import random
import threading
from collections import Counter

import pytest

from ftmap import DELETE, MISSING, RecursiveUpdateError, ShardedMap
from ftmap.scenarios import SCENARIOS, run_scenario
from ftmap.testing import History, check_linearizable, run_threads


def test_eight_threads_merging_counters_lose_nothing(ftmap_seed: int) -> None:
    m: ShardedMap[int, int] = ShardedMap()
    run = run_threads(
        lambda t, rng: [m.merge(rng.randrange(64), 1, operator.add) for _ in range(50_000)] and None,
        threads=8,
        seed=ftmap_seed,
    )
    expected: Counter[int] = Counter()
    for thread in range(8):  # replay each thread's generator: the exact keys it merged
        rng = random.Random(run.seed * 1_000_003 + thread)
        expected.update(rng.randrange(64) for _ in range(50_000))
    assert dict(m.items()) == dict(expected)
    assert sum(m.values()) == 8 * 50_000


def test_compute_if_absent_calls_its_factory_once_per_key(ftmap_seed: int) -> None:
    m: ShardedMap[int, object] = ShardedMap(shards=4)
    calls: Counter[int] = Counter()
    lock = threading.Lock()

    def factory(key: int) -> object:
        with lock:
            calls[key] += 1
        return object()

    def race(thread: int, rng: random.Random) -> list[object]:
        return [m.compute_if_absent(key, factory) for key in range(2_000)]

    run = run_threads(race, threads=8, seed=ftmap_seed, pin=True)
    assert set(calls.values()) == {1} and len(calls) == 2_000
    first = run.threads[0].results[0]
    assert all(t.results[0] == first for t in run.threads)  # every thread got the one value


def toggle(old: object) -> object:
    return 1 if old is MISSING else DELETE


def double_or_delete(old: int) -> object:
    return DELETE if old > 5 else old * 2


def keep_sum(exists: bool, old: int | None, new: int) -> int:
    return (old or 0) + new


def is_even(key: int, value: int | None, exists: bool) -> bool:
    return exists and value is not None and value % 2 == 0


@pytest.mark.parametrize("run", range(3))
def test_mixed_operations_are_linearizable(run: int, ftmap_seed: int) -> None:
    m: ShardedMap[int, int] = ShardedMap(shards=8)
    history = History()

    def step(thread: int, rng: random.Random) -> None:
        r = history.recorder(m, thread)
        key, value, op = rng.randrange(64), rng.randrange(8), rng.randrange(13)
        if op == 0:
            r[key] = value
        elif op == 1:
            r.get(key)
        elif op == 2:
            r.pop(key, None)
        elif op == 3:
            r.setdefault(key, value)
        elif op == 4:
            r.set_if_absent(key, value)
        elif op == 5:
            r.replace(key, value, rng.randrange(8))
        elif op == 6:
            r.remove(key, value)
        elif op == 7:
            r.compute(key, toggle)
        elif op == 8:
            r.merge(key, value, operator.add)
        elif op == 9:
            r.compute_if_absent(key, abs)
        elif op == 10:
            r.compute_if_present(key, double_or_delete)
        elif op == 11:
            r.upsert(key, value, keep_sum)
        else:
            r.remove_if(key, is_even)

    run_threads(step, threads=4, iterations=2_500, seed=ftmap_seed, pin=True)
    result = check_linearizable(history)
    assert result.ok, result.explain()


@pytest.mark.parametrize("name", ["shared-counter", "set-churn"])
def test_scenarios_fixed_with_sharded_map_lose_nothing(name: str) -> None:
    scenario = next(s for s in SCENARIOS if s.name == name)
    assert scenario.fix is not None and scenario.fix.map_type is ShardedMap
    for _ in range(20):
        outcome = run_scenario(scenario, ShardedMap, "ftmap", 20_000)
        assert outcome.damage == 0, outcome.damage_text
        assert not outcome.errors


# -- lock-free iteration and re-entrancy under real threads (issue 13, break 2) ---------------


def test_a_shard_snapshot_is_a_state_the_shard_really_had(ftmap_seed: int) -> None:
    # One shard; the writer keeps a sliding window of keys [i - 16, i], inserting the next
    # and deleting the oldest, one dict operation at a time: every state it passes
    # through is a contiguous run of 16 or 17 keys. A snapshot taken without the lock
    # must be one of those states: never torn, never raising, never a key twice.
    m: ShardedMap[int, int] = ShardedMap({i: i for i in range(16)}, shards=1)
    done = threading.Event()
    window = 16

    def writer() -> None:
        for i in range(window, 60_000):
            m[i] = i
            del m[i - window]
        done.set()

    def reader() -> int:
        snapshots = 0
        while not done.is_set():
            for seen in (list(m.items()), list(m.copy().items()), list(m.values())):
                keys = [item[0] if isinstance(item, tuple) else item for item in seen]
                assert len(keys) in (window, window + 1), keys
                assert keys == list(range(keys[0], keys[0] + len(keys))), keys
            assert (m == {}) is False and repr(m).startswith("ShardedMap({")
            snapshots += 1
        return snapshots

    run = run_threads(lambda t, rng: writer() if t == 0 else reader(), threads=3, seed=ftmap_seed, pin=True)
    assert all(t.results[0] > 0 for t in run.threads[1:])


def test_callbacks_reading_the_whole_map_never_deadlock_under_contention(ftmap_seed: int) -> None:
    m: ShardedMap[int, int] = ShardedMap({i: 0 for i in range(64)}, shards=4)

    def step(thread: int, rng: random.Random) -> None:
        key = rng.randrange(64)
        if thread % 2:
            m.compute(key, lambda old: old + 1 + 0 * len(list(m.items())) + 0 * (m == {}))
        else:
            m.merge(key, 1, lambda old, new: old + new + 0 * len(repr(m)) + 0 * len(m.copy()))

    run_threads(step, threads=4, iterations=1_500, seed=ftmap_seed, pin=True, timeout=120)
    assert sum(m.values()) == 4 * 1_500


class CrossWriter:
    """Hashes like ``name``; on a collision its __eq__ writes ``target`` into the map."""

    def __init__(self, name: int, m: ShardedMap[object, int], target: int) -> None:
        self.name, self.m, self.target = name, m, target

    def __hash__(self) -> int:
        return hash(self.name)

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        self.m[self.target] = 1  # from under the shard lock of self's own shard
        return isinstance(other, CrossWriter) and other.name == self.name


def test_keys_that_write_other_shards_from_eq_never_deadlock(ftmap_seed: int) -> None:
    # Thread A holds shard(a) and writes shard(b) from __eq__; thread B holds shard(b)
    # and writes shard(a): with plain locks, each waits for the other forever. Here the
    # nested write raises RecursiveUpdateError before it waits.
    m: ShardedMap[object, int] = ShardedMap(shards=2)
    a = next(i for i in range(100) if m.shard_index(i) == 0)
    b = next(i for i in range(100) if m.shard_index(i) == 1)
    m[CrossWriter(a, m, b)] = 0
    m[CrossWriter(b, m, a)] = 0
    refused = [0, 0, 0, 0]  # one counter per thread: += on a shared one loses counts

    def step(thread: int, rng: random.Random) -> None:
        name, target = (a, b) if thread % 2 else (b, a)
        try:
            m[CrossWriter(name, m, target)] = thread  # equal to the stored one: __eq__ runs
        except RecursiveUpdateError:
            refused[thread] += 1

    run_threads(step, threads=4, iterations=2_000, seed=ftmap_seed, pin=True, timeout=60)
    assert refused == [2_000] * 4  # every nested write refused, none waited
    # Unchanged: the two keys, their values. (No lookup of a or b here: the lookup would
    # run __eq__, whose write is nested in the other shard's.)
    assert sorted((k.name, v) for k, v in m.items()) == [(a, 0), (b, 0)]
