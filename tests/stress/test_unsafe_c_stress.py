"""UnsafeMap misused on purpose, as hard as possible: memory safety and the write claim.

UnsafeMap detects misuse; it never prevents it, so its C class must stay memory-safe while
threads really do write it at once. Each test runs both variants (``_impl.variants``): the
pure class is the reference, and the C class's claim is an atomic compare-and-swap that must
give exactly the pure claim's guarantees. These are also the C core's ThreadSanitizer tests for
UnsafeMap (Makefile ``TSAN_TESTS``).

- Use after free: UnsafeMap replaces no published reference (its dict is never replaced, its
  iterators hold their map and the dict's iterator), so the hammer aims at what a misusing
  program does to it: writers replace, delete and clear values (``_Payload`` objects, whose
  deallocator poisons them) while readers get, index and iterate, and check that every value
  they get is a live ``_Payload`` with intact contents.
- The claim: threads write at once through keys whose ``__hash__`` runs inside the write; at
  most one thread is ever inside a claimed write, a write that reports a race was not
  performed, a write that returned is in the map, and no claim is left.
"""

from __future__ import annotations

import itertools
import os
import threading
from typing import Any

import pytest

from ftmap import ConcurrentMapError, ConcurrentWriteError, _impl
from ftmap._threads import run_together
from tests.uaf import hammer

VARIANTS = _impl.variants("UnsafeMap")
CORE: Any = _impl._any_core()
# Under ThreadSanitizer (make tsan) the hammer keeps every value it made alive: a value freed
# while a reader's lock-free dict lookup (CPython's own _Py_TryIncrefCompare in dictobject.c,
# the protocol that ci/tsan-suppressions.txt accepts for ftmap_try_incref) touches its header
# is reported by TSan with UnsafeMap's C frame on the stack, although the race is CPython's
# and by design. With nothing freed, TSan checks what is UnsafeMap's own: the claim, the
# counter, the iterator. The use-after-free property itself is tested without TSan.
KEEP_ALIVE = CORE is not None and CORE.build_info.get("sanitizer") == "thread"


@pytest.mark.ftmap_races_expected
@pytest.mark.skipif(CORE is None, reason="needs ftmap._core's _Payload")
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_misuse_never_hands_out_a_freed_value(variant: str) -> None:
    made: list[Any] = []
    keep = made.append if KEEP_ALIVE else (lambda value: None)

    def payload(serial: int) -> Any:
        value = CORE._Payload(serial)
        keep(value)
        return value

    m = VARIANTS[variant]({i: payload(i) for i in range(64)})
    serials = itertools.count(1_000)

    def write() -> int:
        done = 0
        for i in range(2_000):
            try:
                key = i % 64
                if i % 500 == 499:
                    m.clear()
                elif i % 7 == 0:
                    m.pop(key, None)
                elif i % 11 == 0:
                    m.update({key: payload(next(serials)), key + 1: payload(next(serials))})
                else:
                    m[key] = payload(next(serials))
                done += 1
            except ConcurrentMapError:
                pass
        return done

    def read() -> tuple[int, list[str]]:
        bad: list[str] = []
        loads = 0

        def check(value: object) -> None:
            if type(value) is not CORE._Payload:
                bad.append(f"wrong type: {type(value).__name__}")
            elif not value.valid():
                bad.append(f"broken contents: serial {value.serial}")

        for i in range(2_000):
            try:
                if i % 50 == 0:
                    for key, value in m.items():
                        assert type(key) is int
                        check(value)
                        loads += 1
                else:
                    value = m.get(i % 64)
                    if value is not None:
                        check(value)
                    loads += 1
            except (ConcurrentMapError, RuntimeError):  # a race reported, or the dict's own error
                pass
        return loads, bad

    result = hammer(write, read, writers=2, readers=2, seconds=2.0)
    assert not result.errors, result.errors
    assert result.bad_count == 0, result.bad
    assert result.writes > 0 and result.reads > 0
    assert 0 not in m._state, m._state
    assert all(type(v) is CORE._Payload and v.valid() for v in m.values())


SPIN = 200  # loop turns inside each claimed write (a broken claim lets two threads in: caught)


class InsideCounter:
    """Counts the threads inside a claimed write at once (the key's __hash__ runs in it)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inside = 0
        self.most = 0


class CountingKey:
    def __init__(self, counter: InsideCounter, name: tuple[int, int]) -> None:
        self.counter = counter
        self.name = name

    def __hash__(self) -> int:
        counter = self.counter
        with counter.lock:
            counter.inside += 1
            counter.most = max(counter.most, counter.inside)
        # Stay inside a while. The dict runs __hash__ inside its own lock (a critical section on
        # 3.13t), which would keep two writers out of here even with no claim at all; a yield
        # detaches this thread, which suspends that lock, so only the claim keeps them apart.
        os.sched_yield()
        for _ in range(SPIN):
            pass
        with counter.lock:
            counter.inside -= 1
        return hash(self.name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CountingKey) and other.name == self.name


@pytest.mark.ftmap_races_expected
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_claim_admits_one_writer_and_a_refused_write_is_not_performed(variant: str) -> None:
    m = VARIANTS[variant]()
    counter = InsideCounter()
    threads = 4

    def worker(index: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]], list[ConcurrentMapError]]:
        done, refused, errors = [], [], []
        for i in range(3_000):
            name = (index, i)
            try:
                if i % 3 == 2:
                    m.setdefault(CountingKey(counter, name), i)
                else:
                    m[CountingKey(counter, name)] = i
                done.append(name)
            except ConcurrentWriteError as error:
                refused.append(name)
                errors.append(error)
        return done, refused, errors

    results = run_together([lambda i=i: worker(i) for i in range(threads)], pin=True)
    assert counter.most == 1, f"{counter.most} threads were inside claimed writes at once"
    stored = {key.name for key in m._data}
    idents = set()
    for done, refused, errors in results:
        assert set(done) <= stored, "a write that returned is missing"
        assert not set(refused) & stored, "a write that reported a race was performed"
        for error in errors:
            assert error.thread.ident != error.other_thread.ident
            idents.add(error.other_thread.ident)
    refusals = sum(len(refused) for _, refused, _ in results)
    print(f"{variant}: {len(stored)} writes done, {refusals} refused as races")
    if refusals == 0:  # the threads took turns (a busy machine): no overlap, nothing shown
        pytest.skip("no two writes overlapped in time: the claim was never contended")
    assert len(stored) == sum(len(done) for done, _, _ in results)
    assert len(m.reports) == sum(len(errors) for _, _, errors in results)
    assert 0 not in m._state, m._state
