"""The async-exception harness itself: it must catch a map that leaks a lock, and pass one that does not."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.inject import inject_rounds


def _setup() -> dict[str, Any]:
    return {"lock": threading.Lock(), "data": {}}


def _check(state: dict[str, Any], done: int, inside: bool) -> None:
    assert not state["lock"].locked(), "the lock leaked"
    assert all(state["data"].get(i) == i for i in range(done)), "a completed write was lost"
    assert len(state["data"]) in (done, done + inside)


def _leaky(state: dict[str, Any], i: int) -> None:
    state["lock"].acquire()  # an exception delivered right after this call leaks the lock
    state["data"][i] = i
    state["lock"].release()


def _safe(state: dict[str, Any], i: int) -> None:
    with state["lock"]:
        state["data"][i] = i


def test_the_harness_catches_a_leaked_lock(ftmap_seed: int) -> None:
    with pytest.raises(AssertionError, match="inconsistent after an injected exception"):
        inject_rounds(_setup, _leaky, _check, rounds=5000, seed=ftmap_seed)


def test_the_harness_lands_inside_operations_and_passes_a_safe_one(ftmap_seed: int) -> None:
    stats = inject_rounds(_setup, _safe, _check, rounds=1000, seed=ftmap_seed)
    print(stats)
    assert stats.rounds == 1000
    assert stats.inside >= 200, f"too few exceptions landed inside an operation: {stats}"
