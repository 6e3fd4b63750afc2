"""ShardedMapHandle (issue 12): per-thread handles against the shared map, C and pure Python.

- single thread, 1,000 interned str keys: ``h[k]``, ``h.get(k)``, ``k in h``, ``h[k] = v`` and
  ``h.merge(k, 1, add)`` through a handle against the same call through the map (bar: no worse)
- 2 threads against 1, through per-thread handles and through the shared map: read-only
  (bar 1.8x), 95% reads / 5% writes (bar 1.6x), writes to disjoint shards (bar 1.6x); each
  thread's keys live on shards no other thread writes

    python benchmarks/sharded_handle.py [--repeat N]
"""

from __future__ import annotations

import operator
import os
import time
from collections.abc import Callable
from typing import Any

from _common import KEYS, ROUNDS, rate, start

from ftmap import _impl

VARIANTS: dict[str, Any] = _impl.variants("ShardedMap")
add = operator.add


def single(loop: Callable[[Any], None], target: Any, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        loop(target)
        best = min(best, time.perf_counter() - started)
    return best / (ROUNDS * len(KEYS)) * 1e9


def loop_getitem(t: Any) -> None:
    for _ in range(ROUNDS):
        for k in KEYS:
            t[k]


def loop_get(t: Any) -> None:
    for _ in range(ROUNDS):
        for k in KEYS:
            t.get(k)


def loop_contains(t: Any) -> None:
    for _ in range(ROUNDS):
        for k in KEYS:
            k in t  # noqa: B015  (the lookup is the point)


def loop_setitem(t: Any) -> None:
    for _ in range(ROUNDS):
        for k in KEYS:
            t[k] = 1


def loop_merge(t: Any) -> None:
    for _ in range(ROUNDS):
        for k in KEYS:
            t.merge(k, 1, add)


def own_keys(m: Any, thread: int) -> list[str]:
    """1,000 keys (repeated) on the shards of this thread's parity: disjoint from the other's."""
    mine = [k for k in KEYS if m.shard_index(k) % 2 == thread % 2]
    return (mine * (len(KEYS) // len(mine) + 1))[: len(KEYS)]


def body(m: Any, kind: str, through: str) -> Callable[[int], None]:
    def run(thread: int) -> None:
        t = m.handle() if through == "handle" else m
        keys = own_keys(m, thread)
        if kind == "read-only":
            for _ in range(ROUNDS):
                for k in keys:
                    t[k]
        elif kind == "95/5":
            for _ in range(ROUNDS):
                for i, k in enumerate(keys):
                    if i % 20 == 0:
                        t[k] = i
                    else:
                        t[k]
        else:
            for _ in range(ROUNDS):
                for k in keys:
                    t[k] = 1

    return run


def main() -> None:
    repeat = start(__doc__)
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (2 cores shared)")
    for impl, cls in VARIANTS.items():
        m = cls(dict.fromkeys(KEYS, 0))
        h = m.handle()
        print(f"\n{impl}: single thread, ns per operation (map -> handle)")
        for name, loop in [
            ("m[k]", loop_getitem),
            ("get", loop_get),
            ("in", loop_contains),
            ("m[k] = v", loop_setitem),
            ("merge", loop_merge),
        ]:
            by_map, by_handle = single(loop, m, repeat), single(loop, h, repeat)
            print(f"  {name:10} {by_map:7.0f} -> {by_handle:7.0f}  ({by_map / by_handle:.2f}x faster)")
        print(f"{impl}: 2 threads / 1 thread, Mops/s (bars: read-only 1.8x, 95/5 1.6x, disjoint writes 1.6x)")
        for kind in ("read-only", "95/5", "disjoint writes"):
            for through in ("map", "handle"):
                one = rate(body(m, kind, through), 1, repeat)
                two = rate(body(m, kind, through), 2, repeat)
                print(f"  {kind:16} via {through:6}  1t {one:6.2f}  2t {two:6.2f}  scaling {two / one:.2f}x")
    print(f"\nload average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")


if __name__ == "__main__":
    main()
