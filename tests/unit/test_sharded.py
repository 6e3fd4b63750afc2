"""ShardedMap: placement, FNV, compound operations, recursive updates, callbacks that raise."""

from __future__ import annotations

import copy
import math
import operator
import os
import pickle
from collections.abc import Callable
from typing import Any

import pytest

from ftmap import DELETE, MISSING, RecursiveUpdateError, ShardedMap, fnv1_32, fnv1a_32, fnv1a_64
from tests.threads import within

# -- FNV and placement -------------------------------------------------------------------


def test_fnv_functions_match_the_published_test_vectors() -> None:
    assert fnv1a_32(b"") == 0x811C9DC5
    assert fnv1a_32(b"a") == 0xE40C292C
    assert fnv1a_32(b"foobar") == 0xBF9CF968
    assert fnv1_32(b"") == 0x811C9DC5
    assert fnv1_32(b"a") == 0x050C5D7E
    assert fnv1_32(b"foobar") == 0x31F0B262
    assert fnv1a_64(b"") == 0xCBF29CE484222325
    assert fnv1a_64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a_64(b"foobar") == 0x85944171F73967E8


def test_fnv1_32_hasher_places_keys_as_orcaman_does() -> None:
    # orcaman/concurrent-map: shard = fnv32(key) % SHARD_COUNT, with its fnv32 being FNV-1.
    m: ShardedMap[str, int] = ShardedMap(shards=32, hasher=lambda k: fnv1_32(k.encode()))
    for key in ("a", "foobar", "user:42", "ключ"):
        assert m.shard_index(key) == fnv1_32(key.encode()) % 32
        m[key] = 1
        assert m.shard_sizes()[m.shard_index(key)] >= 1


@pytest.mark.parametrize("shards", [0, 3, 12, -4, 1 << 21])
def test_shards_must_be_a_power_of_two_up_to_a_million(shards: int) -> None:
    with pytest.raises(ValueError, match="power of two from 1 to 1048576"):
        ShardedMap(shards=shards)


@pytest.mark.parametrize("shards", [2.0, "32", True])
def test_shards_must_be_an_int(shards: Any) -> None:
    with pytest.raises(TypeError, match="shards must be an int"):
        ShardedMap(shards=shards)


def chi_square_p(counts: list[int]) -> float:
    """Upper-tail p of the chi-square statistic for uniform counts (Wilson-Hilferty)."""
    total, k = sum(counts), len(counts)
    expected = total / k
    x2 = sum((c - expected) ** 2 / expected for c in counts)
    z = ((x2 / (k - 1)) ** (1 / 3) - (1 - 2 / (9 * (k - 1)))) / math.sqrt(2 / (9 * (k - 1)))
    return 0.5 * math.erfc(z / math.sqrt(2))


FAMILIES: dict[str, list[Any]] = {
    "sequential ints": list(range(50_000)),
    "multiples of the shard count": [i * 64 for i in range(50_000)],
    "multiples of 1024": [i * 1024 for i in range(50_000)],
    "strings with a long common prefix": [f"https://example.com/api/v1/items/{i}" for i in range(50_000)],
    "tuples": [(i, i % 7, "x") for i in range(50_000)],
    "multiples of 2**40": [i << 40 for i in range(50_000)],
    "floats": [i / 8 for i in range(50_000)],
}


# str hashes (and so those of tuples holding one) change with every process's hash seed: for
# those families p is a fresh uniform draw on each run, and make test runs these cases about
# 40 times, so a 0.001 bar would fail one run in 25 by chance. A hasher that really clumps gives
# p far below 1e-9 whatever the seed, so the seeded families use 1e-7: still able to fail, and
# a false alarm about once in 250,000 runs. The int and float families are deterministic.
SEEDED_FAMILIES = {"strings with a long common prefix", "tuples"}


