"""The checker accepts known-linearizable histories and rejects known-illegal ones."""

from __future__ import annotations

import operator
import random
import threading
import time

import pytest

from ftmap.testing import MISSING, History, Operation, check_linearizable


def op(thread: int, name: str, *args: object, result: object = None, at: tuple[int, int]) -> Operation:
    return Operation(thread, name, tuple(args), result, at[0], at[1])


def test_sequential_history_is_linearizable() -> None:
    history = [
        op(0, "set", "k", 1, at=(0, 1)),
        op(0, "get", "k", result=1, at=(2, 3)),
        op(0, "delete", "k", at=(4, 5)),
        op(0, "get", "k", result=MISSING, at=(6, 7)),
    ]
    assert check_linearizable(history).ok


def test_overlap_that_only_one_order_explains_is_accepted() -> None:
    # The read overlaps both writes; only "set 1, get 1, set 2" or "set 2, set 1, get 1" explain it.
    history = [
        op(0, "set", "k", 1, at=(0, 10)),
        op(1, "set", "k", 2, at=(0, 10)),
        op(2, "get", "k", result=1, at=(5, 15)),
        op(2, "get", "k", result=1, at=(16, 17)),
    ]
    assert check_linearizable(history).ok


def test_stale_read_after_a_completed_write_is_rejected() -> None:
    history = [
        op(0, "set", "k", 1, at=(0, 1)),
        op(0, "set", "k", 2, at=(2, 3)),
        op(1, "get", "k", result=1, at=(4, 5)),
    ]
    result = check_linearizable(history)
    assert result.status == "illegal" and len(result.failing) == 3
    assert "not linearizable" in result.explain() and "get('k') -> 1" in result.explain()


def test_read_of_a_value_never_written_is_rejected() -> None:
    history = [op(0, "set", "k", 1, at=(0, 1)), op(1, "get", "k", result=7, at=(0, 2))]
    assert check_linearizable(history).status == "illegal"


def test_lost_update_is_rejected() -> None:
    # Two merges of +1 both return 1: one increment was lost.
    history = [
        op(0, "merge", "n", 1, operator.add, result=1, at=(0, 10)),
        op(1, "merge", "n", 1, operator.add, result=1, at=(0, 10)),
    ]
    assert check_linearizable(history).status == "illegal"
    history[1] = op(1, "merge", "n", 1, operator.add, result=2, at=(0, 10))
    assert check_linearizable(history).ok


def test_load_or_store_reporting_loaded_for_an_absent_key_is_rejected() -> None:
    history = [op(0, "load_or_store", "k", 1, result=(1, True), at=(0, 1))]
    assert check_linearizable(history).status == "illegal"
    assert check_linearizable([op(0, "load_or_store", "k", 1, result=(1, False), at=(0, 1))]).ok


def test_cas_swap_pop_and_compute() -> None:
    history = [
        op(0, "cas", "k", MISSING, 1, result=True, at=(0, 1)),
        op(0, "cas", "k", 5, 9, result=False, at=(2, 3)),
        op(0, "swap", "k", 2, result=(1, True), at=(4, 5)),
        op(0, "compute", "k", lambda old: old * 10, result=20, at=(6, 7)),
        op(0, "pop", "k", result=20, at=(8, 9)),
        op(0, "swap", "k", 3, result=(None, False), at=(10, 11)),
    ]
    assert check_linearizable(history).ok
    history[1] = op(0, "cas", "k", 1, 9, result=False, at=(2, 3))  # the value was 1: must swap
    assert check_linearizable(history).status == "illegal"


def test_smallest_failing_partition_is_reported() -> None:
    good = [op(0, "set", f"k{i}", i, at=(i, i + 1)) for i in range(5)]
    bad = [op(1, "set", "x", 1, at=(0, 1)), op(1, "get", "x", result=2, at=(2, 3))]
    result = check_linearizable(good + bad)
    assert result.status == "illegal" and {o.args[0] for o in result.failing} == {"x"}


def test_an_operation_cannot_return_before_its_call() -> None:
    with pytest.raises(ValueError, match="returns before"):
        op(0, "get", "k", at=(5, 4))


def test_unknown_operation_is_an_error() -> None:
    with pytest.raises(ValueError, match="no operation 'frobnicate'"):
        check_linearizable([op(0, "frobnicate", "k", at=(0, 1))])


@pytest.mark.thread_unsafe(reason="times itself")
def test_ten_thousand_operations_over_64_keys_within_seconds() -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    lock = threading.Lock()
    model_map: dict[int, int] = {}
    history: list[Operation] = []
    # The operations take effect at ticks 1, 2, 3 ...; each interval holds its tick and overlaps others.
    for clock in range(1, 10_001):
        key, value, thread = rng.randrange(64), rng.randrange(5), clock % 4
        with lock:
            if rng.random() < 0.5:
                history.append(op(thread, "set", key, value, at=(max(clock - 3, 0), clock + 3)))
                model_map[key] = value
            else:
                history.append(
                    op(thread, "get", key, result=model_map.get(key, MISSING), at=(clock, clock + 3))
                )
    started = time.monotonic()
    result = check_linearizable(history)
    assert result.ok, result.explain()
    assert time.monotonic() - started < 10


def test_history_recorded_from_real_threads_on_a_locked_dict_is_linearizable() -> None:
    history = History()
    data: dict[int, int] = {}
    lock = threading.Lock()

    def write(key: int, value: int) -> None:
        with lock:
            data[key] = value

    def read(key: int) -> object:
        with lock:
            return data.get(key, MISSING)

    def worker(thread: int) -> None:
        rng = random.Random(thread)
        for _ in range(2_000):
            key, value = rng.randrange(8), rng.randrange(100)
            if rng.random() < 0.5:
                history.record(thread, "set", (key, value), lambda: write(key, value))
            else:
                history.record(thread, "get", (key,), lambda: read(key))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(history) == 8_000
    result = check_linearizable(history)
    assert result.ok, result.explain()
