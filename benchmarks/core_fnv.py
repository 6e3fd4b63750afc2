"""FNV in C against the pure-Python reference, and the shard placement: one thread, one run.

- fnv1_32 / fnv1a_32 / fnv1a_64 over 20-byte keys and 1 KiB, C and Python, ns per call
- shard_of(key, 5) (FNV-1a over hash(key), fmix64, fold) in C and Python, against hash(key)
  and against ShardedMap's current pure-Python placement, hash((key,)) + Fibonacci hashing

    python benchmarks/core_fnv.py [--repeat N]
"""

from __future__ import annotations

import timeit

from _common import KEYS, start

from ftmap import _impl


def ns(stmt: str, env: dict[str, object], repeat: int, number: int = 20) -> float:
    best = min(timeit.repeat(stmt, globals={"KEYS": KEYS, **env}, number=number, repeat=repeat))
    return best / number / len(KEYS) * 1e9


def main() -> None:
    repeat = start(__doc__)
    short = [k.encode().ljust(20, b".") for k in KEYS]
    kib = [bytes(1024)] * len(KEYS)
    print("\n| operation | C ns | Python ns | Python / C |\n|---|---:|---:|---:|")
    for name in ("fnv1_32", "fnv1a_32", "fnv1a_64"):
        both = _impl.variants(name)
        for label, data in (("20 bytes", short), ("1 KiB", kib)):
            loop = "for d in DATA: f(d)"
            c = ns(loop, {"DATA": data, "f": both["c"]}, repeat)
            py = ns(loop, {"DATA": data, "f": both["python"]}, repeat, number=1 if label == "1 KiB" else 20)
            print(f"| {name}, {label} | {c:.0f} | {py:,.0f} | {py / c:,.0f}x |")
    both = _impl.variants("shard_of")
    loop = "for k in KEYS: f(k, 5)"
    c = ns(loop, {"f": both["c"]}, repeat)
    py = ns(loop, {"f": both["python"]}, repeat)
    baseline = ns("for k in KEYS: hash(k)", {}, repeat)
    fib = ns(
        "for k in KEYS: (((hash((k,)) & 0x3FFFFFFF) * 0x278DDE6D) & 0x3FFFFFFF) >> 25",
        {},
        repeat,
    )
    print(f"| shard_of(key, 5), 1,000 str keys | {c:.0f} | {py:,.0f} | {py / c:,.0f}x |")
    print(f"\nhash(key) alone: {baseline:.0f} ns; ShardedMap's pure-Python placement today: {fib:.0f} ns")
    print("(C figures include the Python call; a C ShardedMap calls ftmap_shard_of_hash inline.)")


if __name__ == "__main__":
    main()
