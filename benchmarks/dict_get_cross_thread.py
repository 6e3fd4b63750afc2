"""Why the pure maps read their dicts through ftmap._base.dict_get, and what it costs.

One dict of 1,000 keys (str built at run time, or ints above the small-int cache) to plain
objects, built by the main thread; lookups with equal (not the same) key objects, from the
main thread and from a thread that did not build it. Per lookup, in nanoseconds:
``d.get(k)``, ``d[k]``, ``dict_get(d, k)`` on hits and on misses, and then ``m.get(k)`` of
each pure map from that other thread (the maps' keys and values made by the main thread).

On free-threaded 3.13, dict.get from the other thread parks (microseconds a call) where
``d[k]`` and dict_get do not; on a GIL build or 3.14 dict_get is dict.get itself.

    python benchmarks/dict_get_cross_thread.py [--repeat N]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from _common import in_thread

from ftmap import _impl
from ftmap._base import DICT_GET_PARKS, dict_get

N = 1000
ROUNDS = 20


class Value:
    """A plain object: its reference count is the main thread's own."""


def per_lookup(fn: Callable[[Any], object], keys: list[Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(ROUNDS):
            for k in keys:
                fn(k)
        best = min(best, time.perf_counter() - started)
    return best / (ROUNDS * len(keys)) * 1e9


def fresh(kind: str, start: int = 0) -> list[Any]:
    """Keys equal to the stored ones (start=0) or absent ones, as new objects of this thread."""
    if kind == "str":
        return ["".join(["key", str(i + start)]) for i in range(N)]
    return [int(str(10**6 + i + start)) for i in range(N)]


def lookups(dicts: dict[str, dict[Any, Any]], repeat: int) -> dict[str, float]:
    out = {}
    for kind, d in dicts.items():
        hits, misses = fresh(kind), fresh(kind, 10 * N)
        for name, fn in (
            ("d.get", d.get),
            ("d[k]", d.__getitem__),
            ("dict_get", lambda k, d=d: dict_get(d, k)),
        ):
            out[f"{kind} {name} hit"] = per_lookup(fn, hits, repeat)
            if name != "d[k]":
                out[f"{kind} {name} miss"] = per_lookup(fn, misses, repeat)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    repeat = parser.parse_args().repeat
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    how = "a subscript" if DICT_GET_PARKS else "dict.get"
    print(f"Python {sys.version.split()[0]}, GIL {'on' if gil else 'off'}, dict_get is {how}")
    dicts = {kind: {k: Value() for k in fresh(kind)} for kind in ("str", "int")}
    own = lookups(dicts, repeat)
    other = in_thread(lambda: lookups(dicts, repeat))
    print(f"{'lookup':24} {'owner ns':>9} {'other thread ns':>16}")
    for name in own:
        print(f"{name:24} {own[name]:9.0f} {other[name]:16.0f}")
    names = ("UnsafeMap", "SyncMap", "ShardedMap", "SnapshotMap")
    maps = {name: _impl.variants(name)["python"] for name in names}
    built = {name: cls({k: Value() for k in fresh("str")}) for name, cls in maps.items()}
    for m in built.values():  # SyncMap: promote the read map first, as any reads would
        for k in fresh("str"):
            m.get(k)
    print("pure maps, m.get(k) hits from the other thread, str keys:")
    got = in_thread(lambda: {name: per_lookup(m.get, fresh("str"), repeat) for name, m in built.items()})
    for name, ns in got.items():
        print(f"  {name:12} {ns:6.0f} ns")


if __name__ == "__main__":
    main()
