"""SyncMap under real threads: linearizable, read-your-writes through promotions, safe iteration."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest

from ftmap import SyncMap
from ftmap.scenarios import SCENARIOS, run_scenario
from ftmap.testing import History, check_linearizable, run_threads


@pytest.mark.parametrize("run", range(5))
def test_mixed_operations_are_linearizable_through_promotions(run: int, ftmap_seed: int) -> None:
    m: SyncMap[int, int] = SyncMap()
    history = History()

    def step(thread: int, rng: random.Random) -> None:
        r = history.recorder(m, thread)
        key, value, op = rng.randrange(64), rng.randrange(4), rng.randrange(10)
        if op == 0:
            r.store(key, value)
        elif op == 1:
            r.load(key)
        elif op == 2:
            r.load_or_store(key, value)
        elif op == 3:
            r.load_and_delete(key)
        elif op == 4:
            r.delete(key)
        elif op == 5:
            r.swap(key, value)
        elif op == 6:
            r.compare_and_swap(key, value, rng.randrange(4))
        elif op == 7:
            r.compare_and_delete(key, value)
        elif op == 8:
            r[key] = value
        else:
            r.get(key)

    run_threads(step, threads=4, iterations=2_500, seed=ftmap_seed, pin=True)
    result = check_linearizable(history)
    assert result.ok, result.explain()
    assert m.stats().promotions >= 3, m.stats()  # the promotion machinery was exercised


def test_a_thread_always_reads_its_own_write_during_promotion_churn(ftmap_seed: int) -> None:
    m: SyncMap[object, int] = SyncMap()
    stop = threading.Event()

    def churn(thread: int, rng: random.Random) -> int:
        # Fresh keys go to the dirty map; loads of absent keys count misses: promotions, continuously.
        # The dirty map stays small (32 live fresh keys a thread), so promotions come often.
        i = 0
        while not stop.is_set():
            m.store(("fresh", thread, i), i)
            for j in range(8):
                m.load(("absent", thread, i, j))
            m.delete(("fresh", thread, i - 32))
            i += 1
        return i

    def check(thread: int, rng: random.Random) -> int:
        # At least 20,000 store-then-load rounds, and on until 50 promotions happened meanwhile.
        deadline = time.monotonic() + 60
        i = 0
        try:
            while i < 20_000 or (m.stats().promotions < 50 and time.monotonic() < deadline):
                for _ in range(1_000):
                    key = ("own", thread, i % 50)
                    m.store(key, i)
                    assert m.load(key) == (i, True), f"thread {thread} lost its own store {i}"
                    assert m[key] == i and key in m
                    i += 1
        finally:
            stop.set()
        return i

    def role(thread: int, rng: random.Random) -> int:
        return check(thread, rng) if thread < 2 else churn(thread, rng)

    run_threads(role, threads=4, seed=ftmap_seed, pin=True)
    assert m.stats().promotions >= 50, m.stats()  # promotions all along


def test_iteration_under_concurrent_writes_never_raises_repeats_or_misses_a_stable_key(
    ftmap_seed: int,
) -> None:
    stable = {("stable", i): i for i in range(200)}
    m: SyncMap[object, int] = SyncMap(stable)
    stop = threading.Event()

    def write(thread: int, rng: random.Random) -> None:
        while not stop.is_set():
            key = ("churn", rng.randrange(500))
            if rng.random() < 0.5:
                m.store(key, 1)
            else:
                m.delete(key)

    def iterate(thread: int, rng: random.Random) -> None:
        try:
            for _ in range(300):
                seen = Counter(iter(m))  # Counter(m) would read m's values as counts
                assert max(seen.values()) == 1, "a key was visited twice"
                assert all(key in seen for key in stable), "a key present throughout was missed"
                seen_items = dict(m.items())
                assert all(seen_items[k] == v for k, v in stable.items())
        finally:
            stop.set()

    run_threads(lambda t, rng: iterate(t, rng) if t == 0 else write(t, rng), threads=3, seed=ftmap_seed)


def test_check_then_act_fixed_with_load_or_store_loses_nothing() -> None:
    scenario = next(s for s in SCENARIOS if s.name == "check-then-act")
    for _ in range(20):
        outcome = run_scenario(scenario, SyncMap, "ftmap", 20_000)
        assert outcome.damage_text.startswith("0 keys claimed twice")
        assert outcome.damage == 0, outcome.damage_text
        assert not outcome.errors
