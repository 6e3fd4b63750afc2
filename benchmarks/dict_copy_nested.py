"""Why ftmap copies shared dicts with dict(d) or list(d.values()), never d.copy().

On free-threaded CPython 3.13, ``d.copy()`` runs under d's critical section; when d has many
deleted slots (fewer than 2/3 of its entries live: any dict that was popped from) it copies
through ``dict_merge``, which begins a second critical section on d inside the first, and
that nested acquire parks the thread, owner or not: about 10 us a copy, however small d is.
``dict(d)`` and ``list(d.values())`` take one critical section and do not. 3.14 and the GIL
builds do not park.
Where it bit: ``ftmap._published.Published.begin()`` copied its registry of followers (a
small dict every refresh pops from) on every publish, so a pure SnapshotMap with handles paid
about 10 us a write once a few handles had refreshed or died; SyncMap's dirty-map build
copied the read map, a promoted dirty map with the deleted keys purged.

Per call, in nanoseconds, from the thread that built the dict and from another one, for a
dict whose every slot is live ("clean") and one of the same size that had deletions
("holes")::

    python benchmarks/dict_copy_nested.py [--repeat N]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from _common import in_thread

ROUNDS = 2000


def per_call(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(ROUNDS):
            fn()
        best = min(best, time.perf_counter() - started)
    return best / ROUNDS * 1e9


def dicts(size: int) -> dict[str, dict[int, list[bool]]]:
    clean = {i: [False] for i in range(size)}
    holes = {i: [False] for i in range(3 * size)}
    for i in range(size, 3 * size):
        del holes[i]  # popped, as a registry of followers is: 1/3 of the entries live
    return {"clean": clean, "holes": holes}


def calls(ds: dict[str, dict[int, list[bool]]], repeat: int) -> dict[str, float]:
    out = {}
    for kind, d in ds.items():
        out[f"{kind} d.copy()"] = per_call(d.copy, repeat)
        out[f"{kind} dict(d)"] = per_call(lambda d=d: dict(d), repeat)
        out[f"{kind} list(d.values())"] = per_call(lambda d=d: list(d.values()), repeat)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    repeat = parser.parse_args().repeat
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(f"Python {sys.version.split()[0]}, GIL {'on' if gil else 'off'}")
    for size in (1, 8, 100):
        ds = dicts(size)
        own = calls(ds, repeat)
        other = in_thread(lambda ds=ds: calls(ds, repeat))
        print(f"\n{size} live entries: {'call':24} {'owner ns':>9} {'other thread ns':>16}")
        for name in own:
            print(f"{'':18}{name:24} {own[name]:9.0f} {other[name]:16.0f}")


if __name__ == "__main__":
    main()
