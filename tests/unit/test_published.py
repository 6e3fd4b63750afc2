"""ftmap._published: the protocol's cases one by one, then real threads checked for inversions."""

from __future__ import annotations

import gc
import random
import threading
import time
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any

import pytest

from ftmap._published import Follower, Published
from tests.threads import within


class Owner:
    """What a map looks like to Published: one attribute that writers replace."""

    def __init__(self, value: Any) -> None:
        self.current = value
        self.published: Published[Any] = Published(attrgetter("current"))
        self.lock = threading.Lock()  # serialises writers, as a map's writer lock does

    def publish(self, value: Any) -> None:
        with self.lock:
            self.published.begin()
            try:
                self.current = value
            finally:
                self.published.end()


def _nothing(value: Any) -> Sequence[Any]:
    return ()


def _read(follower: Follower[Any]) -> Any:
    cell = follower.cell
    if cell[0]:
        cell = follower.refresh()
    return cell[1]


def test_a_follower_sees_the_current_object_and_derives_from_it() -> None:
    owner = Owner({"a": 1})
    follower = owner.published.follow(owner, lambda d: (d.get, len(d)))
    cell = follower.cell
    assert cell[0] is False and cell[1] is owner.current
    assert cell[2]("a") == 1 and cell[3] == 1
    assert owner.published.followers() == 1


def test_a_publish_flags_every_follower_and_a_refresh_catches_up() -> None:
    owner = Owner(1)
    followers = [owner.published.follow(owner, _nothing) for _ in range(3)]
    owner.publish(2)
    assert all(f.cell[0] for f in followers)
    assert [_read(f) for f in followers] == [2, 2, 2]
    assert not any(f.cell[0] for f in followers)
    assert owner.published.followers() == 3  # each follower's old cell was unregistered


def test_a_publish_during_the_load_leaves_the_new_cell_flagged() -> None:
    # Case (b) of the proof: the object loaded at L is replaced before the flag is cleared.
    owner = Owner(1)
    published: Published[Any] = Published(attrgetter("current"))
    owner.published = published
    calls = []

    def load_then_publish(o: Owner) -> Any:
        value = o.current
        if calls == ["armed"]:
            calls.append("fired")
            o.publish(value + 1)
        return value

    owner.published._load = load_then_publish
    follower = published.follow(owner, _nothing)
    calls.append("armed")
    owner.publish(10)
    cell = follower.refresh()
    assert calls == ["armed", "fired"]
    assert cell[1] == 10 and owner.current == 11
    assert cell[0] is True  # stale: the next read must refresh
    assert _read(follower) == 11 and follower.cell[0] is False


def test_a_publish_between_the_load_and_the_clear_is_caught_by_the_sequence() -> None:
    # Case (a): the writer flags the new cell before the refresh clears the flag.
    owner = Owner(1)
    armed = []

    def derive(value: Any) -> Sequence[Any]:
        if armed:
            armed.clear()
            owner.publish(value + 1)
        return ()

    follower = owner.published.follow(owner, derive)
    armed.append(True)
    owner.publish(5)
    cell = follower.refresh()
    assert cell[1] == 5 and owner.current == 6
    assert cell[0] is True
    assert _read(follower) == 6


def test_a_lost_end_keeps_followers_refreshing_until_the_next_publish() -> None:
    owner = Owner(1)
    follower = owner.published.follow(owner, _nothing)
    owner.published.begin()  # end() never runs: an asynchronous exception in the owner's store
    owner.current = 2
    for _ in range(3):
        assert _read(follower) == 2
        assert follower.cell[0] is True  # seq stays odd: never trusted
    owner.publish(3)
    assert _read(follower) == 3 and follower.cell[0] is False


def test_an_interrupted_refresh_registers_nothing_and_keeps_the_old_cell_flagged() -> None:
    owner = Owner(1)
    fail = []

    def derive(value: Any) -> Sequence[Any]:
        if fail:
            raise KeyboardInterrupt
        return ()

    follower = owner.published.follow(owner, derive)
    old = follower.cell
    owner.publish(2)
    fail.append(True)
    with pytest.raises(KeyboardInterrupt):
        follower.refresh()
    assert follower.cell is old and old[0] is True
    assert owner.published.followers() == 1
    fail.clear()
    assert _read(follower) == 2 and owner.published.followers() == 1


def test_a_collected_follower_is_unregistered_and_close_stops_the_flags() -> None:
    owner = Owner(1)
    follower = owner.published.follow(owner, _nothing)
    other = owner.published.follow(owner, _nothing)
    assert owner.published.followers() == 2
    del follower
    gc.collect()
    assert owner.published.followers() == 1
    other.close()
    other.close()
    assert owner.published.followers() == 0
    assert _read(other) == 1  # still usable: the read refreshes and registers again
    assert owner.published.followers() == 1


class _NoCopy(dict):  # type: ignore[type-arg]
    def copy(self) -> Any:
        raise AssertionError("dict.copy() parks on free-threaded 3.13 once the dict had deletions")