@pytest.mark.parametrize("family", FAMILIES, ids=str)
@pytest.mark.parametrize("shards", [1, 2, 16, 32, 64, 1024])
def test_default_hasher_spreads_keys_uniformly(family: str, shards: int) -> None:
    m: ShardedMap[Any, int] = ShardedMap(shards=shards)
    counts = [0] * shards
    for key in FAMILIES[family]:
        counts[m.shard_index(key)] += 1
    if shards > 1:
        alpha = 1e-7 if family in SEEDED_FAMILIES else 0.001
        assert chi_square_p(counts) >= alpha, (counts, f"PYTHONHASHSEED={os.environ.get('PYTHONHASHSEED')}")
    assert sum(counts) == len(FAMILIES[family])


def test_equal_keys_of_different_types_share_a_shard() -> None:
    m: ShardedMap[Any, str] = ShardedMap(shards=64)
    m[1] = "int"
    m[1.0] = "float"
    m[True] = "bool"
    assert len(m) == 1 and m[1] == "bool" and m.shard_index(1) == m.shard_index(1.0) == m.shard_index(True)


def test_shard_sizes_and_index_agree() -> None:
    m = ShardedMap({i: i for i in range(1000)}, shards=8)
    sizes = m.shard_sizes()
    assert len(sizes) == 8 == m.shards and sum(sizes) == 1000 == len(m)
    assert all(sizes[m.shard_index(i)] > 0 for i in range(1000))


# -- the orcaman-style and Java-style operations --------------------------------------------


def test_set_if_absent_replace_remove() -> None:
    m: ShardedMap[str, Any] = ShardedMap()
    assert m.set_if_absent("k", 1) and not m.set_if_absent("k", 2) and m["k"] == 1
    assert not m.replace("k", 5, 6) and m.replace("k", 1, [1]) and m["k"] == [1]
    assert m.replace("k", [1], 2)  # equality, for an unhashable value
    assert not m.replace("absent", None, 1) and "absent" not in m
    assert not m.remove("k", 3) and m.remove("k", 2) and "k" not in m


def test_compute_family() -> None:
    m: ShardedMap[str, int] = ShardedMap()
    assert m.compute("n", lambda old: 1 if old is MISSING else old + 1) == 1
    assert m.compute("n", lambda old: 1 if old is MISSING else old + 1) == 2
    assert m.compute("n", lambda old: DELETE) is MISSING and "n" not in m
    assert m.compute("gone", lambda old: DELETE) is MISSING and "gone" not in m
    assert m.compute_if_present("n", lambda old: old + 1) is MISSING and "n" not in m
    m["n"] = 5
    assert m.compute_if_present("n", lambda old: old * 2) == 10
    assert m.compute_if_present("n", lambda old: DELETE) is MISSING and "n" not in m
    calls: list[str] = []
    assert m.compute_if_absent("f", lambda key: calls.append(key) or 7) == 7
    assert m.compute_if_absent("f", lambda key: calls.append(key) or 8) == 7
    assert calls == ["f"]


def test_merge_and_upsert_and_remove_if() -> None:
    m: ShardedMap[str, int] = ShardedMap()
    assert m.merge("c", 1, operator.add) == 1 and m.merge("c", 1, operator.add) == 2
    assert m.merge("c", 0, lambda old, new: DELETE) is MISSING and "c" not in m
    seen: list[tuple[bool, Any, int]] = []

    def append(exists: bool, old: Any, new: int) -> int:
        seen.append((exists, old, new))
        return (old or 0) + new

    assert m.upsert("u", 3, append) == 3 and m.upsert("u", 4, append) == 7
    assert seen == [(False, None, 3), (True, 3, 4)]
    asked: list[tuple[str, Any, bool]] = []

    def when_big(key: str, value: Any, exists: bool) -> bool:
        asked.append((key, value, exists))
        return exists and value > 5

    assert m.remove_if("u", when_big) and "u" not in m
    assert not m.remove_if("u", when_big)  # asked even when absent, as orcaman does
    assert asked == [("u", 7, True), ("u", None, False)]


