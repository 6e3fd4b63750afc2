"""SnapshotMapHandle (issue 12), C and pure Python: single-thread cost and 2-thread scaling.

- One thread: h[k], h.get(k), k in h through a handle against the same operation through the
  map (bar: the handle no worse), 1,000 interned str keys.
- Through a handle per thread, 1 and 2 threads: read-only h[k] and h.get(k) (bar 1.8x), and
  95/5 (95 reads, 5 writes h[k] = v of every 100 operations; bar 1.6x).

    python benchmarks/snapshot_handle.py [--repeat N]
"""

from __future__ import annotations

import os
import timeit
from collections.abc import Callable
from typing import Any

from _common import KEYS, ROUNDS, rate, start

from ftmap import _impl

LOOPS = {
    "[k]": "for k in KEYS: m[k]",
    "get(k)": "for k in KEYS: m.get(k)",
    "k in": "for k in KEYS: k in m",
}
WRITE_ROUNDS = 10  # the 95/5 mix: a write copies the whole 1,000-key snapshot, so fewer rounds


def ns_per_op(loop: str, target: Any, repeat: int) -> float:
    best = min(timeit.repeat(loop, globals={"KEYS": KEYS, "m": target}, number=100, repeat=repeat))
    return best / 100 / len(KEYS) * 1e9


def through_handles(m: Any, kind: str) -> Callable[[int], None]:
    def body(thread: int) -> None:
        keys = list(KEYS)
        h = m.handle()  # made by the thread that uses it
        if kind == "[k]":
            for _ in range(ROUNDS):
                for k in keys:
                    h[k]
        elif kind == "get(k)":
            for _ in range(ROUNDS):
                for k in keys:
                    h.get(k)
        else:  # 95/5: of every 20 operations, 19 reads and 1 write; ROUNDS x KEYS in all
            for _ in range(ROUNDS):
                for i, k in enumerate(keys):
                    if i % 20 == 0:
                        h[k] = None
                    else:
                        h[k]

    return body


def main() -> None:
    r = start(__doc__)
    print(f"load average before: {os.getloadavg()}")
    plain = {k: None for k in KEYS}  # None: an immortal value
    variants = _impl.variants("SnapshotMap")
    maps = {name: cls(plain) for name, cls in sorted(variants.items())}

    print("\nOne thread, ns per operation (loop included); bar: handle <= map:\n")
    print("| implementation | operation | map | handle | handle/map |")
    print("|---|---|---:|---:|---:|")
    ns_per_op(LOOPS["[k]"], plain, r)  # warm-up
    for name, m in maps.items():
        h = m.handle()
        for op, loop in LOOPS.items():
            through_map, through_handle = ns_per_op(loop, m, r), ns_per_op(loop, h, r)
            ratio = through_handle / through_map
            print(f"| {name} | {op} | {through_map:.1f} | {through_handle:.1f} | {ratio:.2f}x |")

    print("\nThrough a handle per thread (Mops/s, all threads); bars: read-only 1.8x, 95/5 1.6x:\n")
    print("| implementation | workload | 1 thread | 2 threads | scaling |")
    print("|---|---|---:|---:|---:|")
    for name, m in maps.items():
        for kind in ("[k]", "get(k)", "95/5"):
            body = through_handles(m, kind)
            one, two = rate(body, 1, r), rate(body, 2, r)
            print(f"| {name} | {kind} | {one:.2f} | {two:.2f} | {two / one:.2f}x |")
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
