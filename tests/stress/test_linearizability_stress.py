"""ftmap.testing under real threads: histories recorded from 4 threads, checked.

- The checker finds the bug in a map that does check-then-act without a lock,
  in every run, and never flags dict + one lock.
- Every map in the library gives linearizable histories of mixed single-key
  operations through the dict protocol (UnsafeMap, being unsynchronised by
  design, under one lock); each map's own API has its own test beside it.
"""

from __future__ import annotations

import operator
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from ftmap import ShardedMap, SnapshotMap, SyncMap, UnsafeMap
from ftmap.testing import MISSING, History, check_linearizable, run_threads


def broken_merge(data: dict[int, int], key: int, amount: int) -> int:
    # Check-then-act without a lock: another thread can come between the read and the write.
    new = data.get(key, 0) + amount
    data[key] = new
    return new


def counter_history(merge: Callable[[dict[int, int], int, int], int], seed: int) -> History:
    data: dict[int, int] = {}
    history = History()

    def step(thread: int, rng: random.Random) -> None:
        key = rng.randrange(4)
        if rng.random() < 0.8:
            history.record(thread, "merge", (key, 1, operator.add), lambda: merge(data, key, 1))
        else:
            history.record(thread, "get", (key,), lambda: data.get(key, MISSING))

    run_threads(step, threads=4, iterations=5_000, seed=seed, pin=True)
    return history


@pytest.mark.parametrize("run", range(10))
def test_broken_map_is_caught_in_every_run(run: int) -> None:
    seed = random.randrange(2**32)
    print(f"run {run} seed {seed}")
    result = check_linearizable(counter_history(broken_merge, seed))
    assert result.status == "illegal", result.explain()
    print(result.explain())


@pytest.mark.parametrize("run", range(10))
def test_dict_with_one_lock_is_never_flagged(run: int) -> None:
    seed = random.randrange(2**32)
    print(f"run {run} seed {seed}")
    lock = threading.Lock()

    def locked_merge(data: dict[int, int], key: int, amount: int) -> int:
        with lock:
            return broken_merge(data, key, amount)

    result = check_linearizable(counter_history(locked_merge, seed))
    assert result.ok, result.explain()


class Locked:
    """A map behind one lock: the recorded interval of each call holds its critical section."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.lock = threading.Lock()

    def get(self, key: Any, default: Any) -> Any:
        with self.lock:
            return self.inner.get(key, default)

    def __setitem__(self, key: Any, value: Any) -> None:
        with self.lock:
            self.inner[key] = value

    def pop(self, key: Any, default: Any) -> Any:
        with self.lock:
            return self.inner.pop(key, default)

    def setdefault(self, key: Any, value: Any) -> Any:
        with self.lock:
            return self.inner.setdefault(key, value)

    def __contains__(self, key: Any) -> bool:
        with self.lock:
            return key in self.inner


MAPS: dict[str, Callable[[], Any]] = {
    "UnsafeMap under a lock": lambda: Locked(UnsafeMap()),
    "SyncMap": SyncMap,
    "ShardedMap": ShardedMap,
    "SnapshotMap": SnapshotMap,
}


@pytest.mark.parametrize("make_map", MAPS.values(), ids=MAPS.keys())
def test_every_map_gives_linearizable_histories(make_map: Callable[[], Any]) -> None:
    history = History()
    shared = make_map()

    def step(thread: int, rng: random.Random) -> None:
        m = history.recorder(shared, thread)
        key, value, op = rng.randrange(64), rng.randrange(8), rng.randrange(5)
        if op == 0:
            m[key] = value
        elif op == 1:
            m.get(key)
        elif op == 2:
            m.pop(key, None)
        elif op == 3:
            m.setdefault(key, value)
        else:
            _ = key in m

    run = run_threads(step, threads=4, iterations=2_500, pin=True)
    print(f"seed {run.seed}: {len(history)} operations over 64 keys")
    started = time.monotonic()
    result = check_linearizable(history)
    print(f"checked in {time.monotonic() - started:.2f} s")
    assert result.ok, result.explain()
    assert len(history) == 10_000