def test_mset_update_clear() -> None:
    m: ShardedMap[int, int] = ShardedMap(shards=4)
    m.mset({i: i for i in range(100)})
    m.update(ShardedMap({100: 100}), extra=1)  # type: ignore[arg-type]
    assert len(m) == 102 and m[100] == 100 and m["extra"] == 1  # type: ignore[index]
    m.clear()
    assert len(m) == 0 and m.shard_sizes() == [0, 0, 0, 0]


def test_pickle_keeps_shards_and_a_picklable_hasher() -> None:
    m = ShardedMap({"a": 1}, shards=8, hasher=len)
    again = pickle.loads(pickle.dumps(m))
    assert again == m and again.shards == 8 and again.shard_index("abc") == 3


# -- callbacks: recursive updates and exceptions ----------------------------------------------


@pytest.mark.parametrize(
    "recurse",
    [
        lambda m: m.__setitem__("other", 1),
        lambda m: m.__delitem__("x"),
        lambda m: m.compute("x", lambda old: 1),
        lambda m: m.merge("other", 1, operator.add),
        lambda m: m.pop("x", None),
        lambda m: m.mset({"y": 1}),
        lambda m: m.clear(),
    ],
)
def test_a_callback_that_changes_its_map_raises_instead_of_deadlocking(recurse: Any) -> None:
    m: ShardedMap[str, int] = ShardedMap({"x": 1}, shards=1)  # one shard: any key would deadlock

    def callback(*args: Any) -> int:
        recurse(m)
        return 99

    with pytest.raises(RecursiveUpdateError, match="inside the callback of its compute"):
        within(10, lambda: m.compute("x", callback))
    assert m == {"x": 1}  # the key unchanged
    m["x"] = 2  # and the shard unlocked
    assert m["x"] == 2


def test_a_callback_may_read_its_map() -> None:
    m: ShardedMap[str, int] = ShardedMap({"a": 1, "b": 2}, shards=1)
    assert m.compute("a", lambda old: old + m["b"] + len(m) + ("b" in m)) == 6


@pytest.mark.parametrize(
    "operation",
    [
        lambda m, fail: m.compute("k", fail),
        lambda m, fail: m.compute_if_present("k", fail),
        lambda m, fail: m.compute_if_absent("new", fail),
        lambda m, fail: m.merge("k", 1, fail),
        lambda m, fail: m.upsert("k", 1, fail),
        lambda m, fail: m.remove_if("k", fail),
    ],
)
def test_a_callback_that_raises_leaves_the_key_unchanged_and_the_shard_unlocked(operation: Any) -> None:
    m: ShardedMap[str, int] = ShardedMap({"k": 1}, shards=1)

    def fail(*args: Any) -> int:
        raise ValueError("callback failed")

    with pytest.raises(ValueError, match="callback failed"):
        operation(m, fail)
    assert m == {"k": 1}
    m.merge("k", 1, operator.add)  # takes the shard lock: it was released
    assert m["k"] == 2
    assert m.compute("k", lambda old: old + 1) == 3  # and no callback is thought to be running


def test_recursive_update_error_pickles() -> None:
    error = RecursiveUpdateError("ShardedMap", "set", "compute")
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) and (again.operation, again.outer) == ("set", "compute")


# -- callbacks and key hooks that re-enter the map (issue 13, break 2) ------------------------

READS_OF_THE_WHOLE_MAP: dict[str, Any] = {
    "list": list,
    "repr": repr,
    "== {}": lambda m: m == {},
    "dict(items)": lambda m: dict(m.items()),
    "copy": lambda m: m.copy(),
    "copy.copy": copy.copy,
    "len": len,
    "values": lambda m: sorted(m.values()),
    "pickle": lambda m: pickle.loads(pickle.dumps(m)),
    "compute_if_absent of a present key": lambda m: m.compute_if_absent("a", lambda k: 0),
}

