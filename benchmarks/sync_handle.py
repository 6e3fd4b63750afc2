"""SyncMapHandle (issue 12): the cost of one operation through a handle vs through the map, and
2-thread scaling through per-thread handles, for the C and the pure-Python SyncMap.

- one thread, read-map hits (1,000 interned str keys, all promoted): h[k] vs m[k], h.get(k) vs
  m.get(k), h[k] = v vs m[k] = v on existing keys (bar: the handle no slower)
- 1 and 2 threads, each through its own handle made on its thread (and through the map, for
  comparison): read-only (bar 1.8x) and 95% reads / 5% stores to existing keys (bar 1.6x)

    python benchmarks/sync_handle.py [--repeat N]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from _common import KEYS, ROUNDS, rate, start

from ftmap import _impl

Body = Callable[[int], None]


def promoted(cls: Any) -> Any:
    m = cls({k: i for i, k in enumerate(KEYS)})
    list(m)  # promote: every key in the read map
    return m


def _getitem(t: Any, keys: list[str]) -> None:
    for _ in range(ROUNDS):
        for k in keys:
            t[k]


def _get(t: Any, keys: list[str]) -> None:
    get = t.get  # a bound method made on this thread
    for _ in range(ROUNDS):
        for k in keys:
            get(k)


def _store(t: Any, keys: list[str]) -> None:
    for _ in range(ROUNDS):
        for i, k in enumerate(keys):
            t[k] = i


def _mix(t: Any, keys: list[str]) -> None:  # 95% reads, 5% stores to existing keys
    for _ in range(ROUNDS):
        for i, k in enumerate(keys):
            if i % 20 == 0:
                t[k] = i
            else:
                t[k]


LOOPS = {"getitem": _getitem, "get": _get, "store": _store, "95/5": _mix}


def through(m: Any, use_handle: bool, kind: str) -> Body:
    loop = LOOPS[kind]

    def body(thread: int) -> None:
        loop(m.handle() if use_handle else m, list(KEYS))  # the handle is made on its thread

    return body


def main() -> None:
    repeat = start(__doc__)
    for impl, cls in _impl.variants("SyncMap").items():
        m = promoted(cls)
        print(f"\n{impl} SyncMap, one thread (M ops/s; handle / map, bar >= 1.0):")
        for kind in ("getitem", "get", "store"):
            via_map = rate(through(m, False, kind), 1, repeat)
            via_handle = rate(through(m, True, kind), 1, repeat)
            print(
                f"  {kind:8} map {via_map:6.2f}  handle {via_handle:6.2f}  ratio {via_handle / via_map:5.2f}"
            )
        print(f"{impl} SyncMap, 2-thread scaling (M ops/s at 1 and 2 threads; bars 1.8x reads, 1.6x 95/5):")
        for kind in ("getitem", "95/5"):
            for use_handle in (False, True):
                one = rate(through(m, use_handle, kind), 1, repeat)
                two = rate(through(m, use_handle, kind), 2, repeat)
                name = "handles" if use_handle else "map"
                print(f"  {kind:8} {name:8} 1t {one:6.2f}  2t {two:6.2f}  scaling {two / one:5.2f}x")


if __name__ == "__main__":
    main()
