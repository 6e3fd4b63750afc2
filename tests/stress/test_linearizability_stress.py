"""The checker finds a check-then-act bug in every run, and never flags dict + one lock."""

from __future__ import annotations

import operator
import random
import threading
from collections.abc import Callable

import pytest

from ftmap._threads import run_together
from ftmap.testing import MISSING, Operation, check_linearizable, recorded


def broken_merge(data: dict[int, int], key: int, amount: int) -> int:
    # Check-then-act without a lock: a read and a write that another thread can split.
    new = data.get(key, 0) + amount
    data[key] = new
    return new


def run_counters(merge: Callable[[dict[int, int], int, int], int], seed: int) -> list[Operation]:
    data: dict[int, int] = {}
    history: list[Operation] = []

    def worker(thread: int) -> None:
        rng = random.Random(seed + thread)
        for _ in range(5_000):
            key = rng.randrange(4)
            if rng.random() < 0.8:
                recorded(history, thread, "merge", (key, 1, operator.add), lambda: merge(data, key, 1))
            else:
                recorded(history, thread, "get", (key,), lambda: data.get(key, MISSING))

    run_together([lambda i=i: worker(i) for i in range(4)], pin=True)
    return history


@pytest.mark.parametrize("run", range(5))
def test_broken_map_is_caught_in_every_run(run: int) -> None:
    seed = random.randrange(2**32)
    print(f"run {run} seed {seed}")
    result = check_linearizable(run_counters(broken_merge, seed))
    assert result.status == "illegal", result.explain()


@pytest.mark.parametrize("run", range(5))
def test_dict_with_one_lock_is_never_flagged(run: int) -> None:
    seed = random.randrange(2**32)
    print(f"run {run} seed {seed}")
    lock = threading.Lock()

    def locked_merge(data: dict[int, int], key: int, amount: int) -> int:
        with lock:
            return broken_merge(data, key, amount)

    result = check_linearizable(run_counters(locked_merge, seed))
    assert result.ok, result.explain()
