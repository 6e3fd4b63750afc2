"""ShardedMapHandle under asynchronous exceptions thrown at random moments (issues 12 and 13).

The pure handle has its own write path (the map's lock protocol written out again with the
handle's per-thread bound methods, mark and placement cache), so it goes through the same
injection harness as the map (tests/stress/test_sharded_async_stress.py), with the same
operation families run through a handle made by the victim thread itself (the fast path).
After each round: no shard lock held, no thread marked as holding one, every shard usable from
another thread, every completed write present, the interrupted one all-or-nothing (bulk: per
key). The C handle runs the map's own C code: it is here too, for the record.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from ftmap import _impl
from tests.stress.test_sharded_async_stress import FAMILIES
from tests.stress.test_unsafe_async_stress import check_family
from tests.unit.test_sharded_async import assert_unlocked_and_usable
from tests.unit.test_unsafe_async import PyKey

MAPS = _impl.variants("ShardedMap")
_mine = threading.local()  # this thread's (map, handle)


def through_handle(operation: Callable[[Any, int], object]) -> Callable[[Any, int], object]:
    def run(m: Any, i: int) -> object:
        held = getattr(_mine, "held", None)
        if held is None or held[0] is not m:
            _mine.held = held = (m, m.handle())  # made by this (the victim) thread
        return operation(held[1], i)

    return run


@pytest.mark.parametrize("implementation", list(MAPS))
@pytest.mark.parametrize("family", FAMILIES, ids=str)
def test_sharded_handle_survives_async_exceptions(implementation: str, family: str, ftmap_seed: int) -> None:
    operation, is_bulk = FAMILIES[family]

    def make() -> Any:
        return MAPS[implementation]({PyKey(f"k{i}"): i for i in range(7)}, shards=4)

    check_family(make, through_handle(operation), assert_unlocked_and_usable, bulk=is_bulk, seed=ftmap_seed)
