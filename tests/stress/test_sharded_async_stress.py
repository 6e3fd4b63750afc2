"""ShardedMap under asynchronous exceptions thrown at random moments (issue 13, break 6).

The same harness as tests/stress/test_unsafe_async_stress.py, per operation
family: single-key writes, compound operations whose callbacks are Python
code (so exceptions also land inside them), bulk operations, and iteration
and whole-map reads (inside callbacks too). After each round: no shard lock
held, the thread not marked as holding one, every shard usable from another
thread, every completed write present, the interrupted one all-or-nothing
(bulk: per key).
"""

from __future__ import annotations

import operator
from typing import Any

import pytest

from ftmap import DELETE, MISSING, ShardedMap
from tests.stress.test_unsafe_async_stress import Op, check_family, single_key_write
from tests.unit.test_sharded_async import assert_unlocked_and_usable
from tests.unit.test_unsafe_async import PyKey


def toggle(old: Any) -> Any:
    return 1 if old is MISSING else DELETE


def add(exists: bool, old: Any, new: int) -> int:
    return (old or 0) + new


COMPOUND: list[Any] = [
    lambda m, key, i: m.compute(key, toggle),
    lambda m, key, i: m.merge(key, 1, operator.add),
    lambda m, key, i: m.compute_if_absent(PyKey(f"f{i % 3}"), lambda k: i),
    lambda m, key, i: m.compute_if_present(key, lambda old: old + 10),
    lambda m, key, i: m.upsert(key, 2, add),
    lambda m, key, i: m.remove_if(key, lambda k, v, exists: exists and v > 10),
    lambda m, key, i: m.replace(key, 1, 5) or m.set_if_absent(key, 3),
]


def compound(m: ShardedMap[Any, Any], i: int) -> object:
    return COMPOUND[i % len(COMPOUND)](m, PyKey(f"c{i % 5}"), i)


def bulk(m: ShardedMap[Any, Any], i: int) -> object:
    kind = i % 5
    if kind == 0:
        m.mset({PyKey(f"u{(i + j) % 9}"): i for j in range(6)})
    elif kind == 1:
        m.update([(PyKey(f"v{j}"), i) for j in range(4)], w=i)
    elif kind == 2:
        m |= {i % 4: i, PyKey("z"): i}
    elif kind == 3:
        m.clear()
    else:
        return m.popitem() if m else None
    return None


def reads(m: ShardedMap[Any, Any], i: int) -> object:
    seen = (list(m), list(m.items()), repr(m), m == {}, len(m), m.copy())
    inside = m.compute("n", lambda old: len(list(m)) + len(dict(m.items())))  # reads in a callback
    return seen, inside


def make_sharded() -> ShardedMap[Any, Any]:
    return ShardedMap({PyKey(f"k{i}"): i for i in range(7)}, shards=4)


FAMILIES: dict[str, tuple[Op, bool]] = {
    "single-key writes": (single_key_write, False),
    "compound operations with callbacks": (compound, False),
    "bulk writes": (bulk, True),
    "iteration and whole-map reads": (reads, False),
}


@pytest.mark.parametrize("family", FAMILIES, ids=str)
def test_sharded_map_survives_async_exceptions(family: str, ftmap_seed: int) -> None:
    operation, is_bulk = FAMILIES[family]
    check_family(make_sharded, operation, assert_unlocked_and_usable, bulk=is_bulk, seed=ftmap_seed)
