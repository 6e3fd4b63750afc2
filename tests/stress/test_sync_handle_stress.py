"""SyncMapHandle under real threads (both implementations): per-thread handles, one shared handle
and writes through the map, checked for linearizability; read-your-writes while the read map is
republished continuously (a publish between a handle's stale-flag check and its read)."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest

from ftmap import _impl
from ftmap.testing import History, check_linearizable, run_threads
from tests.unit.test_sync import check_invariants

# Under ThreadSanitizer the interpreter is many times slower: only the C variant (make tsan looks
# for races in the C handle) and smaller work floors there; make test-ft runs both in full.
_core = _impl._any_core()
UNDER_TSAN = bool(_core is not None and _core.build_info.get("sanitizer"))
MAPS = {k: v for k, v in _impl.variants("SyncMap").items() if k == "c" or not UNDER_TSAN}
ITERATIONS = 600 if UNDER_TSAN else 2_500
OWN_ROUNDS = 3_000 if UNDER_TSAN else 20_000
MIN_PUBLISHES = 20 if UNDER_TSAN else 50
PUBLISH_ROUNDS = 300 if UNDER_TSAN else 1_500


@pytest.fixture(params=sorted(MAPS))
def impl(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("run", range(2))
def test_handles_shared_handle_and_map_are_linearizable_together(
    impl: str, run: int, ftmap_seed: int
) -> None:
    m = MAPS[impl]()
    shared = m.handle()
    mine: dict[int, Any] = {}
    history = History()

    def step(thread: int, rng: random.Random) -> None:
        # thread 0: the map; 1 and 2: their own handles (made on their threads); 3: the shared one.
        if thread == 0:
            target: Any = m
        elif thread == 3:
            target = shared
        else:
            if thread not in mine:
                mine[thread] = m.handle()
            target = mine[thread]
        r = history.recorder(target, thread)
        key, value, op = rng.randrange(48), rng.randrange(4), rng.randrange(11)
        if op == 0:
            r.store(key, value)
        elif op == 1:
            r.load(key)
        elif op == 2:
            r.load_or_store(key, value)
        elif op == 3:
            r.load_and_delete(key)
        elif op == 4:
            r.delete(key)
        elif op == 5:
            r.swap(key, value)
        elif op == 6:
            r.compare_and_swap(key, value, rng.randrange(4))
        elif op == 7:
            r.compare_and_delete(key, value)
        elif op == 8:
            r[key] = value
        elif op == 9:
            r.get(key)
        else:
            r.__contains__(key)

    run_threads(step, threads=4, iterations=ITERATIONS, seed=ftmap_seed, pin=True)
    result = check_linearizable(history)
    assert result.ok, result.explain()
    assert m.stats().promotions >= 2, m.stats()  # the read map was republished under the handles
    check_invariants(m)


def test_read_your_writes_through_handles_while_the_read_map_is_republished(
    impl: str, ftmap_seed: int
) -> None:
    m = MAPS[impl]({("own", t, i): -1 for t in range(3) for i in range(40)})
    list(m)  # promoted: the own keys are read-map keys (stores take the entry fast path)
    shared = m.handle()
    stop = threading.Event()

    def churn(thread: int, rng: random.Random) -> int:
        # Fresh keys and misses: the read map is rebuilt and republished continuously.
        h = m.handle()
        i = 0
        while not stop.is_set():
            h.store(("fresh", thread, i), i)
            for j in range(6):
                h.load(("absent", thread, i, j))
            m.delete(("fresh", thread, i - 16))
            i += 1
        return i

    def check(thread: int, rng: random.Random) -> int:
        # Through its own handle (thread 0) or the shared one (1, 2): its own writes, always.
        h = m.handle() if thread == 0 else shared
        deadline = time.monotonic() + 60
        start = m.stats().promotions
        i = 0
        try:
            while i < OWN_ROUNDS or (
                m.stats().promotions - start < MIN_PUBLISHES and time.monotonic() < deadline
            ):
                for _ in range(200):
                    key = ("own", thread, i % 40)
                    h[key] = i
                    got = h.load(key)
                    assert got == (i, True), f"thread {thread} lost its own store {i}: {got}"
                    assert h[key] == i and key in h and h.get(key) == i
                    new = ("new", thread, i % 25)
                    assert h.swap(new, i)[0] in (None, i - 25), "a value from the wrong key"
                    assert h.get(new) == i
                    if i % 5 == 0:
                        assert h.load_and_delete(new) == (i, True)
                        assert new not in h and h.get(new, "absent") == "absent"
                    i += 1
        finally:
            stop.set()
        return i

    result = run_threads(lambda t, rng: check(t, rng) if t < 3 else churn(t, rng), threads=4, seed=ftmap_seed)
    assert m.stats().promotions >= MIN_PUBLISHES, m.stats()
    del result
    check_invariants(m)


def test_handle_reads_during_publishes_return_only_values_of_their_keys(impl: str, ftmap_seed: int) -> None:
    # The publication edge, hammered: readers through handles (own and shared) read keys whose
    # values are tied to them, while a writer republishes the read map as fast as it can
    # (clear, then refill: every read map is a new object, the old ones are freed).
    keys = [f"k{i}" for i in range(64)]
    m = MAPS[impl]({k: (k, 0) for k in keys})
    shared = m.handle()
    stop = threading.Event()
    publishes = [0]

    def write(thread: int, rng: random.Random) -> None:
        h = m.handle()
        n = 0
        try:
            while n < PUBLISH_ROUNDS:
                if n % 3 == 0:
                    m.clear()
                for k in rng.sample(keys, 8):
                    h[k] = (k, n)
                list(m)  # promote: a new read map
                n += 1
        finally:
            publishes[0] = n
            stop.set()

    def read(thread: int, rng: random.Random) -> int:
        h = m.handle() if thread == 1 else shared
        seen = 0
        while not stop.is_set():
            for k in rng.sample(keys, 16):
                v = h.get(k)
                if v is not None:
                    assert type(v) is tuple and v[0] == k, f"{k!r} read {v!r}"
                    seen += 1
                found, ok = h.load(k)
                assert not ok or found[0] == k, f"{k!r} loaded {found!r}"
        return seen

    run_threads(lambda t, rng: write(t, rng) if t == 0 else read(t, rng), threads=3, seed=ftmap_seed)
    assert publishes[0] >= PUBLISH_ROUNDS
    check_invariants(m)


if __name__ == "__main__":  # ci/tsan-run runs files with pytest; this is for a quick manual run
    raise SystemExit(pytest.main([__file__, "-q"]))
