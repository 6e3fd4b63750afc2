"""SnapshotMap against a plain dict: the read bars of its issue, measured in one run.

- m.get(k) and m[k] on one thread, against d[k], written inline in the loop
  (m.get is the current snapshot's own dict.get, reached through one slot)
- reads on 1 and 2 threads, against a shared plain dict: scaling; also through
  a SnapshotReader per thread (a thread-owned copy checked against a class token)

    python benchmarks/snapshotmap.py [--repeat N]
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from typing import Any

from _common import KEYS, ROUNDS, rate, start

from ftmap import SnapshotMap


def ns_per_op(loop: str, target: Any, repeat: int) -> float:
    best = min(timeit.repeat(loop, globals={"KEYS": KEYS, "m": target}, number=100, repeat=repeat))
    return best / 100 / len(KEYS) * 1e9


def inline_reads(target: Any, kind: str) -> Callable[[int], None]:
    def body(thread: int) -> None:
        keys = list(KEYS)
        m = target.reader() if kind.startswith("reader") else target  # a reader per thread
        for _ in range(ROUNDS):
            if kind.endswith("get"):
                for k in keys:
                    m.get(k)
            else:
                for k in keys:
                    m[k]

    return body


def main() -> None:
    r = start(__doc__)
    plain = {k: None for k in KEYS}  # None: an immortal value, as the scaling aim asks
    snap = SnapshotMap(plain)

    print("\nOne thread (ns per operation, loop included):\n")
    print("| operation | ns/op | vs dict d[k] |")
    print("|---|---:|---:|")
    ns_per_op("for k in KEYS: m[k]", plain, r)  # warm-up: the first loop timed runs slow
    base = ns_per_op("for k in KEYS: m[k]", plain, r)
    print(f"| dict d[k] | {base:.1f} | 1.00x |")
    for label, loop, target in (
        ("dict d.get(k)", "for k in KEYS: m.get(k)", plain),
        ("SnapshotMap m.get(k)", "for k in KEYS: m.get(k)", snap),
        ("SnapshotMap m[k]", "for k in KEYS: m[k]", snap),
        ("SnapshotMap m.snapshot()[k]", "s = m.snapshot()\nfor k in KEYS: s[k]", snap),
    ):
        took = ns_per_op(loop, target, r)
        print(f"| {label} | {took:.1f} | {took / base:.2f}x |")

    print("\nReads on one shared map, 1 and 2 threads (Mops/s, all threads):\n")
    print("| reads | 1 thread | 2 threads | scaling |")
    print("|---|---:|---:|---:|")
    for label, target, kind in (
        ("dict d[k]", plain, "[]"),
        ("SnapshotMap m.get(k)", snap, "get"),
        ("SnapshotMap m[k]", snap, "[]"),
        ("SnapshotMap, a reader per thread: r.get(k)", snap, "reader get"),
        ("SnapshotMap, a reader per thread: r[k]", snap, "reader []"),
    ):
        one = rate(inline_reads(target, kind), 1, r)
        two = rate(inline_reads(target, kind), 2, r)
        print(f"| {label} | {one:.2f} | {two:.2f} | {two / one:.2f}x |")


if __name__ == "__main__":
    main()
