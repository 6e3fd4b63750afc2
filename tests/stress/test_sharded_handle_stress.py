"""ShardedMapHandle under real threads (issue 12): linearizable, exact, no false recursion.

Every test runs for each implementation importable here (pure, and C where the core imports).
Threads work through their own handles (made by themselves: the fast path), through ONE handle
shared by all of them (made by the main thread: other threads go the map's way) and through the
map itself, mixed at random in the same run:
- a linearizability check (ftmap.testing) of every single-key operation over a few hot keys;
- exact counters (merge/compute) through all three kinds of access at once;
- the shared-handle edges: the owner and other threads writing through one handle while
  callbacks of other threads hold shard locks (each thread's own re-entrancy mark: no false
  RecursiveUpdateError, no deadlock), and the pure handle's placement cache cleared by one
  thread while others read through it (every answer still the key's own value).
ShardedMap publishes nothing that writers replace (its shards are fixed at construction), so a
handle has no staleness window; the hammered edge is the per-thread one above.
Sized to finish under ThreadSanitizer in about two minutes (make tsan).
"""

from __future__ import annotations

import operator
import os
import random
import threading
from typing import Any

import pytest

from ftmap import MISSING, RecursiveUpdateError, _impl
from ftmap._sharded import _PLACES_MIN
from ftmap.testing import History, check_linearizable, run_threads
from tests.stress.test_sharded_stress import double_or_delete, is_even, keep_sum, toggle

MAPS = _impl.variants("ShardedMap")
SCALE = float(os.environ.get("FTMAP_STRESS_SCALE", "1.0"))


def _n(count: int) -> int:
    return max(1, int(count * SCALE))


class Access:
    """Per thread: its own handle (made by that thread), the shared handle, or the map."""

    def __init__(self, m: Any) -> None:
        self.map = m
        self.shared = m.handle()  # made by the main thread
        self.local = threading.local()

    def own(self) -> Any:
        handle = getattr(self.local, "handle", None)
        if handle is None:
            handle = self.local.handle = self.map.handle()
        return handle

    def pick(self, rng: random.Random) -> Any:
        kind = rng.randrange(4)
        return self.own() if kind < 2 else self.shared if kind == 2 else self.map


@pytest.mark.parametrize("implementation", list(MAPS))
@pytest.mark.parametrize("run", range(2))
def test_mixed_operations_through_handles_are_linearizable(
    implementation: str, run: int, ftmap_seed: int
) -> None:
    del run
    access = Access(MAPS[implementation](shards=8))
    history = History()

    def step(thread: int, rng: random.Random) -> None:
        r = history.recorder(access.pick(rng), thread)
        key, value, op = rng.randrange(24), rng.randrange(8), rng.randrange(14)
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
        elif op == 12:
            r.remove_if(key, is_even)
        else:
            key in r  # noqa: B015  (the lookup is the point)

    run_threads(step, threads=4, iterations=_n(1_500), seed=ftmap_seed, pin=True)
    result = check_linearizable(history)
    assert result.ok, result.explain()


@pytest.mark.parametrize("implementation", list(MAPS))
def test_counters_through_own_and_shared_handles_and_the_map_lose_nothing(
    implementation: str, ftmap_seed: int
) -> None:
    m = MAPS[implementation](shards=4)
    access = Access(m)
    iterations = _n(3_000)

    def step(thread: int, rng: random.Random) -> None:
        target = access.pick(rng)
        target.merge(rng.randrange(16), 1, operator.add)
        target.compute("total", lambda old: 1 if old is MISSING else old + 1)

    # run_threads raises what a thread raised
    run_threads(step, threads=4, iterations=iterations, seed=ftmap_seed, pin=True)
    assert m["total"] == 4 * iterations
    assert sum(v for k, v in m.items() if k != "total") == 4 * iterations


@pytest.mark.parametrize("implementation", list(MAPS))
def test_a_shared_handle_keeps_each_threads_marks(implementation: str, ftmap_seed: int) -> None:
    """Threads run callbacks through one shared handle (holding shard locks, marked as their
    own), while others, the owner included, write other keys through it: a write from inside a
    callback always raises RecursiveUpdateError, a write from outside never does."""
    m = MAPS[implementation](shards=4)
    shared = m.handle()
    rounds = _n(1_500)
    barrier = threading.Barrier(4)
    failures: list[str] = []

    def work(thread: int) -> None:
        rng = random.Random(ftmap_seed * 7 + thread)
        barrier.wait(30)
        for i in range(rounds):
            key = rng.randrange(32)
            if rng.random() < 0.5:

                def callback(old: Any) -> int:
                    try:
                        shared[1000 + thread] = i
                    except RecursiveUpdateError:
                        return 1 if old is MISSING else old + 1
                    failures.append(f"thread {thread}: a write inside a callback was allowed")
                    return 0

                shared.compute(key, callback)
            else:
                try:
                    shared[2000 + thread] = i
                    shared.merge(3000 + thread, 1, operator.add)
                except RecursiveUpdateError as error:
                    failures.append(f"thread {thread}: a write outside a callback refused: {error}")

    def owner_too(thread: int) -> None:
        work(thread)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(3)]
    for worker in workers:
        worker.start()
    owner_too(3)  # the main thread: the shared handle's owner, on its fast path
    for worker in workers:
        worker.join(120)
        assert not worker.is_alive(), "a worker hung"
    assert not failures, failures[:5]
    assert sum(m.get(3000 + t, 0) for t in range(4)) + sum(m.get(k, 0) for k in range(32)) == 4 * rounds
    assert not m._debug_state()["locked"]


def test_the_pure_handles_cache_cleared_under_readers_answers_right(ftmap_seed: int) -> None:
    m = MAPS["python"](shards=16)
    shared = m.handle()
    keys = list(range(_n(3 * _PLACES_MIN)))  # more than the cache holds: it is cleared, often
    for k in keys[::97]:
        m[k] = -k
    stop = threading.Event()
    failures: list[str] = []

    def read(thread: int) -> None:
        rng = random.Random(ftmap_seed + thread)
        while not stop.is_set():
            k = rng.choice(keys)
            expected = -k if k % 97 == 0 else None
            got = shared.get(k)
            if got != expected or (k in shared) != (expected is not None):
                failures.append(f"{k}: {got} != {expected}")
                return

    readers = [threading.Thread(target=read, args=(t,)) for t in range(2)]
    for reader in readers:
        reader.start()
    try:
        for k in keys:  # the owner fills (and so clears) the cache meanwhile
            assert shared.get(k) == (-k if k % 97 == 0 else None)
    finally:
        stop.set()
        for reader in readers:
            reader.join(60)
    assert not failures, failures[:5]
