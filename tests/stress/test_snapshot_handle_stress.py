"""SnapshotMapHandle under real threads, both implementations (issue 12).

- Histories of mixed single-key operations through per-thread handles, through one handle
  shared by every thread, and through the map itself, all at once, are linearizable
  (ftmap.testing.check_linearizable).
- The publication edge, hammered: a writer publishes 1, 2, 3 ... through the map while
  readers read through their own handles and through one shared handle. No read is older
  than a publish that had returned before it began, no thread's reads go back, and no read
  through one handle is older than the read through another handle just before it (a
  publish between a handle's stale-flag check and its read must not be missed by one handle
  and seen by another).
- Read-your-writes through a shared handle from several threads.

These run under ThreadSanitizer too (make tsan, TSAN_TESTS), with smaller work floors.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest

from ftmap import _impl
from ftmap.testing import MISSING, History, check_linearizable, run_threads

_core = _impl._any_core()
TSAN = _core is not None and _core.build_info.get("sanitizer") == "thread"
SCALE = 10 if TSAN else 1

HANDLES = _impl.variants("SnapshotMapHandle")
MAPS = {name: cls for name, cls in _impl.variants("SnapshotMap").items() if name in HANDLES}
VARIANTS = sorted(MAPS)


@pytest.mark.parametrize("implementation", VARIANTS)
def test_histories_through_handles_shared_handles_and_the_map_are_linearizable(implementation: str) -> None:
    m = MAPS[implementation]()
    shared = m.handle()
    history = History()
    own: dict[int, Any] = {}

    def step(thread: int, rng: random.Random) -> None:
        if thread not in own:
            own[thread] = m.handle()
        way = rng.randrange(3)
        target = own[thread] if way == 0 else shared if way == 1 else m
        r = history.recorder(target, thread)
        key, value, op = rng.randrange(16), rng.randrange(8), rng.randrange(6)
        if op == 0:
            r[key] = value
        elif op == 1:
            r.get(key, MISSING)
        elif op == 2:
            r.pop(key, MISSING)
        elif op == 3:
            r.setdefault(key, value)
        elif op == 4:
            _ = key in r
        else:
            r.get(key, MISSING)

    iterations = 1_500 // SCALE
    run = run_threads(step, threads=4, iterations=iterations, pin=True)
    print(f"{implementation}: seed {run.seed}: {len(history)} operations over 16 keys")
    result = check_linearizable(history)
    assert result.ok, result.explain()
    assert len(history) == 4 * iterations


def _edge(cls: Any, seconds: float, seed: int) -> tuple[list[str], int, int]:
    m = cls(v=0)
    shared = m.handle()
    finished = [0]  # the last value whose publish has returned (written by the writer only)
    done = threading.Event()
    errors: list[str] = []
    counts = [0, 0]

    def write() -> None:
        rng = random.Random(seed)
        deadline = time.monotonic() + seconds
        i = 0
        try:
            while time.monotonic() < deadline:
                i += 1
                if rng.random() < 0.5:
                    m.replace({"v": i})
                else:
                    m["v"] = i
                finished[0] = i
        finally:
            done.set()
        counts[0] = i

    def read(thread: int) -> int:
        first = m.handle()
        idle = [m.handle() for _ in range(20)]  # between the two: a publish flags them in turn
        last = m.handle()
        checks, previous = 0, 0
        while not done.is_set() or checks < 200:
            floor = finished[0]  # read before: that publish had returned when the reads began
            a = first["v"]
            b = last.get("v")
            c = shared["v"] if checks % 2 else shared.snapshot()["v"]
            d = first.version - 1
            if min(a, b, c, d) < floor:
                errors.append(f"thread {thread}: read {(a, b, c, d)} after {floor} was published")
            if b < a or c < b or d < c or a < previous:
                errors.append(f"thread {thread}: went back: {previous} then {(a, b, c, d)}")
            previous = d
            checks += 1
        del idle
        counts[1] += checks
        return checks

    run_threads(lambda t, rng: write() if t == 0 else read(t), threads=3, seed=seed, timeout=seconds + 120)
    return errors, counts[0], counts[1]


@pytest.mark.parametrize("implementation", VARIANTS)
def test_no_handle_reads_older_than_a_finished_publish_or_than_another_handle(
    implementation: str, ftmap_seed: int
) -> None:
    errors, published, checks = _edge(MAPS[implementation], seconds=4 if not TSAN else 6, seed=ftmap_seed)
    print(f"{implementation}: seed {ftmap_seed}: {published} publishes, {checks} rounds of reads")
    assert errors == [], errors[:5]
    assert published >= 200 // SCALE and checks >= 400


@pytest.mark.parametrize("implementation", VARIANTS)
def test_threads_sharing_one_handle_read_their_own_writes(implementation: str, ftmap_seed: int) -> None:
    m = MAPS[implementation]()
    h = m.handle()
    rounds = 2_000 // SCALE

    def work(thread: int, rng: random.Random) -> int:
        key = f"t{thread}"
        for i in range(rounds):
            if rng.random() < 0.5:
                h[key] = i
            else:
                m[key] = i  # through the map: the handle must see it too
            got = (h[key], h.get(key), key in h, h.snapshot().get(key))
            assert got == (i, i, True, i), f"thread {thread} wrote {i}, read {got}"
        return rounds

    run_threads(work, threads=4, seed=ftmap_seed)
    assert m.version == 1 + 4 * rounds