COMPOUND: dict[str, Any] = {
    "compute": lambda m, cb: m.compute("a", lambda old: cb() and old + 1),
    "compute new key": lambda m, cb: m.compute("new", lambda old: cb() and 7),
    "compute_if_present": lambda m, cb: m.compute_if_present("a", lambda old: cb() and old + 1),
    "compute_if_absent": lambda m, cb: m.compute_if_absent("new", lambda key: cb() and 7),
    "merge": lambda m, cb: m.merge("a", 1, lambda old, new: cb() and old + new),
    "upsert": lambda m, cb: m.upsert("a", 1, lambda exists, old, new: cb() and old + new),
    "remove_if": lambda m, cb: m.remove_if("a", lambda key, value, exists: cb() and False),
}


@pytest.mark.parametrize("read", READS_OF_THE_WHOLE_MAP, ids=str)
@pytest.mark.parametrize("operation", COMPOUND, ids=str)
def test_a_callback_may_read_the_whole_map(operation: str, read: str) -> None:
    m: ShardedMap[str, int] = ShardedMap({"a": 1, "b": 2}, shards=1)  # the callback's own shard
    seen: list[Any] = []

    def callback() -> bool:
        seen.append(READS_OF_THE_WHOLE_MAP[read](m))
        return True

    within(10, lambda: COMPOUND[operation](m, callback))
    assert len(seen) == 1
    if read in ("list", "dict(items)", "copy", "copy.copy", "pickle"):
        assert dict(seen[0]) == {"a": 1, "b": 2} if read != "list" else sorted(seen[0]) == ["a", "b"]
    m["z"] = 0  # the shard is unlocked, and the thread not marked as holding it
    assert m["z"] == 0


def test_iteration_inside_a_callback_sees_the_map_before_the_operation() -> None:
    m = ShardedMap({i: i for i in range(100)}, shards=4)
    assert within(10, lambda: m.compute(5, lambda old: sum(m.values()) + len(list(m.items())))) == 5050
    assert m[5] == 5050


class EqWrites:
    """Hashes like ``name``; its __eq__ (run on a collision) first calls write(map)."""

    def __init__(self, name: str, write: Callable[[Any], object]) -> None:
        self.name = name
        self.write = write
        self.map: Any = None

    def __hash__(self) -> int:
        return hash(self.name)

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        self.write(self.map)
        return isinstance(other, EqWrites) and other.name == self.name


WRITES: dict[str, Callable[[Any], object]] = {
    "set the same key's shard": lambda m: m.__setitem__("x", 1),
    "pop": lambda m: m.pop("x", None),
    "merge": lambda m: m.merge("x", 1, operator.add),
    "compute": lambda m: m.compute("x", lambda old: 1),
    "mset": lambda m: m.mset({"x": 1, "y": 2}),
    "clear": lambda m: m.clear(),
    "popitem": lambda m: m.popitem(),
}


@pytest.mark.parametrize("shards", [1, 2, 64])
@pytest.mark.parametrize("write", WRITES, ids=str)
@pytest.mark.parametrize(
    "operation",
    [
        lambda m, k: m.__setitem__(k, 5),
        lambda m, k: m.__delitem__(k),
        lambda m, k: m.pop(k),
        lambda m, k: m.setdefault(k, 5),
        lambda m, k: m.set_if_absent(k, 5),
        lambda m, k: m.replace(k, 1, 5),
        lambda m, k: m.remove(k, 1),
        lambda m, k: m.compute(k, lambda old: 5),
        lambda m, k: m.compute_if_present(k, lambda old: 5),
        lambda m, k: m.merge(k, 5, operator.add),
        lambda m, k: m.upsert(k, 5, lambda *a: 5),
        lambda m, k: m.remove_if(k, lambda *a: True),
        lambda m, k: m.mset({k: 5}),
    ],
)
def test_a_key_whose_eq_writes_the_map_raises_instead_of_deadlocking(
    operation: Any, write: str, shards: int
) -> None:
    # The stored key and the one looked up are equal but not identical: the dict
    # operation, under the shard lock, calls __eq__, which writes the map.
    stored = EqWrites("k", WRITES[write])
    m: ShardedMap[Any, int] = ShardedMap({stored: 1, "other": 2}, shards=shards)
    lookup = EqWrites("k", WRITES[write])
    stored.map = lookup.map = m
    with pytest.raises(
        RecursiveUpdateError, match=r"^recursive update: \w+ on a ShardedMap from (code|inside the callback)"
    ):
        within(10, lambda: operation(m, lookup))
    assert dict(m.items()) == {stored: 1, "other": 2}  # intact
    m["after"] = 3  # and unlocked
    assert within(10, lambda: m.pop("after")) == 3


