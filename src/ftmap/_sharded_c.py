"""ShardedMap on the C core: ftmap._core.ShardedMapBase (csrc/shardedmap.c) plus the cold parts.

Everything that takes a shard lock is in C (the locks are PyMutexes, which only C can take):
every single-key read and write, compound operations, ``clear``, ``popitem`` and the per-shard
step of ``mset``/``update``. This subclass keeps, as the pure map (ftmap._sharded) writes
them: the constructor's checks, the RecursiveUpdateError messages, ``mset``/``update``'s
checking, placing and grouping, ``|``, ``|=``, iteration (each shard copied lock-free with one
``list(d.items())``), ``copy`` and pickling. Semantics, messages and guarantees are the pure
map's; the module docstring of ftmap._sharded and the README state them.

Imported only where the C core imports (ftmap._impl.C_MODULES).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from . import _impl
from ._base import ItemsBackedMap
from ._core import ShardedMapBase, ShardedMapHandleBase  # type: ignore[import-not-found]
from ._errors import RecursiveUpdateError, _recursive_update
from ._markers import DELETE, MISSING, marker_error
from ._sharded import _WITH_CALLBACK, MAX_SHARDS, _HandleWholeMap, _snapshot

__all__ = ["ShardedMap", "ShardedMapHandle"]

K = TypeVar("K")
V = TypeVar("V")


class ShardedMap(ShardedMapBase, ItemsBackedMap[K, V]):  # type: ignore[misc]
    """A map of ``shards`` dicts, each behind its own lock; every single-key operation atomic.

    The C implementation of ftmap.ShardedMap (see ftmap._sharded.ShardedMap for the
    reference and the full description): ``shards`` is a power of two (default 32);
    ``hasher(key) -> int`` picks a key's shard as ``hasher(key) & (shards - 1)``, by default
    FNV-1a over ``hash(key)`` (``ftmap.shard_of``). Reads take no lock; writes and compound
    operations take the key's shard lock (a PyMutex). Code that runs under a shard lock may
    read the map but not change it: RecursiveUpdateError, raised before any lock is taken.
    MISSING and DELETE are never stored.
    """

    __slots__ = ()

    def __init__(
        self,
        other: Mapping[K, V] | Iterable[tuple[K, V]] = (),
        /,
        shards: int = 32,
        *,
        hasher: Callable[[Any], int] | None = None,
        **kwargs: V,
    ) -> None:
        if isinstance(shards, bool) or not isinstance(shards, int):
            raise TypeError(f"shards must be an int, not {type(shards).__name__}")
        if shards < 1 or shards & (shards - 1) or shards > MAX_SHARDS:
            raise ValueError(f"shards must be a power of two from 1 to {MAX_SHARDS}, not {shards}")
        self._setup(shards, hasher)
        if other or kwargs:
            self.update(other, **kwargs)

    def _recursive(self, outer: str, op: str) -> RecursiveUpdateError:
        """The error for ``op`` called by a thread whose ``outer`` holds one of this map's shard
        locks (called by the C code, a cold path; the same text as the pure map's)."""
        name = type(self).__name__
        if outer in _WITH_CALLBACK:
            return RecursiveUpdateError(name, op, outer)
        return _recursive_update(
            f"recursive update: {op} on a {name} from code that runs while its {outer} holds "
            "a shard lock (a key's __hash__ or __eq__, or a __del__ or finalizer); "
            "that code may read the map, but not change it",
            op,
            outer,
        )

    # -- many keys -------------------------------------------------------------------------

    def mset(self, mapping: Mapping[K, V]) -> None:
        """Store every item: atomic per key (shard by shard, one lock at a time), not as a whole.

        In this order: every value is checked (a marker raises ValueError), then
        every key is placed (hashed), then the items are stored shard by shard, in
        the order in which each shard first appears, each shard's items in order.
        So a marker value, or a key whose ``__hash__`` raises, changes nothing; a
        key whose ``__eq__`` raises while it is stored stops the batch there, the
        items stored before it staying, as in ``dict.update``.
        """
        self._store_all("mset", mapping.items())

    def update(self, other: Any = (), /, **kwargs: V) -> None:
        """As dict.update; atomic per key, shard by shard, like mset."""
        items = dict(other.items()) if isinstance(other, Mapping) else dict(other)
        items.update(kwargs)
        self._store_all("update", items.items())

    def __ior__(self, other: Any) -> ShardedMap[K, V]:
        self.update(other)
        return self

    def __or__(self, other: Any) -> ShardedMap[K, V]:
        if not isinstance(other, Mapping):
            return NotImplemented
        merged = self.copy()
        merged.update(other)
        return merged

    def __ror__(self, other: Any) -> ShardedMap[K, V]:
        if not isinstance(other, Mapping):
            return NotImplemented
        merged: ShardedMap[K, V] = type(self)(other, shards=self.shards, hasher=self._hasher)
        merged.update(self)
        return merged

    def _store_all(self, op: str, items: Iterable[tuple[Any, Any]]) -> None:
        self._check_not_holding(op)
        pairs = list(items)
        for _, value in pairs:
            if value is MISSING or value is DELETE:
                raise marker_error(value, op, type(self).__name__)
        by_shard: dict[int, list[tuple[Any, Any]]] = {}
        for key, value in pairs:
            by_shard.setdefault(self.shard_index(key), []).append((key, value))
        for index, group in by_shard.items():
            self._update_shard(op, index, group)  # locks, marks, updates, unlocks: one C call

    def handle(self) -> ShardedMapHandle[K, V]:
        """A per-thread handle on this map (issue 12): the same single-key API, faster in the
        thread that made it. See ShardedMapHandle."""
        return ShardedMapHandle(self)

    # -- reading many keys: no lock, shard by shard ------------------------------------------

    def _items(self) -> Iterator[tuple[Any, Any]]:
        for data in self._dicts:
            yield from _snapshot(data)

    def _repr_options(self) -> str:
        return f", shards={self.shards}"

    def copy(self) -> ShardedMap[K, V]:
        duplicate: ShardedMap[K, V] = type(self)(shards=self.shards, hasher=self._hasher)
        duplicate.mset(dict(self._items()))
        return duplicate

    __copy__ = copy

    def __reduce__(self) -> tuple[object, ...]:
        kwargs = None if self._hasher is None else {"hasher": self._hasher}
        return _impl.reduce(self, "ShardedMap", (dict(self._items()), self.shards), kwargs)


class ShardedMapHandle(ShardedMapHandleBase, _HandleWholeMap[K, V]):  # type: ignore[misc]
    """A per-thread handle on a C ShardedMap (``m.handle()``, issue 12).

    The C implementation of ftmap.ShardedMapHandle (see ftmap._sharded.ShardedMapHandle for the
    full description): the map's whole single-key API with the map's exact semantics, run by
    the map's own C code (ftmap._core.ShardedMapHandleBase, csrc/shardedmap.c); ``len``,
    iteration, the views, ``==``, ``repr`` and the whole-map operations go to the map; ``h.map``
    is the map. Keep one per thread: a handle is that thread's object, so calling it touches no
    reference count shared with other threads (calling the shared map writes the map's count).
    Any thread may use it, with every guarantee (it has no per-thread state to protect); it is
    only slower there. ``copy()``/``copy.copy`` copy the map; it cannot be pickled.
    """

    __slots__ = ()
