"""The MutableMapping protocol, the same for every map in ftmap (order-agnostic).

Each map adds its own tests for what is particular to it (ordering,
detection, Go's API ...) in its own module.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

import pytest

from ftmap import ShardedMap, SnapshotMap, SyncMap, UnsafeMap

MAP_TYPES: list[Callable[..., MutableMapping[Any, Any]]] = [UnsafeMap, SyncMap, ShardedMap, SnapshotMap]


@pytest.fixture(params=MAP_TYPES, ids=lambda t: t.__name__)
def make(request: pytest.FixtureRequest) -> Callable[..., MutableMapping[Any, Any]]:
    return request.param  # type: ignore[no-any-return]


def test_is_a_generic_mutable_mapping_and_unhashable(make: Any) -> None:
    m = make[str, int]()
    assert isinstance(m, MutableMapping) and not isinstance(m, dict)
    with pytest.raises(TypeError):
        hash(m)


def test_construction_like_dict(make: Any) -> None:
    assert make({"a": 1}, b=2) == {"a": 1, "b": 2}
    assert make([("a", 1), ("b", 2)]) == {"a": 1, "b": 2}
    assert make() == {}


def test_single_key_operations(make: Any) -> None:
    m = make()
    m["a"] = 1
    m["b"] = 2
    m["a"] = 3
    assert m["a"] == 3 and len(m) == 2
    assert "a" in m and "z" not in m
    assert m.get("z") is None and m.get("z", 9) == 9 and m.get("a", 9) == 3
    with pytest.raises(KeyError):
        m["z"]
    del m["a"]
    with pytest.raises(KeyError):
        del m["a"]
    assert m == {"b": 2}
    assert m.setdefault("b", 5) == 2 and m.setdefault("c", 5) == 5
    assert m.pop("c") == 5 and m.pop("c", None) is None
    with pytest.raises(KeyError):
        m.pop("c")


def test_none_is_an_ordinary_value(make: Any) -> None:
    m = make()
    m["k"] = None
    assert "k" in m and m["k"] is None and m.get("k", "default") is None and len(m) == 1


def test_popitem_empties_the_map_then_raises(make: Any) -> None:
    m = make(a=1, b=2)
    assert sorted([m.popitem(), m.popitem()]) == [("a", 1), ("b", 2)]
    with pytest.raises(KeyError):
        m.popitem()


def test_update_and_clear(make: Any) -> None:
    m = make(a=1)
    m.update({"b": 2})
    m.update([("c", 3)], d=4)
    m.update(make(e=5))
    assert m == dict(a=1, b=2, c=3, d=4, e=5)
    m.clear()
    assert m == {} and len(m) == 0 and list(m) == []
    m["again"] = 1
    assert m == {"again": 1}


def test_views(make: Any) -> None:
    m = make(a=1, b=2, c=3)
    assert sorted(m) == ["a", "b", "c"]
    assert sorted(m.keys()) == ["a", "b", "c"] and sorted(m.values()) == [1, 2, 3]
    assert sorted(m.items()) == [("a", 1), ("b", 2), ("c", 3)]
    assert "a" in m.keys()  # noqa: SIM118  (the view itself is under test)
    assert 2 in m.values() and ("c", 3) in m.items() and ("c", 4) not in m.items()
    assert len(m.keys()) == len(m.values()) == len(m.items()) == 3
    assert m.keys() == {"a", "b", "c"}


def test_equality_repr_copy_and_pickle(make: Any) -> None:
    m = make(a=1)
    assert m == {"a": 1} and m == make(a=1)
    assert m != {"a": 2}
    assert m != [("a", 1)]

    class OtherMapping(Mapping[str, int]):
        def __getitem__(self, key: str) -> int:
            return {"a": 1}[key]

        def __iter__(self) -> Iterator[str]:
            return iter(["a"])

        def __len__(self) -> int:
            return 1

    assert m == OtherMapping()
    assert repr(m).startswith(f"{type(m).__name__}({{'a': 1}}")
    for duplicate in (m.copy(), copy.copy(m), pickle.loads(pickle.dumps(m))):
        assert type(duplicate) is type(m) and duplicate == m
        duplicate["b"] = 2
        assert "b" not in m


def test_unhashable_key_raises_typeerror_and_changes_nothing(make: Any) -> None:
    m = make(a=1)
    for attempt in (lambda: m.__setitem__([], 1), lambda: m.setdefault([], 1), lambda: m.get([])):
        with pytest.raises(TypeError):
            attempt()
    assert m == {"a": 1}


def test_key_whose_hash_or_eq_raises_leaves_the_map_unchanged_and_usable(make: Any) -> None:
    class Bad:
        def __init__(self, fail_hash: bool) -> None:
            self.fail_hash = fail_hash

        def __hash__(self) -> int:
            if self.fail_hash:
                raise ValueError("hash")
            return hash("a")  # collides with "a", so == is asked

        def __eq__(self, other: object) -> bool:
            raise ValueError("eq")

    m = make(a=1)
    for key in (Bad(True), Bad(False)):
        for attempt in (
            lambda: m.__setitem__(key, 2),
            lambda: m.__delitem__(key),
            lambda: m.setdefault(key, 2),
            lambda: m.get(key),
            lambda: m.pop(key, None),
        ):
            with pytest.raises(ValueError):
                attempt()
    assert m == {"a": 1}
    m["b"] = 2
    del m["a"]
    assert m == {"b": 2}