class HashWrites:
    """A key whose __hash__ first writes ``side`` into the map."""

    def __init__(self, m: Any) -> None:
        self.m = m
        self.calls = 0

    def __hash__(self) -> int:
        self.calls += 1
        self.m["side"] = self.calls
        return 12345


@pytest.mark.parametrize("shards", [1, 64])
@pytest.mark.parametrize(
    "operation",
    [
        lambda m, k: m.__setitem__(k, 5),
        lambda m, k: m.setdefault(k, 5),
        lambda m, k: m.compute(k, lambda old: 5),
        lambda m, k: m.merge(k, 5, operator.add),
        lambda m, k: m.pop(k, None),
        lambda m, k: m.mset({k: 5}),
    ],
)
def test_a_key_whose_hash_writes_the_map_works_or_raises_but_never_deadlocks(
    operation: Any, shards: int
) -> None:
    # Placement calls __hash__ with no lock held (that write works); the pure-Python
    # map's dict operation calls it again under the lock (RecursiveUpdateError). A C
    # core that hashes once, outside the lock, may let the operation succeed.
    m: ShardedMap[Any, int] = ShardedMap({"a": 1}, shards=shards)
    key = HashWrites(m)
    try:
        within(10, lambda: operation(m, key))
    except RecursiveUpdateError:
        assert all(k is not key for k in m)  # refused: not stored (iteration hashes nothing)
    content = {k: v for k, v in m.items() if k is not key}
    assert content["a"] == 1 and set(content) == {"a", "side"}
    m["after"] = 1
    assert m.pop("after") == 1


def test_a_del_that_writes_the_map_under_its_lock_never_deadlocks() -> None:
    m: ShardedMap[str, Any] = ShardedMap(shards=1)
    errors: list[BaseException] = []

    class Resource:
        def __del__(self) -> None:
            try:
                m.pop("registry-entry", None)
            except RecursiveUpdateError as error:
                errors.append(error)

    def body() -> None:
        # On one thread: on the free-threaded build an object freed by a thread other
        # than its creator is finalized later, by its creator (biased reference counting).
        m["registry-entry"] = 1
        m["r"] = Resource()
        m["r"] = None  # drops the Resource under the shard lock

    within(10, body)
    assert m == {"registry-entry": 1, "r": None}
    assert [type(e) for e in errors] == [RecursiveUpdateError]


def test_a_callback_of_another_map_may_write_this_one() -> None:
    one: ShardedMap[str, int] = ShardedMap(shards=1)
    two: ShardedMap[str, int] = ShardedMap(shards=1)
    assert within(10, lambda: one.compute("a", lambda old: two.merge("a", 1, operator.add) + 1)) == 2
    assert one == {"a": 2} and two == {"a": 1}


# -- markers are never values (issue 13, break 5) --------------------------------------------

STORES: dict[str, Callable[[Any, Any], object]] = {
    "set": lambda m, v: m.__setitem__("k", v),
    "set existing": lambda m, v: m.__setitem__("a", v),
    "setdefault": lambda m, v: m.setdefault("k", v),
    "setdefault existing": lambda m, v: m.setdefault("a", v),
    "set_if_absent": lambda m, v: m.set_if_absent("k", v),
    "replace": lambda m, v: m.replace("a", 1, v),
    "merge": lambda m, v: m.merge("k", v, operator.add),
    "merge existing": lambda m, v: m.merge("a", v, operator.add),
    "mset": lambda m, v: m.mset({"k": 1, "j": v}),
    "update": lambda m, v: m.update({"k": 1}, j=v),
    "update pairs": lambda m, v: m.update([("k", 1), ("j", v)]),
    "ior": lambda m, v: m.__ior__({"k": 1, "j": v}),
}


