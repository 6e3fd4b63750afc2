"""ShardedMap under real threads: exact counters, one factory call per key, linearizable."""

from __future__ import annotations

import operator
import random
import threading
from collections import Counter

import pytest

from ftmap import DELETE, MISSING, ShardedMap
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