def test_a_publish_lists_the_registry_without_dict_copy() -> None:
    # benchmarks/dict_copy_nested.py: on 3.13t a copy of a dict with many deleted slots (the
    # registry, after refreshes pop old cells) nests a critical section and parks ~10 us.
    owner = Owner(1)
    followers = [owner.published.follow(owner, _nothing) for _ in range(4)]
    for value in range(2, 6):  # refreshes: old cells popped, the registry has holes
        owner.publish(value)
        assert [_read(f) for f in followers] == [value] * 4
    owner.published._cells = _NoCopy(owner.published._cells)
    owner.publish(6)
    assert all(f.cell[0] for f in followers)
    assert [_read(f) for f in followers] == [6] * 4


# -- real threads: no read may see an older object than a read that finished before it began ---

Read = tuple[int, int, int]  # (start ns, end ns, value)
PUBLISHES = 2_000


def _inversions(reads: list[Read], writes: list[tuple[int, int]]) -> list[str]:
    """Reads that returned less than a read that ended before they started, or than a finished write.

    The writer publishes 1, 2, 3, ... in order, so the register is linearizable exactly
    when no read returns a value older than one already observed (by a read or by a write
    that completed) before the read began.
    """
    events: list[tuple[int, int, int]] = [(end, 0, value) for _, end, value in reads]
    events += [(end, 0, value) for end, value in writes]
    events += [(start, 1, value) for start, _, value in reads]
    events.sort()
    seen = 0
    found = []
    for time_ns, kind, value in events:
        if kind == 0:
            seen = max(seen, value)
        elif value < seen:
            found.append(f"a read starting at {time_ns} returned {value} after {seen} was observed")
    return found


def _run(threads: int, shared: bool, seed: int) -> tuple[list[Read], list[tuple[int, int]]]:
    owner = Owner(0)
    rng = random.Random(seed)
    shared_follower = owner.published.follow(owner, lambda v: (v,))
    barrier = threading.Barrier(threads + 1)
    errors: list[BaseException] = []
    logs: list[list[Read]] = [[] for _ in range(threads)]
    writes: list[tuple[int, int]] = []
    done = threading.Event()
    observed = [0]  # a value some reader has seen: the writer waits for it, so reads overlap publishes
    clock = time.perf_counter_ns

    def reader(index: int) -> None:
        try:
            follower = shared_follower if shared else owner.published.follow(owner, lambda v: (v,))
            log = logs[index]
            barrier.wait(10)
            # Only the first and the last read of each run of equal values are kept: a middle
            # read is in an inversion only if the first (as the earlier read) or the last (as
            # the later one) is too, so the check loses nothing and the log stays small.
            last: Read | None = None
            while not done.is_set() or not log:
                start = clock()
                cell = follower.cell
                if cell[0]:
                    cell = follower.refresh()
                read = (start, clock(), cell[2])
                if last is None or read[2] != last[2]:
                    observed[0] = read[2]
                    if last is not None and (not log or log[-1] is not last):
                        log.append(last)
                    log.append(read)
                last = read
            if last is not None and log[-1] is not last:
                log.append(last)
        except BaseException as error:
            errors.append(error)

    def writer() -> None:
        for value in range(1, PUBLISHES + 1):
            owner.publish(value)
            writes.append((clock(), value))
            deadline = time.monotonic() + 10
            while value % 10 == 0 and observed[0] < value and time.monotonic() < deadline:
                pass
            for _ in range(rng.randrange(200)):
                pass
        done.set()

    workers = [threading.Thread(target=reader, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait(10)
    publisher = threading.Thread(target=writer)
    publisher.start()
    publisher.join(60)
    for worker in workers:
        worker.join(60)
    assert not any(w.is_alive() for w in [*workers, publisher]), "a thread is stuck"
    assert not errors, errors
    return [read for log in logs for read in log], writes


@pytest.mark.parallel_threads(1)  # runs its own threads
@pytest.mark.parametrize("shared", [False, True], ids=["per-thread", "shared"])
def test_no_read_through_followers_sees_an_older_object_than_one_already_seen(
    shared: bool, ftmap_seed: int
) -> None:
    reads, writes = within(120, lambda: _run(4, shared, ftmap_seed))
    assert len({value for _, _, value in reads}) > 20, "too few publishes overlapped the reads"
    assert _inversions(reads, writes) == []


def test_the_inversion_check_can_fail() -> None:
    # The property above must be able to fail: a read of 1 after a read of 2 ended is caught.
    reads: list[Read] = [(0, 10, 2), (20, 30, 1)]
    assert _inversions(reads, []) != []
    assert _inversions([(0, 10, 1)], [(5, 2)]) == []
    assert _inversions([(20, 30, 1)], [(5, 2)]) != []


def test_a_follower_derives_with_the_thread_that_refreshes() -> None:
    owner = Owner({"k": 1})
    made: list[Callable[..., Any]] = []
    follower = owner.published.follow(owner, lambda d: made.append(d.get) or (made[-1],))
    owner.publish({"k": 2})
    assert within(10, lambda: _read(follower)) == {"k": 2}
    assert follower.cell[2] is made[-1] and follower.cell[2]("k") == 2
