"""UnsafeMap through per-thread handles (issue 12), C and pure Python side by side.

- One thread: ns per operation through the map and through a handle (bar: the handle no
  worse than the map), 1,000 interned str keys, interleaved repetitions, best kept.
- Reads on 1 and 2 threads, through the shared map and through a handle per thread
  (bar: 2 threads at least 1.8x one thread, read-only, through handles).
- No 95/5 row: UnsafeMap is unsynchronised by design, so a write on one thread that
  overlaps a read on another is misuse that the map reports (ConcurrentReadWriteError);
  there is no correct concurrent read/write mix to measure.

    python benchmarks/unsafe_handle.py [--repeat N]
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from typing import Any

from _common import KEYS, ROUNDS, rate, start

from ftmap import _impl

LOOPS = {
    "m[k]": "for k in KEYS: m[k]",
    "m.get(k)": "for k in KEYS: m.get(k)",
    "k in m": "for k in KEYS: k in m",
    "m[k] = v": "for k in KEYS: m[k] = None",
    "del m[k]; m[k] = v": "for k in KEYS:\n    del m[k]\n    m[k] = None",
}


def ns_per_op(loop: str, targets: list[Any], repeat: int) -> list[float]:
    """ns per operation for each target, best of repeat, the repetitions interleaved."""
    timers = [timeit.Timer(loop, globals={"KEYS": KEYS, "m": target}) for target in targets]
    best = [float("inf")] * len(timers)
    for _ in range(repeat):
        for index, timer in enumerate(timers):
            best[index] = min(best[index], timer.timeit(50))
    return [seconds / 50 / len(KEYS) * 1e9 for seconds in best]


def reads(target: Any, through_handle: bool, kind: str) -> Callable[[int], None]:
    def body(thread: int) -> None:
        keys = list(KEYS)
        m = target.handle() if through_handle else target  # a handle made by this thread
        for _ in range(ROUNDS):
            if kind == "get":
                for k in keys:
                    m.get(k)
            else:
                for k in keys:
                    m[k]

    return body


def main() -> None:
    r = start(__doc__)
    variants = _impl.variants("UnsafeMap")
    names = [name for name in ("c", "python") if name in variants and hasattr(variants[name], "handle")]

    print("\nOne thread (ns per operation, loop included; bar: handle no worse than map):\n")
    print("| operation | " + " | ".join(f"{n} map | {n} handle | ratio" for n in names) + " |")
    print("|---|" + "---:|---:|---:|" * len(names))
    for op, loop in LOOPS.items():
        cells = []
        for name in names:
            m = variants[name](dict.fromkeys(KEYS))
            through_map, through_handle = ns_per_op(loop, [m, m.handle()], r)
            verdict = "ok" if through_handle <= through_map * 1.03 else "WORSE"
            cells += [
                f"{through_map:.1f}",
                f"{through_handle:.1f}",
                f"{through_handle / through_map:.2f}x {verdict}",
            ]
        print(f"| {op} | " + " | ".join(cells) + " |")

    print("\nReads, 1 and 2 threads (Mops/s, all threads; bar: 1.8x through handles):\n")
    print("| reads | 1 thread | 2 threads | scaling |")
    print("|---|---:|---:|---:|")
    for name in names:
        m = variants[name](dict.fromkeys(KEYS))
        for through_handle in (False, True):
            for kind in ("[]", "get"):
                body = reads(m, through_handle, kind)
                one, two = rate(body, 1, r), rate(body, 2, r)
                how = "handle per thread" if through_handle else "shared map"
                mark = "" if not through_handle else (" ok" if two / one >= 1.8 else " BELOW")
                print(
                    f"| {name}, {how}, m{kind if kind == '[]' else '.get'} | {one:.2f} | {two:.2f} | "
                    f"{two / one:.2f}x{mark} |"
                )
        if m.reports:
            raise SystemExit(f"races reported during a read-only run: {m.reports}")
    print(f"\n({ROUNDS} rounds over {len(KEYS)} keys a thread; values None, immortal)")


if __name__ == "__main__":
    main()
