"""What the maps share: the read-only protocol built on one items iterator (SyncMap, ShardedMap), dict_get."""

from __future__ import annotations

import sys
import sysconfig
from collections.abc import ItemsView, Iterator, KeysView, Mapping, MutableMapping, ValuesView
from typing import Any, Protocol, Self, TypeVar, cast, overload

__all__ = ["DICT_GET_PARKS", "HandleOperators", "ItemsBackedMap", "dict_get", "is_dict_miss", "same_value"]

K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")


# On free-threaded 3.13, dict.get runs under the dict's critical section. Its lock-free lookup
# must take a reference to the stored key (when the key looked up is an equal, not the same,
# object) and to the value; when either object's reference count was never shared, which is
# typical of objects another thread created, the lookup retries under a second critical section
# on the same dict, and that nested acquire parks the thread before it proceeds: 1-12 us a call
# instead of 0.1 (benchmarks/dict_get_cross_thread.py: str and int keys, plain-object values, the
# dict built by one thread and read by another). d[key] and `key in d` take no outer critical
# section: their retry is one uncontended lock. 3.14 dropped the critical section from dict.get
# (python/cpython#129336), and a GIL build has none, so there dict.get itself is used.
DICT_GET_PARKS: bool = bool(sysconfig.get_config_var("Py_GIL_DISABLED")) and sys.version_info < (3, 14)


def _get_by_subscript(d: dict[Any, Any], key: Any, default: Any = None, /) -> Any:
    """dict.get(d, key, default) by a subscript: no critical section on a hit.

    Exactly dict.get's answer and exceptions, with key's __hash__ (and any __eq__) run as often
    as dict.get runs them: a KeyError raised by dict's own miss ends its traceback in this frame
    and carries the key itself, so it is told apart from a KeyError raised by the key's Python
    __hash__ or __eq__ (whose frame follows this one), which propagates as dict.get would let it.
    A miss costs the raised KeyError (some 0.3 us on 3.13t, against 0.1 for dict.get's).
    """
    try:
        return d[key]
    except KeyError as error:
        if is_dict_miss(error, key):
            return default
        raise


def is_dict_miss(error: KeyError, key: object) -> bool:
    """Whether error, caught right around a C-level ``d[key]`` (or a bound ``d.__getitem__``
    call), is dict's own miss rather than a KeyError raised by key's own __hash__ or __eq__.

    dict's miss is raised in C: the traceback ends in the catching frame (no frame follows it)
    and the exception carries key itself. A Python hook's KeyError has the hook's frame after
    the catching one. Call it from the except clause; never keep the traceback in a local of
    the catching frame (it holds that frame: a cycle that would keep the dict and key alive
    until the next garbage collection).
    """
    traceback = error.__traceback__
    return traceback is not None and traceback.tb_next is None and bool(error.args) and error.args[0] is key


class _DictGet(Protocol):
    @overload
    def __call__(self, d: dict[Any, V], key: Any, /) -> V | None: ...
    @overload
    def __call__(self, d: dict[Any, V], key: Any, default: D, /) -> V | D: ...


# dict_get(d, key, default): d.get(key, default) on every build, without the park above.
dict_get = cast(_DictGet, _get_by_subscript if DICT_GET_PARKS else dict.get)


def same_value(a: object, b: object) -> bool:
    """How ftmap compares values (compare_and_swap, replace, remove ...): identity first, then ==."""
    return a is b or bool(a == b)


class HandleOperators:
    """A per-thread handle's ``|``, ``|=`` and reflected ``|``: its map's (UnsafeMap and
    ShardedMap handles, pure and C). ``h |= x`` updates the map and leaves ``h`` the handle."""

    __slots__ = ()

    map: Any

    def __ior__(self, other: Any) -> Self:
        self.map.update(other)
        return self

    def __or__(self, other: Any) -> Any:
        return self.map | other

    def __ror__(self, other: Any) -> Any:
        return other | self.map


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
