"""What SyncMap and ShardedMap share: the read-only protocol built on one items iterator."""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, KeysView, Mapping, MutableMapping, ValuesView
from typing import Any, TypeVar

__all__ = ["ItemsBackedMap", "same_value"]

K = TypeVar("K")
V = TypeVar("V")


def same_value(a: object, b: object) -> bool:
    """How ftmap compares values (compare_and_swap, replace, remove ...): identity first, then ==."""
    return a is b or bool(a == b)


class ItemsBackedMap(MutableMapping[K, V]):
    """Iteration, the views, ``==`` and ``repr`` of a concurrent map, from its ``_items()``.

    ``_items()`` yields each key present with its value, each key once, and
    never raises because of concurrent writes; what else it promises (a
    snapshot, or shard by shard) is the map's to document.
    """

    __slots__ = ()

    def _items(self) -> Iterator[tuple[K, V]]:
        raise NotImplementedError

    def _repr_options(self) -> str:
        """Constructor options shown in repr after the content, e.g. ", shards=32"."""
        return ""

    def __iter__(self) -> Iterator[K]:
        return (key for key, _ in self._items())

    def keys(self) -> KeysView[K]:
        return KeysView(self)

    def values(self) -> ValuesView[V]:
        return _ValuesView(self)

    def items(self) -> ItemsView[K, V]:
        return _ItemsView(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return dict(self._items()) == dict(other.items())

    __hash__ = None  # type: ignore[assignment]  # mutable, like dict

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self._items())!r}{self._repr_options()})"


class _ValuesView(ValuesView[V]):
    __slots__ = ()
    _mapping: ItemsBackedMap[Any, V]

    def __iter__(self) -> Iterator[V]:
        return (value for _, value in self._mapping._items())


class _ItemsView(ItemsView[K, V]):
    __slots__ = ()
    _mapping: ItemsBackedMap[K, V]

    def __iter__(self) -> Iterator[tuple[K, V]]:
        return self._mapping._items()
