"""Single-threaded cost of UnsafeMap's checks, per operation, against a plain dict.

Each operation runs over the same 1,000 string keys in the same loop shape for
every map; a ratio is a map's time over the dict's, measured in one run (best
of several repetitions, so a noisy neighbour inflates both or neither). Rows:
the C implementation (ftmap._unsafe_c, where the C core imports) and the pure
one (ftmap._unsafe) side by side, with issue 11's bars for the C one (m[k],
get, in and m[k] = v at most 1.5x, an iteration step at most 2x). A last
column times a bare forwarding MutableMapping with no checks at all: the floor
any pure-Python map class pays for being a class. Prints a markdown table.

    python benchmarks/unsafe_overhead.py [--repeat N]
"""

from __future__ import annotations

import timeit
from collections.abc import Iterator, MutableMapping

from _common import start

from ftmap import _impl

KEYS = [f"key-{i}" for i in range(1000)]

# name -> loop body, where `m` is the map under test and `k` the key.
OPERATIONS = {
    "m[k] (hit)": "for k in KEYS: m[k]",
    "m.get(k)": "for k in KEYS: m.get(k)",
    "k in m": "for k in KEYS: k in m",
    "m[k] = v (replace)": "for k in KEYS: m[k] = 1",
    "del m[k]; m[k] = v": "for k in KEYS:\n    del m[k]\n    m[k] = 1",
    "m.setdefault(k, v)": "for k in KEYS: m.setdefault(k, 1)",
    "len(m)": "for k in KEYS: len(m)",
    "iteration step": "for k in m: pass",
}

# Issue 11's bars for the C implementation (ratio to the same dict operation).
BARS = {
    "m[k] (hit)": 1.5,
    "m.get(k)": 1.5,
    "k in m": 1.5,
    "m[k] = v (replace)": 1.5,
    "iteration step": 2.0,
}


class Forwarding(MutableMapping[str, int]):
    """Every method forwards to a dict: no checks, only the cost of being a Python class."""

    __slots__ = ("_data",)

    def __init__(self, data: dict[str, int]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> int:
        return self._data[key]

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        return self._data.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __setitem__(self, key: str, value: int) -> None:
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        del self._data[key]

    def setdefault(self, key: str, default: int = 0) -> int:
        return self._data.setdefault(key, default)

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)


def per_op_ns(body: str, mappings: list[object], repeat: int) -> list[float]:
    """ns per operation for each mapping, best of ``repeat``. The repetitions are interleaved
    (dict, C, pure, forwarding, dict, ...), so that a noisy neighbour slows every column alike
    instead of whichever happened to be measured at the time."""
    number = 100
    timers = [timeit.Timer(body, globals={"KEYS": KEYS, "m": mapping}) for mapping in mappings]
    best = [float("inf")] * len(timers)
    for _ in range(repeat):
        for index, timer in enumerate(timers):
            best[index] = min(best[index], timer.timeit(number))
    return [seconds / number / len(KEYS) * 1e9 for seconds in best]


def main() -> None:
    repeat = start(__doc__, default_repeat=7)
    variants = _impl.variants("UnsafeMap")
    names = [name for name in ("c", "python") if name in variants]
    print()
    header = "| operation | dict ns/op |"
    rule = "|---|---:|"
    for name in names:
        header += f" UnsafeMap ({name}) ns/op | ratio |"
        rule += "---:|---:|"
    print(header + " bar (C) | bare forwarding class ns/op | its ratio |")
    print(rule + "---:|---:|---:|")
    for name, body in OPERATIONS.items():
        mappings = [dict.fromkeys(KEYS, 0)]
        mappings += [variants[variant](dict.fromkeys(KEYS, 0)) for variant in names]
        mappings.append(Forwarding(dict.fromkeys(KEYS, 0)))
        plain, *checked, floor = per_op_ns(body, mappings, repeat)
        row = f"| {name} | {plain:.1f} |"
        for ns in checked:
            row += f" {ns:.1f} | {ns / plain:.2f}x |"
        bar = f"{BARS[name]:.1f}x" if name in BARS else "-"
        print(f"{row} {bar} | {floor:.1f} | {floor / plain:.2f}x |")


if __name__ == "__main__":
    main()
