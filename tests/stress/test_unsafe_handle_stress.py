"""UnsafeMapHandle under real threads: the map's guarantees, through handles (issue 12).

Both implementations (``_impl.variants``). Also the C core's ThreadSanitizer test for the
C handle (run it with ci/tsan-run, as the Makefile's tsan target does).

- Synchronised use (one lock) through a handle per thread, through one handle shared by
  all threads, and through the map, mixed: the history (ftmap.testing) is linearizable and
  nothing is reported.
- Misuse through handles and the map at once: at most one thread is ever inside a claimed
  write, a write refused as a race was not performed, a write that returned is in the map,
  every report names two different threads, and no claim is left.
- The handle's exit check (the "publish between the check and the read" edge): a reader
  held inside a read through its handle while another thread completes 1 to 255 whole
  writes, through the map or through its own handle, must report every time.
"""

from __future__ import annotations

import os
import random
import threading
from typing import Any

import pytest

from ftmap import ConcurrentMapError, ConcurrentReadWriteError, ConcurrentWriteError, _impl
from ftmap._threads import run_together
from ftmap.testing import History, check_linearizable, run_threads

VARIANTS = {
    name: cls
    for name, cls in _impl.variants("UnsafeMap").items()
    if name in _impl.variants("UnsafeMapHandle")
}
_core = _impl._any_core()
SANITIZED = _core is not None and bool(_core.build_info.get("sanitizer"))
SCALE = 4 if SANITIZED else 1


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_synchronised_use_through_handles_is_linearizable_and_unreported(
    variant: str, ftmap_seed: int
) -> None:
    m = VARIANTS[variant]()
    shared = m.handle()
    lock = threading.Lock()
    history = History()
    own: dict[int, Any] = {}

    def step(thread: int, rng: random.Random) -> None:
        if thread not in own:
            own[thread] = m.handle()  # made by this thread: its fast path
        target = (own[thread], shared, m)[rng.randrange(3)]
        r = history.recorder(target, thread)
        key, value, op = rng.randrange(16), rng.randrange(4), rng.randrange(8)
        with lock:
            try:
                if op == 0:
                    r[key] = value
                elif op == 1:
                    r.get(key)
                elif op == 2:
                    r.pop(key, None)
                elif op == 3:
                    r.setdefault(key, value)
                elif op == 4:
                    del r[key]
                elif op == 5:
                    _ = key in r
                else:
                    r[key]
            except KeyError:
                pass

    run_threads(step, threads=4, iterations=1_500 // SCALE, seed=ftmap_seed, pin=True)
    assert m.reports == [] and 0 not in m._state
    result = check_linearizable(history)
    assert result.ok, result.explain()


SPIN = 200


class InsideCounter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inside = 0
        self.most = 0


class CountingKey:
    """Counts the threads inside a claimed write at once (its __hash__ runs in the write)."""

    def __init__(self, counter: InsideCounter, name: tuple[int, int]) -> None:
        self.counter = counter
        self.name = name

    def __hash__(self) -> int:
        counter = self.counter
        with counter.lock:
            counter.inside += 1
            counter.most = max(counter.most, counter.inside)
        os.sched_yield()  # detaches: suspends the dict's own critical section (see test_unsafe_c_stress)
        for _ in range(SPIN):
            pass
        with counter.lock:
            counter.inside -= 1
        return hash(self.name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CountingKey) and other.name == self.name


@pytest.mark.ftmap_races_expected
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_misuse_through_handles_admits_one_writer_and_refused_writes_are_not_performed(variant: str) -> None:
    m = VARIANTS[variant]()
    shared = m.handle()
    counter = InsideCounter()
    threads = 4

    def worker(
        index: int,
    ) -> tuple[list[tuple[int, int]], list[tuple[int, int]], list[ConcurrentMapError], int]:
        mine = m.handle()
        paths = (mine, shared, m)
        done, refused, errors, reads = [], [], [], 0
        for i in range(2_000 // SCALE):
            name = (index, i)
            target = paths[i % 3]
            try:
                if i % 4 == 3:
                    target.get((index, i - 1))
                    reads += 1
                    continue
                if i % 4 == 2:
                    target.setdefault(CountingKey(counter, name), i)
                else:
                    target[CountingKey(counter, name)] = i
                done.append(name)
            except ConcurrentWriteError as error:
                refused.append(name)
                errors.append(error)
            except ConcurrentReadWriteError as error:
                errors.append(error)
        return done, refused, errors, reads

    results = run_together([lambda i=i: worker(i) for i in range(threads)], pin=True)
    assert counter.most == 1, f"{counter.most} threads were inside claimed writes at once"
    stored = {key.name for key in m._data}
    for done, refused, errors, _ in results:
        assert set(done) <= stored, "a write that returned is missing"
        assert not set(refused) & stored, "a write that reported a race was performed"
        for error in errors:
            assert error.thread.ident != error.other_thread.ident
    assert len(stored) == sum(len(done) for done, _, _, _ in results)
    assert len(m.reports) == sum(len(errors) for _, _, errors, _ in results)
    assert 0 not in m._state, m._state
    refusals = sum(len(refused) for _, refused, _, _ in results)
    print(f"{variant}: {len(stored)} writes done, {refusals} refused, {len(m.reports)} reports")


class HeldKey:
    """A key whose __hash__ (armed) signals, then waits: its reader stays inside the read."""

    def __init__(self) -> None:
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def __hash__(self) -> int:
        if self.armed:
            self.entered.set()
            assert self.release.wait(30), "never released"
        return 7

    def __eq__(self, other: object) -> bool:
        return other is self


@pytest.mark.ftmap_races_expected
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_write_completed_inside_a_handle_read_is_reported(variant: str, ftmap_seed: int) -> None:
    rng = random.Random(ftmap_seed)
    m = VARIANTS[variant]()
    rounds = 60 // SCALE
    for round_ in range(rounds):
        key = HeldKey()
        m[key] = round_
        key.armed = True
        kind = rng.randrange(3)
        writes = rng.choice([1, 2, 3, 17, 128, 255])
        outcome: list[BaseException | object] = []

        def read(key: HeldKey = key, kind: int = kind) -> None:
            h = m.handle()
            try:
                outcome.append(h[key] if kind == 0 else h.get(key) if kind == 1 else key in h)
            except ConcurrentReadWriteError as error:
                outcome.append(error)

        reader = threading.Thread(target=read, name="reader")
        reader.start()
        assert key.entered.wait(30)
        writer = m.handle() if rng.randrange(2) else m
        for i in range(writes):
            writer[("w", i)] = i
        key.release.set()
        reader.join(30)
        assert not reader.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], ConcurrentReadWriteError), (
            f"seed {ftmap_seed}, round {round_}: {writes} writes inside the read, kind {kind}: {outcome}"
        )
        assert outcome[0].other_thread.ident == threading.get_ident()
        del m[key]
    assert len(m.reports) == rounds and 0 not in m._state