@pytest.mark.parametrize("marker", [MISSING, DELETE], ids=repr)
@pytest.mark.parametrize("store", STORES, ids=str)
def test_storing_a_marker_is_refused_and_changes_nothing(store: str, marker: Any) -> None:
    m: ShardedMap[str, Any] = ShardedMap({"a": 1}, shards=4)
    with pytest.raises(
        ValueError, match=rf"^{marker!r} cannot be stored in a ShardedMap \(\w+\): it is ftmap's"
    ):
        STORES[store](m, marker)
    assert m == {"a": 1}


@pytest.mark.parametrize("marker", [MISSING, DELETE], ids=repr)
def test_a_map_is_never_built_with_a_marker(marker: Any) -> None:
    for build in (
        lambda: ShardedMap({"a": marker}),
        lambda: ShardedMap([("a", 1), ("b", marker)]),
        lambda: ShardedMap(a=marker),
        lambda: ShardedMap({"a": 1}) | {"b": marker},
    ):
        with pytest.raises(ValueError, match="cannot be stored"):
            build()


@pytest.mark.parametrize("marker", [MISSING, DELETE], ids=repr)
def test_a_callback_returning_a_marker_leaves_the_key_absent(marker: Any) -> None:
    m: ShardedMap[str, Any] = ShardedMap({"a": 1, "b": 2, "c": 3, "d": 4}, shards=4)
    assert m.compute("new", lambda old: marker) is MISSING and "new" not in m
    assert m.compute("a", lambda old: marker) is MISSING and "a" not in m
    assert m.compute_if_present("b", lambda old: marker) is MISSING and "b" not in m
    assert m.compute_if_absent("new", lambda key: marker) is MISSING and "new" not in m
    assert m.merge("c", 1, lambda old, new: marker) is MISSING and "c" not in m
    assert m.upsert("d", 1, lambda exists, old, new: marker) is MISSING and "d" not in m
    assert m.upsert("new", 1, lambda exists, old, new: marker) is MISSING and "new" not in m
    assert m == {} and len(m) == 0 and list(m) == []
    # The identity function keeps an absent key absent and a present one unchanged.
    assert m.compute("x", lambda old: old) is MISSING and "x" not in m
    m["x"] = 5
    assert m.compute("x", lambda old: old) == 5
    # A compute_if_absent whose factory declined runs it again next time.
    assert m.compute_if_absent("y", lambda key: 6) == 6


def test_markers_are_accepted_where_nothing_is_stored() -> None:
    m: ShardedMap[str, Any] = ShardedMap({"a": 1})
    assert m.get("zz", MISSING) is MISSING and m.pop("zz", DELETE) is DELETE
    assert not m.replace("a", MISSING, 2) and not m.remove("a", DELETE) and m == {"a": 1}
    assert m.upsert("a", MISSING, lambda exists, old, new: old + 1) == 2


def test_the_pure_maps_placement_cache_agrees_with_shard_of_and_stays_bounded() -> None:
    # Pure-only internals (the C map computes the placement every time, in nanoseconds).
    from ftmap._fnv import shard_of  # noqa: PLC0415
    from ftmap._sharded import _PLACES_MIN  # noqa: PLC0415
    from ftmap._sharded import ShardedMap as PureShardedMap  # noqa: PLC0415

    m: PureShardedMap[int, int] = PureShardedMap(shards=64)
    for i in range(3 * _PLACES_MIN):  # absent keys cannot grow it past the minimum
        assert m.get(i) is None
        assert len(m._places) <= _PLACES_MIN
    m.update({i: i for i in range(3 * _PLACES_MIN)})  # a bigger map keeps every key cached
    assert all(m[i] == i for i in range(3 * _PLACES_MIN))
    assert len(m._places) <= 3 * _PLACES_MIN
    assert all(m.shard_index(i) == shard_of(i, 6) for i in range(0, 3 * _PLACES_MIN, 7))
    assert sorted(m._places.items()) == sorted((hash(i), shard_of(i, 6)) for i in m._places)
