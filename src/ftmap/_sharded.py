"""ShardedMap: per-shard locks, atomic compound operations, no deadlocks.

N dicts, each with its own lock; a key's shard is picked by hashing. Reads
of one key take no lock (a dict read is atomic on free-threaded CPython);
every write takes its shard's lock, so compound operations (compute, merge,
upsert ...) are atomic against every other write to that shard.

Re-entrancy, the rule the C core copies: while a thread holds one of a map's
shard locks, any method of that map that may change it raises
RecursiveUpdateError on that thread, before it takes any lock. That covers a
compound operation's callback, as Java's ConcurrentHashMap raises
IllegalStateException("Recursive update"), and also every other piece of
Python code that runs under a shard lock: a key's ``__hash__`` or ``__eq__``
called by the dict operation, a ``__del__`` or a finalizer run there. So no
thread ever waits for a shard lock of a map while it holds one of the same
map's, and the map's own locks cannot deadlock. Everything that only reads
(``m[k]``, ``get``, ``in``, ``len``, iteration, ``repr``, ``==``, ``copy``,
pickling, and ``compute_if_absent`` of a present key) takes no lock and works
anywhere, callbacks included.

Iteration takes no lock: each shard is copied at one moment with one C-level
dict operation (``list(d.items())``, which runs no Python code and, on the
free-threaded build, holds the dict's own lock), shard after shard.

Markers: MISSING and DELETE are never values. Storing one (``[]=``,
``setdefault``, ``set_if_absent``, ``replace``, ``merge``'s value, ``mset``,
``update``, the constructor) raises ValueError and changes nothing. A
callback that returns one (compute, compute_if_present, merge, upsert,
compute_if_absent's factory) leaves the key absent, and the operation
returns MISSING.

Asynchronous exceptions (KeyboardInterrupt, ``PyThreadState_SetAsyncExc``),
on 3.13 and 3.14 alike: after one is delivered anywhere inside an
operation, no shard lock is held and the thread is not marked as holding
one, every write that returned before is in the map, and each shard is a
consistent dict. Single-key operations, compound ones included, are
all-or-nothing (a callback may have run without its result being stored);
``mset``, ``update``, ``clear`` and the constructor are atomic per key, so an
interrupted one may have done part of its keys. The shard locks are RLocks,
acquired inside the ``try`` whose ``finally`` releases them: an RLock's
release checks its owner, so the ``finally`` needs no call before it to know
whether the acquire happened (3.14 delivers an exception between ``with``'s
``__enter__`` and its block, which would leak a lock taken by ``with``).
The ``finally`` removes the thread's mark with a subscript delete, which is
no delivery point, before that release. One exception per operation: a
second one delivered while the first unwinds is outside any pure-Python
guarantee.

The default placement is FNV, the same in both implementations (ftmap._fnv.shard_of,
csrc/ftmap_fnv.h): FNV-1a 64 over the 8 bytes of hash(key), MurmurHash3's fmix64, xor-folded
to 32 bits, the top log2(shards) bits. So ``shard_index`` agrees between the C and the pure
map, and a pickle moves between them with every key on the same shard. In C it costs a few
nanoseconds; in pure Python, where an operation on a 64-bit int costs 30-40 ns on 3.13t, some
2.4 us, so the pure map caches it per map, by hash(key) (``_places``, bounded by the
larger of ``_PLACES_MIN`` entries and the map's size): a cached key costs one dict read,
about what the previous default (a tuple hash and Fibonacci hashing, 216 ns) cost. The FNV
functions stay available as hashers: fnv1_32 places string keys as Go's orcaman does.
"""

from __future__ import annotations

import threading
from collections.abc import (
    Callable,
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    MutableMapping,
    ValuesView,
)
from typing import Any, TypeVar, overload

from . import _impl
from ._base import HandleOperators, ItemsBackedMap, dict_get, is_dict_miss, same_value
from ._errors import RecursiveUpdateError, _recursive_update
from ._fnv import MASK_64 as _MASK_64
from ._fnv import OFFSET_64 as _OFFSET_64
from ._fnv import PRIME_64 as _PRIME_64
from ._markers import DELETE, MISSING, marker_error

__all__ = ["ShardedMap", "ShardedMapHandle"]

K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")

MAX_SHARDS = 1 << 20
# A map's placement cache (_places) starts again when it holds this many entries and at least
# as many as the map has keys: every key of the map stays cached, and keys looked up but absent
# cannot grow it past the map's own size (about 70-100 bytes an entry: a hash int and a slot).
_PLACES_MIN = 1 << 13
_get_ident = threading.get_ident
# The operations whose callback runs under the shard lock: a recursive update from
# there is reported as coming from the callback.
_WITH_CALLBACK = frozenset(
    {"compute", "compute_if_absent", "compute_if_present", "merge", "upsert", "remove_if"}
)


