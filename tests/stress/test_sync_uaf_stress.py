"""SyncMap's C variant: no use after free of the references its writers replace.

Two kinds of reference are replaced while readers load them without a lock (csrc/syncmap.c):
an entry's value (every store, swap, compare_and_swap, delete) and the published read map
(every dirty-map build, promotion and clear), with the C lookup table built for it, which
per-thread handles cache. Writers replace both as fast as they can with
fresh ``_Payload`` objects (whose deallocator poisons them) and churn the allocator with
``bytes`` of the same size class, so that freed blocks come back as other objects; readers go
through every lock-free read path (``m[k]``, ``get``, ``load``, ``in``, the same through a
handle of their own, iteration, ``_read``)
and check that everything they get is a live ``_Payload`` with intact contents, or absent.
A plain load-then-incref of either slot fails this (tests/stress/test_core_ref_stress.py shows
the same harness catching the naive reader of an ftmap_ref within a fraction of a second).
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

import pytest

from ftmap import _impl
from tests.uaf import hammer

VARIANTS = _impl.variants("SyncMap")
core = _impl._any_core()
pytestmark = pytest.mark.skipif("c" not in VARIANTS or core is None, reason="the C core is not built")
SECONDS = float(os.environ.get("FTMAP_UAF_SECONDS", "2.0"))
KEYS = [f"k{i}" for i in range(64)]
# The work floors below are for a normal build; under ThreadSanitizer (make tsan: here for its
# race reports, not for the counts) everything runs 10-50x slower.
SCALE = 50 if core is not None and core.build_info.get("sanitizer") else 1


def test_replaced_values_and_read_maps_are_never_used_after_free() -> None:
    payload = core._Payload  # type: ignore[union-attr]
    m: Any = VARIANTS["c"]({k: payload(0) for k in KEYS})
    assert m._read_table_size == len(KEYS)  # the reads below probe the C read table
    serials = iter(range(1, 1 << 62))
    churn: list[bytes] = []
    local = threading.local()

    def fresh() -> Any:
        return payload(next(serials))

    def check(v: Any, bad: list[str]) -> None:
        if v is not None and (type(v) is not payload or not v.valid()):
            bad.append(f"bad value: {type(v).__name__}")

    def replace_values() -> int:
        for k in KEYS:
            m[k] = fresh()
            m.swap(k, fresh())
            m.compare_and_swap(k, m.get(k), fresh())
            churn.append(bytes(48))
            if len(churn) > 256:
                del churn[:128]
        return 3 * len(KEYS)

    def replace_read_maps() -> int:
        n = 0
        for i, k in enumerate(KEYS):
            m.delete(k)  # a nil entry: the next build expunges it
            m.store(("new", i), fresh())  # a new key: builds the dirty map (a new read map)
            m.store(k, fresh())  # an expunged key: back into the dirty map
            list(m)  # promotes: publishes the dirty map as the read map
            m.delete(("new", i))
            n += 4
        m.clear()  # publishes the empty read map
        for k in KEYS:
            m[k] = fresh()
        return n + 1

    def read() -> tuple[int, list[str]]:
        bad: list[str] = []
        h = getattr(local, "handle", None)
        if h is None:
            h = local.handle = m.handle()  # this reader's own: its cache of the read map
        for k in KEYS:
            with contextlib.suppress(KeyError):
                check(m[k], bad)
            with contextlib.suppress(KeyError):
                check(h[k], bad)
            check(m.get(k), bad)
            check(h.get(k), bad)
            value, loaded = m.load(k)
            check(value, bad)
            if loaded and value is None:
                bad.append("loaded None")
            _ = k in m
        for v in m.values():
            check(v, bad)
        r = m._read
        if type(r) is not tuple or type(r[0]) is not dict:
            bad.append(f"bad read map: {type(r).__name__}")
        if type(m._read_table_size) is not int:
            bad.append(f"no read table: {m._read_table_size!r}")
        return 6 * len(KEYS) + 1, bad

    result = hammer(
        lambda: replace_values() + replace_read_maps(),
        read,
        writers=2,
        readers=2,
        seconds=SECONDS,
    )
    assert not result.errors, result.errors
    assert result.bad_count == 0, result.bad
    assert result.writes >= 5_000 // SCALE and result.reads >= 20_000 // SCALE, (result.writes, result.reads)
    assert m.stats().promotions >= 100 // SCALE, m.stats()
    print(f"reads={result.reads} writes={result.writes} promotions={m.stats().promotions}")


def test_one_hot_key_replaced_in_a_tight_loop() -> None:
    # The narrowest window: every read of one key races with a writer replacing its value.
    payload = core._Payload  # type: ignore[union-attr]
    m: Any = VARIANTS["c"](hot=payload(0))
    list(m)
    serials = iter(range(1, 1 << 62))

    def write() -> int:
        churn = []
        for _ in range(1000):
            m["hot"] = payload(next(serials))
            churn.append(bytes(48))
        return 1000

    def read() -> tuple[int, list[str]]:
        bad = []
        get = m.get
        for _ in range(1000):
            v = get("hot")
            if type(v) is not payload or not v.valid():
                bad.append(f"bad value: {type(v).__name__}")
        return 1000, bad

    result = hammer(write, read, writers=2, readers=2, seconds=SECONDS)
    assert not result.errors, result.errors
    assert result.bad_count == 0, result.bad
    assert result.writes >= 20_000 // SCALE, result.writes
    assert result.reads >= 100_000 // SCALE, result.reads
    print(f"reads={result.reads} writes={result.writes}")
