"""SyncMap against dict and dict + one Lock: the bars of its issue, measured in one run.

- read hit on one thread: SyncMap m[k], m.get(k), m.load(k) against dict d[k]
- reads on 1 and 2 threads: throughput and scaling, against a shared plain dict
- a read-mostly mix (90% reads, 10% overwrites) on 2 threads, against dict + one Lock

Each thread runs its own tight loop over its own copy of the keys, started by
one Barrier (ftmap.testing.run_threads); best of several repetitions.

    python benchmarks/syncmap.py [--repeat N]
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from _common import start

from ftmap import SyncMap
from ftmap.testing import run_threads

KEYS = [sys.intern(f"key-{i}") for i in range(1000)]
ROUNDS = 200  # passes over the keys per thread


def make_dict() -> dict[str, int]:
    return {k: i for i, k in enumerate(KEYS)}


def make_sync() -> SyncMap[str, int]:
    m = SyncMap(make_dict())
    list(m)  # promote: every key in the read map (iteration promotes; len does not)
    return m


def read_loop(kind: str) -> Callable[[Any, list[str]], None]:
    def dict_read(d: Any, keys: list[str]) -> None:
        for _ in range(ROUNDS):
            for k in keys:
                d[k]

    def method_read(m: Any, keys: list[str]) -> None:
        read = getattr(m, kind)
        for _ in range(ROUNDS):
            for k in keys:
                read(k)

    return dict_read if kind == "[]" else method_read


def mix_loop(kind: str) -> Callable[[Any, list[str]], None]:
    # 90% reads, 10% overwrites of existing keys, in a fixed pseudo-random order.
    def body(target: Any, keys: list[str]) -> None:
        ops = [random.Random(7).random() < 0.1 for _ in keys]
        pairs = list(zip(keys, ops, strict=True))
        if kind == "lock":
            d, lock = target
            for _ in range(ROUNDS):
                for k, write in pairs:
                    with lock:
                        if write:
                            d[k] = 1
                        else:
                            d[k]
        else:  # SyncMap through the same protocol as the dicts: m[k], m[k] = v
            for _ in range(ROUNDS):
                for k, write in pairs:
                    if write:
                        target[k] = 1
                    else:
                        target[k]

    return body


def mops(loop: Callable[[Any, list[str]], None], target: Any, threads: int, repeat: int) -> float:
    """Million operations per second, all threads together; best of ``repeat``."""
    best = 0.0
    for _ in range(repeat):
        started = time.perf_counter()
        run_threads(lambda index, rng: loop(target, list(KEYS)), threads=threads, pin=threads > 1)
        seconds = time.perf_counter() - started
        best = max(best, threads * ROUNDS * len(KEYS) / seconds / 1e6)
    return best


def main() -> None:
    r = start(__doc__)

    print("\nRead hit, one thread (Mops/s; ratio = dict d[k] time / this time):\n")
    print("| operation | Mops/s | time vs dict d[k] |")
    print("|---|---:|---:|")
    base = mops(read_loop("[]"), make_dict(), 1, r)
    print(f"| dict d[k] | {base:.2f} | 1.00x |")
    for label, kind in (("SyncMap m[k]", "[]"), ("SyncMap m.get(k)", "get"), ("SyncMap m.load(k)", "load")):
        rate = mops(read_loop(kind), make_sync(), 1, r)
        print(f"| {label} | {rate:.2f} | {base / rate:.2f}x |")

    print("\nReads, 1 and 2 threads on one shared map (Mops/s, all threads):\n")
    print("| map | 1 thread | 2 threads | scaling |")
    print("|---|---:|---:|---:|")
    for label, loop, make in (
        ("dict d[k]", read_loop("[]"), make_dict),
        ("SyncMap m[k]", read_loop("[]"), make_sync),
        ("SyncMap m.load(k)", read_loop("load"), make_sync),
    ):
        one, two = mops(loop, make(), 1, r), mops(loop, make(), 2, r)
        print(f"| {label} | {one:.2f} | {two:.2f} | {two / one:.2f}x |")

    print("\nRead-mostly mix, 90% reads / 10% overwrites (Mops/s, all threads):\n")
    print("| map | 1 thread | 2 threads |")
    print("|---|---:|---:|")
    for label, kind, make_target in (
        ("dict (unsynchronised)", "plain", make_dict),
        ("dict + one Lock", "lock", lambda: (make_dict(), threading.Lock())),
        ("SyncMap m[k], m[k] = v", "sync", make_sync),
    ):
        one, two = mops(mix_loop(kind), make_target(), 1, r), mops(mix_loop(kind), make_target(), 2, r)
        print(f"| {label} | {one:.2f} | {two:.2f} |")


if __name__ == "__main__":
    main()