class ShardedMap(ItemsBackedMap[K, V]):
    """A map of ``shards`` dicts, each behind its own lock; every single-key operation atomic.

    ``shards`` is a power of two (default 32). ``hasher(key) -> int`` picks a
    key's shard as ``hasher(key) & (shards - 1)``; by default FNV-1a
    over ``hash(key)`` (``ftmap.shard_of``). Reads take no lock; writes and compound
    operations take the key's shard lock. Code that runs under a shard lock
    (callbacks, a key's ``__hash__``/``__eq__``, a ``__del__``) may read the
    map but not change it: RecursiveUpdateError, raised before any lock is
    taken, so it never deadlocks. A callback that raises leaves the key
    unchanged and the shard unlocked. MISSING and DELETE are never stored:
    passing one as a value raises ValueError; a callback returning one leaves
    the key absent.

    Iteration, ``keys()``, ``values()``, ``items()``, ``==``, ``repr`` and
    ``copy`` take no lock: they see each shard as it was at one moment (one
    atomic dict copy), shard after shard, never raising on concurrent writes
    and never yielding a key twice, but not one snapshot across shards.
    ``len()`` adds the shards' sizes one by one: exact when no other thread
    writes meanwhile.
    """

    __slots__ = ("__weakref__", "_bits", "_dicts", "_hasher", "_holding", "_locks", "_mask", "_places")

    # _dicts[i], _locks[i]: shard i's content and its lock (an RLock, only ever held
    #   once: see _holding). Reads use _dicts[i] with no lock; every change to
    #   _dicts[i] happens under _locks[i]. Fixed at construction: the lists never change.
    # _holding: thread ident -> that thread's cell, a one-item list: cell[0] is the
    #   operation during which the thread holds (or is about to take, or has just
    #   released) one of this map's shard locks, else None. Only the thread with that
    #   ident reads or writes its cell's item, with subscript operations (no delivery
    #   point): set before the acquire, reset to None first thing in the finally, so
    #   an asynchronous exception never leaves it set. A thread whose cell is set and
    #   that calls a method that may change the map is a recursive update. The dict
    #   only grows, by setdefault, one cell per ident: idents of ended threads are
    #   reused by new ones, so it holds about as many cells as threads ever ran at
    #   once. Per-thread cells, not one shared dict written on every operation:
    #   threads writing one dict contend for it (measured: 2 threads' writes 35% slower).
    # _places: hash(key) -> shard index under the default placement (shard_of(key, _bits)),
    #   a cache: the FNV placement costs some 2.4 us in pure Python, a cache hit one dict
    #   read. Any thread reads and writes it with single dict operations (each atomic); it
    #   is cleared when it holds _PLACES_MIN entries and at least len(self). Every entry
    #   is correct whenever it is seen, so races between those operations only cost
    #   recomputation. Assigned last in
    #   __init__: a map that has it has every field.
    # _hasher, _mask, _bits: fixed at construction.

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
        self._dicts: list[dict[Any, Any]] = [{} for _ in range(shards)]
        self._locks = [threading.RLock() for _ in range(shards)]
        self._mask = shards - 1
        self._bits = shards.bit_length() - 1
        self._hasher = hasher
        self._holding: dict[int, list[str | None]] = {}
        self._places: dict[int, int] = {}
        if other or kwargs:
            self.update(other, **kwargs)

    # -- placement ---------------------------------------------------------------

    # The hot methods (get, [], in, []=, merge, compute) inline shard_index and the
    # lock protocol: on 3.13t a Python call costs as much as a dict operation.
    # _places is read by subscript, never .get(): on 3.13t dict.get takes the dict's
    # critical section, and a lookup whose key was created by another thread (a fresh
    # hash() int always is, for every thread but the one that cached it) then falls back
    # to a second, nested critical section on the same dict, which parks the thread:
    # measured 9.6 us a lookup instead of 0.07 us (3.14 dropped the critical section from
    # dict.get). hash(key) is taken before the try, so a __hash__ raising KeyError is the
    # caller's error, not a cache miss.

    def shard_index(self, key: K) -> int:
        """The shard that holds (or would hold) key."""
        if self._hasher is None:
            hash_ = hash(key)
            try:
                return self._places[hash_]
            except KeyError:
                return self._place(hash_)
        return self._hasher(key) & self._mask

    def _place(self, hash_: int) -> int:
        """The default placement of a key whose hash() is hash_, computed and cached."""
        index = _shard_of_hash(hash_, self._bits)
        places = self._places
        if len(places) >= _PLACES_MIN and len(places) >= len(self):
            places.clear()
        places[hash_] = index
        return index

    def shard_sizes(self) -> list[int]:
        """Each shard's number of keys, shard by shard."""
        return [len(d) for d in self._dicts]

    @property
    def shards(self) -> int:
        return self._mask + 1

    # -- locking -------------------------------------------------------------------
    # Every locked section has this shape (written out in the hot methods):
    #
    #     cell = self._holding.get(_get_ident()) or self._new_cell()
    #     if cell[0] is not None: raise self._recursive(cell[0], op)
    #     ...                              # placement: may run user code, nothing held
    #     cell[0] = op                     # a subscript store: no delivery point
    #     try:
    #         lock.acquire()               # inside the try: an exception delivered as
    #         ...                          #   it returns still reaches the finally
    #     finally:
    #         cell[0] = None               # no call before the release
    #         try:
    #             lock.release()           # an RLock checks its owner: RuntimeError if
    #         except RuntimeError:         #   the acquire never happened (a
    #             pass                     #   KeyboardInterrupt while blocked in it)

    def _new_cell(self) -> list[str | None]:
        """This thread's cell, made on its first write (the fast path is _holding.get)."""
        return self._holding.setdefault(_get_ident(), [None])

    def _recursive(self, outer: str, op: str) -> RecursiveUpdateError:
        """The error for ``op`` called by a thread whose ``outer`` holds one of this map's shard locks."""
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

    def _write(self, op: str, key: Any, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(shard dict, key, *args) under key's shard lock: the less hot single-key writes."""
        cell = self._holding.get(_get_ident()) or self._new_cell()
        if cell[0] is not None:
            raise self._recursive(cell[0], op)
        if self._hasher is None:
            hash_ = hash(key)
            try:
                index = self._places[hash_]
            except KeyError:
                index = self._place(hash_)
        else:
            index = self._hasher(key) & self._mask
        lock = self._locks[index]
        cell[0] = op
        try:
            lock.acquire()
            return fn(self._dicts[index], key, *args)
        finally:
            cell[0] = None
            try:  # noqa: SIM105  (contextlib.suppress would call before the release)
                lock.release()
            except RuntimeError:  # not held: the acquire never happened
                pass

    # -- single-key reads: no lock ----------------------------------------------------

    def __getitem__(self, key: K) -> V:
        if self._hasher is None:
            hash_ = hash(key)
            try:
                index = self._places[hash_]
            except KeyError:
                index = self._place(hash_)
        else:
            index = self._hasher(key) & self._mask
        return self._dicts[index][key]  # type: ignore[no-any-return]

    @overload
    def get(self, key: K, /) -> V | None: ...
    @overload
    def get(self, key: K, default: V | D, /) -> V | D: ...

    def get(self, key: K, default: object = None, /) -> object:
        if self._hasher is None:
            hash_ = hash(key)
            try:
                index = self._places[hash_]
            except KeyError:
                index = self._place(hash_)
        else:
            index = self._hasher(key) & self._mask
        return dict_get(self._dicts[index], key, default)

    def __contains__(self, key: object) -> bool:
        if self._hasher is None:
            hash_ = hash(key)
            try:
                index = self._places[hash_]
            except KeyError:
                index = self._place(hash_)
        else:
            index = self._hasher(key) & self._mask
        return key in self._dicts[index]

    # -- single-key writes: the shard lock ----------------------------------------------

    def __setitem__(self, key: K, value: V) -> None:
        if value is MISSING or value is DELETE:
            raise marker_error(value, "set", type(self).__name__)
        cell = self._holding.get(_get_ident()) or self._new_cell()
        if cell[0] is not None:
            raise self._recursive(cell[0], "set")
        if self._hasher is None:
            hash_ = hash(key)
            try:
                index = self._places[hash_]
            except KeyError:
                index = self._place(hash_)
        else:
            index = self._hasher(key) & self._mask
        lock = self._locks[index]
        cell[0] = "set"
        try:
            lock.acquire()
            self._dicts[index][key] = value
        finally:
            cell[0] = None
            try:  # noqa: SIM105  (contextlib.suppress would call before the release)
                lock.release()
            except RuntimeError:  # not held: the acquire never happened
                pass

    def __delitem__(self, key: K) -> None:
        # _write inlined, as in the other hot methods.
        cell = self._holding.get(_get_ident()) or self._new_cell()
        if cell[0] is not None:
            raise self._recursive(cell[0], "delete")
        if self._hasher is None:
            hash_ = hash(key)
            try:
                index = self._places[hash_]
            except KeyError:
                index = self._place(hash_)
        else:
            index = self._hasher(key) & self._mask
        lock = self._locks[index]
        cell[0] = "delete"
        try:
            lock.acquire()
            del self._dicts[index][key]
        finally:
            cell[0] = None
            try:  # noqa: SIM105  (contextlib.suppress would call before the release)
                lock.release()
            except RuntimeError:  # not held: the acquire never happened
                pass

    @overload
    def pop(self, key: K, /) -> V: ...
    @overload
    def pop(self, key: K, default: V | D, /) -> V | D: ...

    def pop(self, key: K, *default: object) -> object:
        cell = self._holding.get(_get_ident()) or self._new_cell()
        if cell[0] is not None:
            raise self._recursive(cell[0], "pop")
        if self._hasher is None:
            hash_ = hash(key)
            try:
                index = self._places[hash_]
            except KeyError:
                index = self._place(hash_)
        else:
            index = self._hasher(key) & self._mask
        lock = self._locks[index]
        cell[0] = "pop"
        try:
            lock.acquire()
            return self._dicts[index].pop(key, *default)
        finally:
            cell[0] = None
            try:  # noqa: SIM105  (contextlib.suppress would call before the release)
                lock.release()
            except RuntimeError:  # not held: the acquire never happened
                pass

    def setdefault(self, key: K, default: V = None, /) -> V:  # type: ignore[assignment]
        """Atomic: the existing value, or default stored and returned."""
        if default is MISSING or default is DELETE:
            raise marker_error(default, "setdefault", type(self).__name__)
        cell = self._holding.get(_get_ident()) or self._new_cell()
        if cell[0] is not None:
            raise self._recursive(cell[0], "setdefault")
        if self._hasher is None:
            hash_ = hash(key)
            try:
                index = self._places[hash_]
            except KeyError:
                index = self._place(hash_)
        else:
            index = self._hasher(key) & self._mask
        lock = self._locks[index]
        cell[0] = "setdefault"
        try:
            lock.acquire()
            return self._dicts[index].setdefault(key, default)  # type: ignore[no-any-return]
        finally:
            cell[0] = None
            try:  # noqa: SIM105  (contextlib.suppress would call before the release)
                lock.release()
            except RuntimeError:  # not held: the acquire never happened
                pass

    def set_if_absent(self, key: K, value: V) -> bool:
        """Store value if key is absent; True if it was stored (orcaman's SetIfAbsent)."""
        if value is MISSING or value is DELETE:
            raise marker_error(value, "set_if_absent", type(self).__name__)
        return self._write("set_if_absent", key, _set_if_absent, value)  # type: ignore[no-any-return]

    def replace(self, key: K, old: V, new: V) -> bool:
        """Set new if key's value is old (identity, then ==); True if replaced."""
        if new is MISSING or new is DELETE:
            raise marker_error(new, "replace", type(self).__name__)
        return self._write("replace", key, _replace, old, new)  # type: ignore[no-any-return]

    def remove(self, key: K, old: V) -> bool:
        """Delete key if its value is old (identity, then ==); True if removed."""
        return self._write("remove", key, _remove, old)  # type: ignore[no-any-return]

    # -- compound operations with callbacks ---------------------------------------------

    def compute(self, key: K, fn: Callable[[Any], Any]) -> Any:
        """Atomically set key to fn(value or MISSING); DELETE or MISSING leaves it absent.

        Returns the new value, or MISSING if the key ends absent.
        """
        cell = self._holding.get(_get_ident()) or self._new_cell()
        if cell[0] is not None:
            raise self._recursive(cell[0], "compute")
        if self._hasher is None:
            hash_ = hash(key)
            try:
                index = self._places[hash_]
            except KeyError:
                index = self._place(hash_)
        else:
            index = self._hasher(key) & self._mask
        lock = self._locks[index]
        cell[0] = "compute"
        try:
            lock.acquire()
            data = self._dicts[index]
            old = dict_get(data, key, MISSING)
            return _settle(data, key, old, fn(old))
        finally:
            cell[0] = None
            try:  # noqa: SIM105  (contextlib.suppress would call before the release)
                lock.release()
            except RuntimeError:  # not held: the acquire never happened
                pass

    def compute_if_absent(self, key: K, factory: Callable[[K], V]) -> V:
        """key's value; if absent, store factory(key) first and return it.

        factory runs at most once per absent key, under contention too. If it
        returns MISSING or DELETE nothing is stored and MISSING is returned. A
        present key is read without a lock (so this works inside callbacks).
        """
        value = self.get(key, MISSING)
        if value is not MISSING:
            return value
        return self._write("compute_if_absent", key, _compute_if_absent, factory)  # type: ignore[no-any-return]

    def compute_if_present(self, key: K, fn: Callable[[V], Any]) -> Any:
        """If key is present, set it to fn(value) (DELETE or MISSING removes it); the new value or MISSING."""
        return self._write("compute_if_present", key, _compute_if_present, fn)

    def merge(self, key: K, value: V, fn: Callable[[V, V], Any]) -> Any:
        """Store value if key is absent, else fn(old, value) (DELETE or MISSING removes it); the result."""
        if value is MISSING or value is DELETE:
            raise marker_error(value, "merge", type(self).__name__)
        cell = self._holding.get(_get_ident()) or self._new_cell()
        if cell[0] is not None:
            raise self._recursive(cell[0], "merge")
        if self._hasher is None:
            hash_ = hash(key)
            try:
                index = self._places[hash_]
            except KeyError:
                index = self._place(hash_)
        else:
            index = self._hasher(key) & self._mask
        lock = self._locks[index]
        cell[0] = "merge"
        try:
            lock.acquire()
            data = self._dicts[index]
            old = dict_get(data, key, MISSING)
            if old is MISSING:
                data[key] = value
                return value
            return _settle(data, key, old, fn(old, value))
        finally:
            cell[0] = None
            try:  # noqa: SIM105  (contextlib.suppress would call before the release)
                lock.release()
            except RuntimeError:  # not held: the acquire never happened
                pass

    def upsert(self, key: K, value: V, cb: Callable[[bool, V | None, V], V]) -> Any:
        """Store cb(exists, old or None, value) and return it (orcaman's Upsert).

        cb returning MISSING or DELETE leaves the key absent, and MISSING is returned.
        """
        return self._write("upsert", key, _upsert, value, cb)

    def remove_if(self, key: K, predicate: Callable[[K, V | None, bool], bool]) -> bool:
        """Delete key if predicate(key, value or None, exists) is true; True if removed.

        orcaman's RemoveCb: the predicate is called even when the key is absent.
        """
        return self._write("remove_if", key, _remove_if, predicate)  # type: ignore[no-any-return]

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
        # items(), not dict(other): another concurrent map may lose a key between
        # listing its keys and looking them up.
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
        cell = self._holding.get(_get_ident()) or self._new_cell()
        if cell[0] is not None:
            raise self._recursive(cell[0], op)
        pairs = list(items)
        for _, value in pairs:
            if value is MISSING or value is DELETE:
                raise marker_error(value, op, type(self).__name__)
        by_shard: dict[int, list[tuple[Any, Any]]] = {}
        for key, value in pairs:
            by_shard.setdefault(self.shard_index(key), []).append((key, value))
        locks, dicts = self._locks, self._dicts
        held = None  # the lock this thread may hold: released again in the finally
        cell[0] = op
        try:
            for index, group in by_shard.items():
                held = locks[index]
                held.acquire()
                dicts[index].update(group)
                held.release()
                held = None
        finally:
            cell[0] = None
            if held is not None:
                try:  # noqa: SIM105  (contextlib.suppress would call before the release)
                    held.release()
                except RuntimeError:  # not held: the acquire never happened
                    pass

    def clear(self) -> None:
        """Empty every shard, one after another."""
        cell = self._holding.get(_get_ident()) or self._new_cell()
        if cell[0] is not None:
            raise self._recursive(cell[0], "clear")
        held = None  # the lock this thread may hold: released again in the finally
        cell[0] = "clear"
        try:
            # The loop body must not end with an `if`: on 3.13 the back-edge after one is
            # outside the exception table (python/cpython#130279), and an asynchronous exception
            # delivered there would skip the finally (this thread's cell would stay "clear").
            # tests/unit/test_async_audit.py checks the bytecode.
            for data, lock in zip(self._dicts, self._locks, strict=True):
                if not data:  # an empty shard needs no lock: nothing to remove
                    continue
                held = lock
                lock.acquire()
                data.clear()
                lock.release()
                held = None
        finally:
            cell[0] = None
            if held is not None:
                try:  # noqa: SIM105  (contextlib.suppress would call before the release)
                    held.release()
                except RuntimeError:  # not held: the acquire never happened
                    pass

    def popitem(self) -> tuple[K, V]:
        """Remove and return some (key, value); KeyError if every shard is empty."""
        cell = self._holding.get(_get_ident()) or self._new_cell()
        if cell[0] is not None:
            raise self._recursive(cell[0], "popitem")
        held = None  # the lock this thread may hold: released again in the finally
        cell[0] = "popitem"
        try:
            for data, lock in zip(self._dicts, self._locks, strict=True):  # no `if` last: see clear
                if not data:  # looked at without the lock, then again under it
                    continue
                held = lock
                lock.acquire()
                if data:
                    return data.popitem()
                lock.release()
                held = None
        finally:
            cell[0] = None
            if held is not None:
                try:  # noqa: SIM105  (contextlib.suppress would call before the release)
                    held.release()
                except RuntimeError:  # not held: the acquire never happened
                    pass
        raise KeyError("popitem(): ShardedMap is empty")

    def handle(self) -> ShardedMapHandle[K, V]:
        """A per-thread handle on this map (issue 12): the same single-key API, faster in the
        thread that made it. See ShardedMapHandle."""
        return ShardedMapHandle(self)

    # -- reading many keys: no lock, shard by shard ------------------------------------------

    def _items(self) -> Iterator[tuple[Any, Any]]:
        for data in self._dicts:
            yield from _snapshot(data)

    def __len__(self) -> int:
        return sum(map(len, self._dicts))

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

    def _debug_state(self) -> dict[str, Any]:
        """For the tests: shards, the threads marked as holding a shard lock (ident -> operation)
        and the shards whose lock this thread holds. AttributeError before __init__ finished."""
        places = self._places  # assigned last: a map without it is not set up
        del places
        return {
            "shards": len(self._dicts),
            "marked": {ident: cell[0] for ident, cell in self._holding.items() if cell[0] is not None},
            "locked": [i for i, lock in enumerate(self._locks) if lock._is_owned()],  # type: ignore[attr-defined]
        }


class _HandleWholeMap(HandleOperators, MutableMapping[K, V]):
    """The parts of a ShardedMap handle that go to its map: whole-map operations, iteration,
    the views, ``==``, ``repr``. Shared by the pure handle and the C one (ftmap._sharded_c).
    Subclasses provide ``map`` and the single-key API."""

    __slots__ = ()
    map: Any

    def __len__(self) -> int:
        return len(self.map)

    def __iter__(self) -> Iterator[K]:
        return iter(self.map)

    def keys(self) -> KeysView[K]:
        return self.map.keys()  # type: ignore[no-any-return]

    def values(self) -> ValuesView[V]:
        return self.map.values()  # type: ignore[no-any-return]

    def items(self) -> ItemsView[K, V]:
        return self.map.items()  # type: ignore[no-any-return]

    def __eq__(self, other: object) -> bool:
        return self.map == (other.map if isinstance(other, _HandleWholeMap) else other)  # type: ignore[no-any-return]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.map!r})"

    def mset(self, mapping: Mapping[K, V]) -> None:
        """The map's mset."""
        self.map.mset(mapping)

    def update(self, other: Any = (), /, **kwargs: V) -> None:
        """The map's update."""
        self.map.update(other, **kwargs)

    def clear(self) -> None:
        """The map's clear."""
        self.map.clear()

    def popitem(self) -> tuple[K, V]:
        """The map's popitem."""
        return self.map.popitem()  # type: ignore[no-any-return]

    def copy(self) -> Any:
        """The map's copy: a new map (not a handle)."""
        return self.map.copy()

    def shard_index(self, key: K) -> int:
        """The map's shard_index."""
        return self.map.shard_index(key)  # type: ignore[no-any-return]

    def shard_sizes(self) -> list[int]:
        """The map's shard_sizes."""
        return self.map.shard_sizes()  # type: ignore[no-any-return]

    @property
    def shards(self) -> int:
        return self.map.shards  # type: ignore[no-any-return]

    def __reduce__(self) -> Any:
        raise TypeError(
            f"a {type(self).__name__} cannot be pickled: it belongs to a thread of this process; "
            "pickle its map (handle.map) and make a handle from the copy"
        )

    __copy__ = copy  # copy.copy(handle) is a copy of the map, as handle.copy()


class ShardedMapHandle(_HandleWholeMap[K, V]):
    """A per-thread handle on a ShardedMap (``m.handle()``, issue 12): the map's whole
    single-key API (``[]``, ``get``, ``in``, ``[]=``, ``del``, ``pop``, ``setdefault``,
    ``set_if_absent``, ``replace``, ``remove``, ``compute``, ``compute_if_absent``,
    ``compute_if_present``, ``merge``, ``upsert``, ``remove_if``) with the map's exact
    semantics: the same results, exceptions and messages, re-entrancy rules (a callback may
    read the map or the handle, not write either: RecursiveUpdateError) and markers. Writes
    through a handle and through the map, or through other handles, exclude each other per
    shard exactly as the map's own writes do: they take the same shard locks and set the same
    per-thread marks. ``len``, iteration, the views, ``==``, ``repr`` and the whole-map
    operations (mset, update, clear, popitem, copy, shard_sizes ...) go to the map;
    ``h.map`` is the map. ``copy()`` and ``copy.copy(h)`` copy the map (a new map); a handle
    cannot be pickled or deep-copied (pickle the map).

    Keep one per thread: it is fast only in the thread that made it (it holds that thread's
    bound methods of the shard dicts and locks, its re-entrancy mark and its own placement
    cache, so its operations touch no reference count or dict shared with other threads but
    the shard's own). Any other thread may use it too, with every guarantee (its operations
    then go the map's way: one ``get_ident()`` comparison decides).
    """

    __slots__ = (
        "_acquire",
        "_bits",
        "_cell",
        "_contains",
        "_dicts",
        "_getitem",
        "_hasher",
        "_ident",
        "_mask",
        "_name",
        "_places",
        "_release",
        "map",
    )

    # All fields are fixed at construction and made by the constructing thread (the "owner"):
    # map: the map (a strong reference). _ident: the owner's get_ident(). _cell: the owner's
    #   cell of map._holding (the one the map's own methods use on that thread): only the owner
    #   reads or writes its item, exactly as the map's protocol says; so only the owner takes the
    #   fast path, and any other thread goes to the map (which finds its own cell).
    # _dicts, _getitem, _contains, _acquire, _release: lists, one entry per shard, of
    #   map._dicts[i] and of bound methods of map._dicts[i] and map._locks[i], made by the owner:
    #   the owner's calls touch neither the shared dict's nor the lock's reference count. The
    #   map's lists never change (fixed at its construction), so these stay the map's.
    # _places: hash(key) -> shard index under the default placement: the owner's own cache
    #   (the map's _places is a dict shared by every thread). Any thread may read and write it
    #   with single dict operations; every entry is correct whenever it is seen. Cleared when it
    #   holds _PLACES_MIN entries and at least as many as the map has keys.
    # _hasher, _mask, _bits, _name: the map's, fixed; _name is the map's class name (messages).

    def __init__(self, map: ShardedMap[K, V]) -> None:
        if not isinstance(map, ShardedMap):
            raise TypeError(f"ShardedMapHandle needs a pure-Python ShardedMap, not {type(map).__name__}")
        map._places  # noqa: B018  (assigned last: AttributeError if the map is not set up)
        self.map = map
        self._ident = _get_ident()
        self._cell = map._new_cell()
        dicts, locks = map._dicts, map._locks
        self._dicts = list(dicts)
        self._getitem = [d.__getitem__ for d in dicts]
        self._contains = [d.__contains__ for d in dicts]
        self._acquire = [lock.acquire for lock in locks]
        self._release = [lock.release for lock in locks]
        self._hasher = map._hasher
        self._mask = map._mask
        self._bits = map._bits
        self._name = type(map).__name__
        self._places: dict[int, int] = {}

    def _place(self, hash_: int) -> int:
        """The default placement of a key whose hash() is hash_, computed and cached here."""
        index = _shard_of_hash(hash_, self._bits)
        places = self._places
        if len(places) >= _PLACES_MIN and len(places) >= len(self.map):
            places.clear()
        places[hash_] = index
        return index

    def _index(self, key: Any) -> int:
        """key's shard (the map's shard_index, with this handle's cache)."""
        if self._hasher is None:
            hash_ = hash(key)
            try:
                return self._places[hash_]
            except KeyError:
                return self._place(hash_)
        return self._hasher(key) & self._mask

    # -- single-key reads: no lock -----------------------------------------------------------

    def __getitem__(self, key: K) -> V:
        if self._hasher is None:
            hash_ = hash(key)
            try:
                index = self._places[hash_]
            except KeyError:
                index = self._place(hash_)
        else:
            index = self._hasher(key) & self._mask
        return self._getitem[index](key)  # type: ignore[no-any-return]

    @overload
    def get(self, key: K, /) -> V | None: ...
    @overload
    def get(self, key: K, default: V | D, /) -> V | D: ...

    def get(self, key: K, default: object = None, /) -> object:
        if self._hasher is None:
            hash_ = hash(key)
            try:
                index = self._places[hash_]
            except KeyError:
                index = self._place(hash_)
        else:
            index = self._hasher(key) & self._mask
        try:
            return self._getitem[index](key)
        except KeyError as error:
            # dict's own miss, linearized at this read; a KeyError of the key's own
            # __hash__/__eq__ is the caller's, as through the map.
            if is_dict_miss(error, key):
                return default
            raise

    def __contains__(self, key: object) -> bool:
        if self._hasher is None:
            hash_ = hash(key)
            try:
                index = self._places[hash_]
            except KeyError:
                index = self._place(hash_)
        else:
            index = self._hasher(key) & self._mask
        return self._contains[index](key)

    # -- single-key writes: the shard lock, the owner's mark (the map's protocol, see its
    # "locking" comment; an operation from another thread goes to the map) --------------------

    def __setitem__(self, key: K, value: V) -> None:
        if value is MISSING or value is DELETE:
            raise marker_error(value, "set", self._name)
        if _get_ident() != self._ident:
            self.map[key] = value
            return
        cell = self._cell
        if cell[0] is not None:
            raise self.map._recursive(cell[0], "set")
        if self._hasher is None:
            hash_ = hash(key)
            try:
                index = self._places[hash_]
            except KeyError:
                index = self._place(hash_)
        else:
            index = self._hasher(key) & self._mask
        release = self._release[index]
        cell[0] = "set"
        try:
            self._acquire[index]()
            self._dicts[index][key] = value  # a dict store: cheaper than a bound __setitem__
        finally:
            cell[0] = None
            try:  # noqa: SIM105  (contextlib.suppress would call before the release)
                release()
            except RuntimeError:  # not held: the acquire never happened
                pass

    def __delitem__(self, key: K) -> None:
        if _get_ident() != self._ident:
            del self.map[key]
            return
        cell = self._cell
        if cell[0] is not None:
            raise self.map._recursive(cell[0], "delete")
        if self._hasher is None:
            hash_ = hash(key)
            try:
                index = self._places[hash_]
            except KeyError:
                index = self._place(hash_)
        else:
            index = self._hasher(key) & self._mask
        release = self._release[index]
        cell[0] = "delete"
        try:
            self._acquire[index]()
            del self._dicts[index][key]
        finally:
            cell[0] = None
            try:  # noqa: SIM105  (contextlib.suppress would call before the release)
                release()
            except RuntimeError:  # not held: the acquire never happened
                pass

    def _write(self, op: str, key: Any, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(shard dict, key, *args) under key's shard lock, on the owner thread (the map's
        _write with this handle's fields)."""
        cell = self._cell
        if cell[0] is not None:
            raise self.map._recursive(cell[0], op)
        if self._hasher is None:
            hash_ = hash(key)
            try:
                index = self._places[hash_]
            except KeyError:
                index = self._place(hash_)
        else:
            index = self._hasher(key) & self._mask
        release = self._release[index]
        cell[0] = op
        try:
            self._acquire[index]()
            return fn(self._dicts[index], key, *args)
        finally:
            cell[0] = None
            try:  # noqa: SIM105  (contextlib.suppress would call before the release)
                release()
            except RuntimeError:  # not held: the acquire never happened
                pass

    @overload
    def pop(self, key: K, /) -> V: ...
    @overload
    def pop(self, key: K, default: V | D, /) -> V | D: ...

    def pop(self, key: K, *default: object) -> object:
        if _get_ident() != self._ident:
            return self.map.pop(key, *default)
        return self._write("pop", key, _pop, *default)

    def setdefault(self, key: K, default: V = None, /) -> V:  # type: ignore[assignment]
        """Atomic: the existing value, or default stored and returned."""
        if default is MISSING or default is DELETE:
            raise marker_error(default, "setdefault", self._name)
        if _get_ident() != self._ident:
            return self.map.setdefault(key, default)  # type: ignore[no-any-return]
        return self._write("setdefault", key, _setdefault, default)  # type: ignore[no-any-return]

    def set_if_absent(self, key: K, value: V) -> bool:
        """Store value if key is absent; True if it was stored (orcaman's SetIfAbsent)."""
        if value is MISSING or value is DELETE:
            raise marker_error(value, "set_if_absent", self._name)
        if _get_ident() != self._ident:
            return self.map.set_if_absent(key, value)  # type: ignore[no-any-return]
        return self._write("set_if_absent", key, _set_if_absent, value)  # type: ignore[no-any-return]

    def replace(self, key: K, old: V, new: V) -> bool:
        """Set new if key's value is old (identity, then ==); True if replaced."""
        if new is MISSING or new is DELETE:
            raise marker_error(new, "replace", self._name)
        if _get_ident() != self._ident:
            return self.map.replace(key, old, new)  # type: ignore[no-any-return]
        return self._write("replace", key, _replace, old, new)  # type: ignore[no-any-return]

    def remove(self, key: K, old: V) -> bool:
        """Delete key if its value is old (identity, then ==); True if removed."""
        if _get_ident() != self._ident:
            return self.map.remove(key, old)  # type: ignore[no-any-return]
        return self._write("remove", key, _remove, old)  # type: ignore[no-any-return]

    def compute(self, key: K, fn: Callable[[Any], Any]) -> Any:
        """Atomically set key to fn(value or MISSING); DELETE or MISSING leaves it absent.

        Returns the new value, or MISSING if the key ends absent.
        """
        if _get_ident() != self._ident:
            return self.map.compute(key, fn)
        cell = self._cell  # _write inlined, as in the map's hot methods
        if cell[0] is not None:
            raise self.map._recursive(cell[0], "compute")
        if self._hasher is None:
            hash_ = hash(key)
            try:
                index = self._places[hash_]
            except KeyError:
                index = self._place(hash_)
        else:
            index = self._hasher(key) & self._mask
        release = self._release[index]
        cell[0] = "compute"
        try:
            self._acquire[index]()
            data = self._dicts[index]
            old = dict_get(data, key, MISSING)
            return _settle(data, key, old, fn(old))
        finally:
            cell[0] = None
            try:  # noqa: SIM105  (contextlib.suppress would call before the release)
                release()
            except RuntimeError:  # not held: the acquire never happened
                pass

    def compute_if_absent(self, key: K, factory: Callable[[K], V]) -> V:
        """key's value; if absent, store factory(key) first and return it (see the map's)."""
        value = self.get(key, MISSING)
        if value is not MISSING:
            return value
        if _get_ident() != self._ident:
            return self.map._write("compute_if_absent", key, _compute_if_absent, factory)  # type: ignore[no-any-return]
        return self._write("compute_if_absent", key, _compute_if_absent, factory)  # type: ignore[no-any-return]

    def compute_if_present(self, key: K, fn: Callable[[V], Any]) -> Any:
        """If key is present, set it to fn(value) (DELETE or MISSING removes it); the new value or MISSING."""
        if _get_ident() != self._ident:
            return self.map.compute_if_present(key, fn)
        return self._write("compute_if_present", key, _compute_if_present, fn)

    def merge(self, key: K, value: V, fn: Callable[[V, V], Any]) -> Any:
        """Store value if key is absent, else fn(old, value) (DELETE or MISSING removes it); the result."""
        if value is MISSING or value is DELETE:
            raise marker_error(value, "merge", self._name)
        if _get_ident() != self._ident:
            return self.map.merge(key, value, fn)
        cell = self._cell  # _write inlined, as in the map's hot methods
        if cell[0] is not None:
            raise self.map._recursive(cell[0], "merge")
        if self._hasher is None:
            hash_ = hash(key)
            try:
                index = self._places[hash_]
            except KeyError:
                index = self._place(hash_)
        else:
            index = self._hasher(key) & self._mask
        release = self._release[index]
        cell[0] = "merge"
        try:
            self._acquire[index]()
            data = self._dicts[index]
            old = dict_get(data, key, MISSING)
            if old is MISSING:
                data[key] = value
                return value
            return _settle(data, key, old, fn(old, value))
        finally:
            cell[0] = None
            try:  # noqa: SIM105  (contextlib.suppress would call before the release)
                release()
            except RuntimeError:  # not held: the acquire never happened
                pass

    def upsert(self, key: K, value: V, cb: Callable[[bool, V | None, V], V]) -> Any:
        """Store cb(exists, old or None, value) and return it (orcaman's Upsert)."""
        if _get_ident() != self._ident:
            return self.map.upsert(key, value, cb)
        return self._write("upsert", key, _upsert, value, cb)

    def remove_if(self, key: K, predicate: Callable[[K, V | None, bool], bool]) -> bool:
        """Delete key if predicate(key, value or None, exists) is true; True if removed."""
        if _get_ident() != self._ident:
            return self.map.remove_if(key, predicate)  # type: ignore[no-any-return]
        return self._write("remove_if", key, _remove_if, predicate)  # type: ignore[no-any-return]


def _rebuild(items: dict[Any, Any], shards: int, hasher: Callable[[Any], int]) -> ShardedMap[Any, Any]:
    """Loads pickles made before _impl.reduce (kept for them)."""
    return ShardedMap(items, shards, hasher=hasher)


def _shard_of_hash(hash_: int, bits: int) -> int:
    """ftmap._fnv.shard_of for a key whose hash() is hash_ (csrc/ftmap_fnv.h's ftmap_shard_of_hash):
    FNV-1a 64 over the 8 bytes of hash_ (unsigned, little-endian), fmix64, xor-folded to 32
    bits, the top ``bits`` bits. Unrolled: some 2.4 us on 3.13t, which _places caches."""
    h = hash_ & _MASK_64
    x = ((_OFFSET_64 ^ (h & 0xFF)) * _PRIME_64) & _MASK_64
    x = ((x ^ ((h >> 8) & 0xFF)) * _PRIME_64) & _MASK_64
    x = ((x ^ ((h >> 16) & 0xFF)) * _PRIME_64) & _MASK_64
    x = ((x ^ ((h >> 24) & 0xFF)) * _PRIME_64) & _MASK_64
    x = ((x ^ ((h >> 32) & 0xFF)) * _PRIME_64) & _MASK_64
    x = ((x ^ ((h >> 40) & 0xFF)) * _PRIME_64) & _MASK_64
    x = ((x ^ ((h >> 48) & 0xFF)) * _PRIME_64) & _MASK_64
    x = ((x ^ (h >> 56)) * _PRIME_64) & _MASK_64
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & _MASK_64
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & _MASK_64
    x ^= x >> 33
    return ((x ^ (x >> 32)) & 0xFFFFFFFF) >> (32 - bits) if bits else 0


def _snapshot(data: dict[Any, Any]) -> list[tuple[Any, Any]]:
    """The shard's items at one moment, without its lock.

    list(d.items()) is one C call that runs no Python code: on the free-threaded
    build it holds the dict's own lock (list_extend_dictitems under a critical
    section); with the GIL nothing else runs. Unlike dict.copy(), it never calls a
    key's __eq__ (copy rebuilds a sparse dict by inserting, which compares keys whose
    hashes are equal). On 3.11 a garbage collection that allocation triggers can run
    a finalizer, let another thread write the shard and make the dict iterator raise
    RuntimeError: then the copy is taken again.
    """
    while True:
        try:
            return list(data.items())
        except RuntimeError:  # pragma: no cover  (3.11 only: see above)
            continue


# -- the locked parts of the single-key writes: fn(shard dict, key, *args) ------------------


def _pop(data: dict[Any, Any], key: Any, *default: Any) -> Any:
    return data.pop(key, *default)


def _setdefault(data: dict[Any, Any], key: Any, default: Any) -> Any:
    return data.setdefault(key, default)


def _set_if_absent(data: dict[Any, Any], key: Any, value: Any) -> bool:
    if key in data:
        return False
    data[key] = value
    return True


def _replace(data: dict[Any, Any], key: Any, old: Any, new: Any) -> bool:
    current = dict_get(data, key, MISSING)
    if current is MISSING or not same_value(current, old):
        return False
    data[key] = new
    return True


def _remove(data: dict[Any, Any], key: Any, old: Any) -> bool:
    current = dict_get(data, key, MISSING)
    if current is MISSING or not same_value(current, old):
        return False
    del data[key]
    return True


def _compute_if_absent(data: dict[Any, Any], key: Any, factory: Callable[[Any], Any]) -> Any:
    value = dict_get(data, key, MISSING)
    if value is MISSING:
        value = factory(key)
        if value is MISSING or value is DELETE:
            return MISSING
        data[key] = value
    return value


def _compute_if_present(data: dict[Any, Any], key: Any, fn: Callable[[Any], Any]) -> Any:
    value = dict_get(data, key, MISSING)
    if value is MISSING:
        return MISSING
    return _settle(data, key, value, fn(value))


def _upsert(data: dict[Any, Any], key: Any, value: Any, cb: Callable[[bool, Any, Any], Any]) -> Any:
    old = dict_get(data, key, MISSING)
    exists = old is not MISSING
    return _settle(data, key, old, cb(exists, old if exists else None, value))


def _remove_if(data: dict[Any, Any], key: Any, predicate: Callable[[Any, Any, bool], Any]) -> bool:
    old = dict_get(data, key, MISSING)
    exists = old is not MISSING
    if predicate(key, old if exists else None, exists) and exists:
        del data[key]
        return True
    return False


def _settle(data: dict[Any, Any], key: Any, old: Any, new: Any) -> Any:
    """Store a callback's result, where a marker (DELETE, MISSING) leaves key absent; the value or MISSING."""
    if new is DELETE or new is MISSING:
        if old is not MISSING:
            del data[key]
        return MISSING
    data[key] = new
    return new
