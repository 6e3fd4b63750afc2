"""SnapshotMap against a plain dict, C and pure Python side by side: the read bars, in one run.

- issue 11: get, m[k], in on one thread, 1,000 str keys, each against the same dict
  operation in the same run (bar: at most 1.3x, C implementation); the per-thread reader too
- reads on 1 and 2 threads, against a shared plain dict: scaling; also through a
  SnapshotReader per thread (issue 12)

    python benchmarks/snapshotmap.py [--repeat N]
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from typing import Any

from _common import KEYS, ROUNDS, rate, start

from ftmap import _impl

BAR = 1.3
LOOPS = {
    "m[k]": "for k in KEYS: m[k]",
    "m.get(k)": "for k in KEYS: m.get(k)",
    "k in m": "for k in KEYS: k in m",
}


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
    variants = _impl.variants("SnapshotMap")
    maps = {name: cls(plain) for name, cls in sorted(variants.items())}

    print(f"\nOne thread (ns per operation, loop included; bar: C at most {BAR}x the dict op):\n")
    print("| operation | dict | " + " | ".join(f"{n} map | {n} reader" for n in maps) + " |")
    print("|---|---:|" + "---:|---:|" * len(maps))
    ns_per_op(LOOPS["m[k]"], plain, r)  # warm-up: the first loop timed runs slow
    for op, loop in LOOPS.items():
        base = ns_per_op(loop, plain, r)
        cells = [f"{base:.1f}"]
        for name, m in maps.items():
            through_map = ns_per_op(loop, m, r)
            through_reader = ns_per_op(loop, m.reader(), r)
            mark = "" if name != "c" else (" ok" if through_map / base <= BAR else " OVER")
            cells.append(f"{through_map:.1f} ({through_map / base:.2f}x{mark})")
            cells.append(f"{through_reader:.1f} ({through_reader / base:.2f}x)")
        print(f"| {op} | " + " | ".join(cells) + " |")
    for name, m in maps.items():
        base = ns_per_op(LOOPS["m[k]"], plain, r)
        took = ns_per_op("s = m.snapshot()\nfor k in KEYS: s[k]", m, r)
        print(f"\n{name}: m.snapshot() once, then s[k]: {took:.1f} ns ({took / base:.2f}x dict d[k])", end="")
    print()

    print("\nReads on one shared map, 1 and 2 threads (Mops/s, all threads):\n")
    print("| reads | 1 thread | 2 threads | scaling |")
    print("|---|---:|---:|---:|")
    rows: list[tuple[str, Any, str]] = [("dict d[k]", plain, "[]")]
    for name, m in maps.items():
        rows += [
            (f"{name} SnapshotMap m.get(k)", m, "get"),
            (f"{name} SnapshotMap m[k]", m, "[]"),
            (f"{name} SnapshotMap, a reader per thread: r.get(k)", m, "reader get"),
            (f"{name} SnapshotMap, a reader per thread: r[k]", m, "reader []"),
        ]
    for label, target, kind in rows:
        one = rate(inline_reads(target, kind), 1, r)
        two = rate(inline_reads(target, kind), 2, r)
        print(f"| {label} | {one:.2f} | {two:.2f} | {two / one:.2f}x |")


if __name__ == "__main__":
    main()
