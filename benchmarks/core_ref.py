"""What a safe load of a published reference costs (csrc/ftmap_ref.h), against a plain load.

Loops run in C (the _PublishedRef test type; needs a build with FTMAP_DEV_BUILD=1, as make
builds it), so the figures are the load itself: ns per load + release.

- plain: load the pointer, Py_INCREF, Py_DECREF (the unsafe pattern; no writer runs)
- safe: ftmap_ref_load (try-incref, re-check the slot), Py_DECREF
- cached: ftmap_ref_load_cached, as a per-thread handle does (no reference count touched)
The published object belongs to the main thread. Rows: the main thread loading it (the owner's
fast path: a non-atomic local count), one other thread loading it (the shared count, one atomic
read-modify-write per incref and per decref), two other threads loading it at once (contended).

    python benchmarks/core_ref.py [--repeat N]
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from _common import start

from ftmap import _impl

N = 2_000_000


def timed(threads: int, body: Callable[[], None], repeat: int) -> float:
    """Best ns per load over `repeat` runs: body (N loads) on this thread (threads=0) or on
    `threads` new threads at once behind a barrier (wall time / N)."""
    best = float("inf")
    for _ in range(repeat):
        if threads == 0:
            started = time.perf_counter()
            body()
        else:
            barrier = threading.Barrier(threads + 1)
            workers = [threading.Thread(target=lambda b=barrier: (b.wait(), body())) for _ in range(threads)]
            for w in workers:
                w.start()
            barrier.wait()
            started = time.perf_counter()
            for w in workers:
                w.join()
        best = min(best, (time.perf_counter() - started) / N * 1e9)
    return best


def main() -> None:
    repeat = start(__doc__)
    core = _impl.core
    if core is None or not core.build_info["test_hooks"]:
        raise SystemExit(f"needs the C core built with FTMAP_DEV_BUILD=1 ({_impl.implementation_reason})")
    print("\n| loaded by | plain ns | safe ns | safe / plain | cached ns |\n|---|---:|---:|---:|---:|")
    ref = core._PublishedRef([0])  # a list made, and so owned, by the main thread
    for label, threads in (
        ("its owner (the main thread)", 0),
        ("1 other thread", 1),
        ("2 other threads at once", 2),
    ):
        plain = timed(threads, lambda: ref.plain_load_many(N), repeat)
        safe = timed(threads, lambda: ref.load_many(N), repeat)
        cached = timed(threads, lambda: ref.load_cached_many(N), repeat)
        print(f"| {label} | {plain:.1f} | {safe:.1f} | {safe / plain:.2f}x | {cached:.1f} |")
    print("\n(2 threads: wall time per load with both loading N each: below the 1-thread figure is scaling.)")


if __name__ == "__main__":
    main()
