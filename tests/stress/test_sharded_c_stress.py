"""ShardedMap's C core under real threads: no use after free, no lost update, no deadlock.

The C map publishes no reference of its own that writers replace (its shard array and shard
dicts are fixed once set up); what writers replace are the values in the shard dicts, which
readers load with no lock through the dict API (PyDict_GetItemRef). The hammer checks that path
as tests/uaf.py checks ftmap_ref: writers replace every value with fresh _Payload objects as
fast as they can through every write path (set, merge, compute, pop + setdefault, mset),
churning the allocator so freed blocks come back as other objects, while readers check every
value they get through every read path (m[k], get, iteration): the exact type and intact
contents. Then: exact counters under merge/compute from several threads, and callbacks that
read the whole map while other threads write its shards (no deadlock, within a timeout).
These run under ThreadSanitizer too (make tsan: TSAN_TESTS).
"""

from __future__ import annotations

import contextlib
import operator
import os
import threading
from typing import Any

import pytest

from ftmap import MISSING, _impl
from tests.threads import within
from tests.uaf import hammer

core = _impl.core
VARIANTS = _impl.variants("ShardedMap")
pytestmark = pytest.mark.skipif(core is None or "c" not in VARIANTS, reason="needs the C core")
SECONDS = float(os.environ.get("FTMAP_UAF_SECONDS", "2.0"))
KEYS = [f"k{i}" for i in range(64)]


def test_values_replaced_by_writers_are_never_read_freed_or_reused() -> None:
    payload = core._Payload  # type: ignore[union-attr]
    m = VARIANTS["c"]({k: payload(0) for k in KEYS}, shards=8)
    serial_lock = threading.Lock()
    next_serial = [1]

    def serials(n: int) -> range:
        with serial_lock:
            first = next_serial[0]
            next_serial[0] += n
        return range(first, first + n)

    def write() -> int:
        churn = []
        for i, serial in enumerate(serials(len(KEYS))):
            key = KEYS[i]
            fresh = payload(serial)
            match serial % 5:
                case 0:
                    m[key] = fresh
                case 1:
                    m.merge(key, fresh, lambda old, new: new)
                case 2:
                    m.compute(key, lambda old, fresh=fresh: fresh)
                case 3:
                    m.pop(key, None)
                    m.setdefault(key, fresh)
                case _:
                    m.mset({key: fresh})
            churn.append(bytes(24))  # the freed payloads' size class, reused by other objects
        return len(KEYS)

    def read() -> tuple[int, list[str]]:
        bad: list[str] = []
        loads = 0

        def check(value: Any) -> None:
            nonlocal loads
            loads += 1
            if value is None:  # between pop and setdefault
                return
            if type(value) is not payload:
                bad.append(f"wrong type: {type(value).__name__}")
            elif not value.valid():
                bad.append(f"broken contents: serial {value.serial}")

        for key in KEYS:
            check(m.get(key))
            with contextlib.suppress(KeyError):
                check(m[key])
        for _, value in m.items():
            check(value)
        return loads, bad

    result = hammer(write, read, writers=2, readers=2, seconds=SECONDS)
    assert not result.errors, result.errors
    assert result.bad_count == 0, result.bad
    # Replacements overlapping checked loads, many times over: at C speed some 10**5 of each in
    # 2 s; under ThreadSanitizer on 2 loaded cores about 6,000 and 20,000 (the floor is for both).
    assert result.writes >= 2_000 and result.reads >= 5_000, (result.writes, result.reads)


@pytest.mark.parametrize("shards", [1, 4, 32])
def test_counters_from_several_threads_lose_nothing(shards: int) -> None:
    m = VARIANTS["c"](shards=shards)
    threads, rounds = 4, 2_000
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait(30)
            for i in range(rounds):
                key = KEYS[i % 8]
                m.merge(key, 1, operator.add)
                m.compute("total", lambda old: 1 if old is MISSING else old + 1)
        except BaseException as error:
            errors.append(error)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert not worker.is_alive(), "a worker hung"
    assert not errors, errors
    assert m["total"] == threads * rounds
    assert sum(m[k] for k in KEYS[:8]) == threads * rounds
    assert not m._debug_state()["locked"]


def test_callbacks_reading_the_whole_map_while_others_write_never_deadlock() -> None:
    m = VARIANTS["c"]({k: 0 for k in KEYS}, shards=4)
    threads, rounds = 4, 300
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def reads_everything(old: Any) -> Any:
        return len(list(m)) + len(repr(m)) + len(m.copy()) + (old if old is not MISSING else 0) * 0

    def work(index: int) -> None:
        try:
            barrier.wait(30)
            for i in range(rounds):
                key = KEYS[(i + index) % len(KEYS)]
                if index % 2:
                    m.compute(key, reads_everything)
                else:
                    m[key] = i
                    m.merge(key, 1, operator.add)
        except BaseException as error:
            errors.append(error)

    def run() -> None:
        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    within(120, run)
    assert not errors, errors
    assert len(m) == len(KEYS) and not m._debug_state()["locked"]


def test_two_threads_setting_up_one_map_leave_it_consistent() -> None:
    # Review finding: the loser of the set-up race wrote its shard count and mask before losing
    # the compare-and-swap, so the published 2-shard array was indexed with 1024-shard indices.
    # Now exactly one set-up wins and every key's shard is inside the published array.
    cls = VARIANTS["c"]
    for round_ in range(300):
        m = cls.__new__(cls)
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def setup(shards: int, m: Any = m, barrier: threading.Barrier = barrier) -> None:
            barrier.wait(timeout=10)
            try:
                m.__init__(shards=shards)
            except RuntimeError as error:
                errors.append(error)

        threads = [threading.Thread(target=setup, args=(n,)) for n in (2, 1024)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        assert len(errors) == 1 and "set up once" in str(errors[0]), (round_, errors)
        assert m.shards in (2, 1024)
        assert all(0 <= m.shard_index(k) < m.shards for k in KEYS), round_
        m.update(dict.fromkeys(KEYS, 0))
        assert len(m) == len(KEYS) and sum(m.shard_sizes()) == len(KEYS) and len(m.shard_sizes()) == m.shards
