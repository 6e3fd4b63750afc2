"""ShardedMap, C and pure Python side by side, against dict: the bars of issues 11 and 4, one run.

- single thread, 1,000 str keys, each operation written as Python code writes it (``m[k]``, not
  a bound method), against the same dict operation in the same run; issue 11's bars for the C
  map with the FNV default: get and m[k] at most 1.5x, m[k] = v at most 2x, merge at most 3x of
  ``d[k] = d.get(k, 0) + 1``
- what the FNV placement costs: C, pure Python (cached per map, and uncached), and the pure
  map's previous default (tuple hash + Fibonacci hashing)
- write-heavy on disjoint keys and merge counters, 2 threads, against dict + one Lock

    python benchmarks/shardedmap.py [--repeat N]
"""

from __future__ import annotations

import operator
import threading
import time
from collections.abc import Callable
from typing import Any

from _common import KEYS, ROUNDS, per_key, rate, start

from ftmap import _impl
from ftmap._sharded import _shard_of_hash

VARIANTS: dict[str, Any] = _impl.variants("ShardedMap")


def best_ns(loop: Callable[[Any], None], target: Any, repeat: int) -> float:
    """ns per operation of loop(target) (ROUNDS x KEYS operations), best of repeat."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        loop(target)
        best = min(best, time.perf_counter() - started)
    return best / (ROUNDS * len(KEYS)) * 1e9


def loop_get(m: Any) -> None:
    keys = KEYS
    for _ in range(ROUNDS):
        for k in keys:
            m.get(k)


def loop_getitem(m: Any) -> None:
    keys = KEYS
    for _ in range(ROUNDS):
        for k in keys:
            m[k]


def loop_contains(m: Any) -> None:
    keys = KEYS
    for _ in range(ROUNDS):
        for k in keys:
            k in m  # noqa: B015  (the lookup is the point)


def loop_setitem(m: Any) -> None:
    keys = KEYS
    for _ in range(ROUNDS):
        for k in keys:
            m[k] = 1


def loop_dict_increment(d: Any) -> None:
    keys = KEYS
    for _ in range(ROUNDS):
        for k in keys:
            d[k] = d.get(k, 0) + 1


def loop_merge(m: Any) -> None:
    keys, add = KEYS, operator.add
    for _ in range(ROUNDS):
        for k in keys:
            m.merge(k, 1, add)


# (label, the map's loop, the dict's loop, issue 11's bar for C)
SINGLE = [
    ("m.get(k)", loop_get, loop_get, 1.5),
    ("m[k]", loop_getitem, loop_getitem, 1.5),
    ("k in m", loop_contains, loop_contains, None),
    ("m[k] = v", loop_setitem, loop_setitem, 2.0),
    ("m.merge(k, 1, add) vs d[k] = d.get(k, 0) + 1", loop_merge, loop_dict_increment, 3.0),
]


class DictSubclass(dict[str, int]):
    """A dict subclass: the same C lookup as dict, but m[k] takes the interpreter's generic
    subscript path (3.13 specialises BINARY_SUBSCR for exact dicts only): the floor for any
    mapping that is not exactly a dict."""


def interleaved_ns(loop: Callable[[Any], None], targets: dict[str, Any], repeat: int) -> dict[str, float]:
    """ns per operation of loop(target) for each target, best of repeat, the targets measured in
    turn within each repetition (so that load from other work hits all of them alike)."""
    best = dict.fromkeys(targets, float("inf"))
    for _ in range(repeat):
        for name, target in targets.items():
            started = time.perf_counter()
            loop(target)
            best[name] = min(best[name], time.perf_counter() - started)
    return {name: t / (ROUNDS * len(KEYS)) * 1e9 for name, t in best.items()}


def single_thread(r: int) -> None:
    print("\nSingle thread, 1,000 str keys: ns per operation and ratio to the dict operation")
    print("(measured in the same run, interleaved; bars: issue 11, for C with the FNV default):\n")
    names = list(VARIANTS)
    header = " | ".join(f"{n} ns | {n} / dict" for n in names)
    print(f"| operation | dict ns | {header} | bar (C) |")
    print("|---|---:|" + "---:|---:|" * len(names) + "---|")
    for label, loop, dict_loop, bar in SINGLE:
        base = float("inf")
        got = dict.fromkeys(VARIANTS, float("inf"))
        for _ in range(r):  # dict and maps in turn, each best of 3
            base = min(base, interleaved_ns(dict_loop, {"dict": {k: 0 for k in KEYS}}, 3)["dict"])
            maps = {name: cls({k: 0 for k in KEYS}) for name, cls in VARIANTS.items()}
            for name, ns in interleaved_ns(loop, maps, 3).items():
                got[name] = min(got[name], ns)
        cells = [f"{got[n]:.1f} | {got[n] / base:.2f}x" for n in names]
        ratio = got.get("c", 0.0) / base
        verdict = "-" if bar is None or "c" not in got else f"{bar}x: {'met' if ratio <= bar else 'NOT met'}"
        print(f"| {label} | {base:.1f} | {' | '.join(cells)} | {verdict} |")
    floor = interleaved_ns(
        loop_getitem, {"dict": {k: 0 for k in KEYS}, "sub": DictSubclass.fromkeys(KEYS, 0)}, r
    )
    print(
        f"\nFor reference, a dict subclass's d[k] (the generic subscript path any non-dict mapping takes; "
        f"3.13 specialises m[k] for exact dicts only): {floor['sub']:.1f} ns, "
        f"{floor['sub'] / floor['dict']:.2f}x of dict d[k] ({floor['dict']:.1f} ns)"
    )


def placement(r: int) -> None:
    print("\nThe default placement (FNV-1a over hash(key), fmix64, folded), ns per key, 32 shards:\n")
    print("| placement | ns / key |")
    print("|---|---:|")

    def shard_index_loop(m: Any) -> None:
        index = m.shard_index
        for _ in range(ROUNDS):
            for k in KEYS:
                index(k)

    def uncached(_: Any) -> None:
        for _ in range(ROUNDS):
            for k in KEYS:
                _shard_of_hash(hash(k), 5)

    def previous_default(_: Any) -> None:  # the pure map's default before FNV (hash((k,)), Fibonacci)
        for _ in range(ROUNDS):
            for k in KEYS:
                (((hash((k,)) & 0x3FFFFFFF) * 0x278DDE6D) & 0x3FFFFFFF) >> 25

    def hash_only(_: Any) -> None:
        for _ in range(ROUNDS):
            for k in KEYS:
                hash(k)

    for name, cls in VARIANTS.items():
        m = cls({k: 0 for k in KEYS})
        label = "cached per map, by hash(key)" if name == "python" else "in C"
        print(f"| {name}: m.shard_index(k), {label} | {best_ns(shard_index_loop, m, r):.1f} |")
    print(f"| python: FNV uncached, _shard_of_hash(hash(k), 5) | {best_ns(uncached, None, r):.1f} |")
    print(
        f"| python: the previous default, hash((k,)) + Fibonacci | {best_ns(previous_default, None, r):.1f} |"
    )
    print(f"| hash(k) alone, for scale | {best_ns(hash_only, None, r):.1f} |")


def disjoint_writes(store: Callable[[str, int], None]) -> Callable[[int], None]:
    def body(thread: int) -> None:
        keys = [f"{k}-{thread}" for k in KEYS]  # each thread its own keys
        for _ in range(ROUNDS):
            for k in keys:
                store(k, 1)

    return body


def two_threads(r: int) -> None:
    print("\nWrites and counters, 2 threads, ShardedMap(32) (Mops/s, both threads together):\n")
    names = list(VARIANTS)
    print(
        f"| workload | dict + one Lock | {' | '.join(names)} | {' | '.join(f'{n} / Lock' for n in names)} |"
    )
    print("|---|---:|" + "---:|" * (2 * len(names)))

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

    def merge_increment(cls: Any) -> Callable[[str], None]:
        m = cls(shards=32)
        add = operator.add
        return lambda k: m.merge(k, 1, add) and None

    rows = (
        (
            "write-heavy, disjoint keys",
            lambda: disjoint_writes(locked_store()),
            lambda cls: disjoint_writes(cls(shards=32).__setitem__),
        ),
        (
            "counter increments (merge)",
            lambda: per_key(locked_increment()),
            lambda cls: per_key(merge_increment(cls)),
        ),
    )
    for label, lock_body, map_body in rows:
        locked = rate(lock_body(), 2, r)
        got = [rate(map_body(cls), 2, r) for cls in VARIANTS.values()]
        cells = " | ".join(f"{x:.2f}" for x in got)
        ratios = " | ".join(f"{x / locked:.2f}x" for x in got)
        print(f"| {label} | {locked:.2f} | {cells} | {ratios} |")


def main() -> None:
    r = start(__doc__)
    print(
        f"implementations: {', '.join(f'{n} = {c.__module__}.{c.__qualname__}' for n, c in VARIANTS.items())}"
    )
    single_thread(r)
    placement(r)
    two_threads(r)


if __name__ == "__main__":
    main()
