"""ShardedMap against dict and dict + one Lock: the bars of its issue, measured in one run.

- single-key get on one thread, against dict d[k]
- write-heavy on disjoint keys (each thread its own keys), 2 threads, against dict + one Lock
- counter increments through merge, 2 threads, against the same loop under one global lock

    python benchmarks/shardedmap.py [--repeat N]
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable

from _common import KEYS, ROUNDS, per_key, rate, start

from ftmap import ShardedMap


def disjoint_writes(store: Callable[[str, int], None]) -> Callable[[int], None]:
    def body(thread: int) -> None:
        keys = [f"{k}-{thread}" for k in KEYS]  # each thread its own keys
        for _ in range(ROUNDS):
            for k in keys:
                store(k, 1)

    return body


def main() -> None:
    r = start(__doc__)

    d = {k: 0 for k in KEYS}
    sharded: ShardedMap[str, int] = ShardedMap(d)
    print("\nSingle-key read, one thread:\n")
    print("| operation | Mops/s | time vs dict d[k] |")
    print("|---|---:|---:|")
    base = rate(per_key(d.__getitem__), 1, r)
    print(f"| dict d[k] (as a bound method) | {base:.2f} | 1.00x |")
    for label, get in (("ShardedMap m[k]", sharded.__getitem__), ("ShardedMap m.get(k)", sharded.get)):
        got = rate(per_key(get), 1, r)
        print(f"| {label} | {got:.2f} | {base / got:.2f}x |")

    print("\nWrites and counters, 2 threads (Mops/s, both threads together):\n")
    print("| workload | dict + one Lock | ShardedMap (16) | (32) | (64) | ShardedMap(32) / Lock |")
    print("|---|---:|---:|---:|---:|---:|")

    def locked_store() -> Callable[[str, int], None]:
        data: dict[str, int] = {}
        lock = threading.Lock()

        def store(k: str, v: int) -> None:
            with lock:
                data[k] = v

        return store

    def locked_increment() -> Callable[[str], None]:
        data: dict[str, int] = {}
        lock = threading.Lock()

        def increment(k: str) -> None:
            with lock:
                data[k] = data.get(k, 0) + 1

        return increment

    def merge_increment(shards: int) -> Callable[[str], None]:
        m: ShardedMap[str, int] = ShardedMap(shards=shards)
        add = operator.add
        return lambda k: m.merge(k, 1, add) and None

    rows = (
        (
            "write-heavy, disjoint keys",
            lambda: disjoint_writes(locked_store()),
            lambda n: disjoint_writes(ShardedMap(shards=n).__setitem__),
        ),
        (
            "counter increments (merge)",
            lambda: per_key(locked_increment()),
            lambda n: per_key(merge_increment(n)),
        ),
    )
    for label, lock_body, sharded_body in rows:
        locked = rate(lock_body(), 2, r)
        per_shards = [rate(sharded_body(n), 2, r) for n in (16, 32, 64)]
        cells = " | ".join(f"{x:.2f}" for x in per_shards)
        print(f"| {label} | {locked:.2f} | {cells} | {per_shards[1] / locked:.2f}x |")


if __name__ == "__main__":
    main()
