"""SyncMap on the C core: the entries and the hot paths in C, the mutex-held paths here.

``ftmap._core.SyncMapBase`` (csrc/syncmap.c) publishes the read map as one atomic
reference and runs the lock-free hot paths in C: ``m[k]``, ``get``, ``in`` and
``load`` on a read-map hit, ``m[k] = v`` and ``store`` on a read-map key that is
not expunged. Its entries (``ftmap._core._SyncEntry``) hold their value pointer
as Go's do: nil, expunged or a value, changed only by compare-and-swap, so there
is no entry lock at all.

Everything that takes the mutex is this module's Python: the dirty map, misses
and promotion, the re-entrancy rule, len/bool, iteration, clear, stats and
``_debug_state``. It is src/ftmap/_sync.py's code line for line, on the C
entries: the read map is the tuple ``(m, amended)`` (the C base checks its
shape when it is published), an entry's ``expunged = False`` is
``unexpunge_locked()``, and ``_debug_state`` reports no entry lock held (there
is none). The semantics, including the re-entrancy rule, the all-or-nothing
errors and the asynchronous-exception guarantee, are the pure module's (read
its docstring). The C hot paths run no Python code of the map and hold no lock:
an asynchronous exception can reach them only from a key's ``__hash__`` or
``__eq__`` (or a replaced value's ``__del__``, after the swap), where it is an
ordinary error and nothing has changed yet (or the swap is complete).

Imported only where ftmap._core imports (``_impl.C_MODULES``).
"""

from __future__ import annotations

import importlib
from _thread import RLock
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from itertools import repeat
from operator import attrgetter, is_, is_not
from typing import Any, TypeVar, overload

from . import _impl
from ._base import ItemsBackedMap, dict_get
from ._errors import RecursiveUpdateError
from ._sync import (
    SyncMapStats,
    _DebugEntry,
    _DebugState,
    _Deletes,
    _HandleWholeMap,
    _Missing,
    _OwnedLock,
    _promote_initial,
)

__all__ = ["SyncMap", "SyncMapHandle"]

K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")

_core: Any = importlib.import_module("ftmap._core")
_Entry: Any = _core._SyncEntry
_DELETED: Any = _core._SYNC_DELETED  # what an entry's methods return for "no value"
_EXPUNGED: Any = _core._SYNC_EXPUNGED  # what try_swap / try_load_or_store return for "expunged"
_MISSING: Any = _Missing  # a class: loading it touches no shared reference count

_value_of = attrgetter("value")

# The read map: (m, amended). m is never changed once published.
_EMPTY_READ: tuple[dict[Any, Any], bool] = ({}, False)


def _count_live(m: dict[Any, Any]) -> int:
    """Live entries of m, at C speed and without running any user code (m must not change meanwhile)."""
    return len(m) - sum(map(is_, map(_value_of, m.values()), repeat(_DELETED)))


def _any_live(m: dict[Any, Any]) -> bool:
    """Whether m has a live entry; stops at the first one (m must not change meanwhile)."""
    return any(map(is_not, map(_value_of, m.values()), repeat(_DELETED)))


def _purge_locked(dirty: dict[Any, Any], key: Any, entry: Any) -> None:
    """While the dirty map is built (mutex held): expunge a deleted entry and remove it from dirty.

    As ftmap._sync._purge_locked: an entry stored meanwhile stays, live; a key that cannot be
    removed keeps its entry in the dirty map as nil; a BaseException propagates (the caller
    undoes every expunge mark).
    """
    if not entry.try_expunge_locked():
        return
    try:
        popped = dirty.pop(key, None)  # runs key.__hash__ (and __eq__)
    except Exception:
        popped = None  # a bad key: nothing was removed
    if popped is not entry:
        entry.unexpunge_locked()  # still in the dirty map: keep it, as nil
        if popped is not None:
            dirty.setdefault(popped.key, popped)


def _debug_entry(key: Any, entry: Any) -> _DebugEntry:
    value = entry.value
    live = value is not _DELETED
    # No entry lock exists: every change of an entry is one compare-and-swap.
    return _DebugEntry(key, id(entry), live, value if live else None, entry.expunged, False)


class SyncMap(_core.SyncMapBase, _Deletes[K, V], ItemsBackedMap[K, V]):  # type: ignore[misc]
    """Go's sync.Map: safe for concurrent use without further locking; every operation linearizable.

    The C core's variant of ftmap._sync.SyncMap, with the same API and semantics
    (read that class's documentation): reads of read-map keys and stores to them
    run in C without any lock.
    """

    __slots__ = ("__weakref__", "_dirty", "_holder", "_misses", "_mu", "_promotions")

    # _read (the C base's published reference): (m, amended), loaded without a lock at any
    #   time; replaced only with _mu held. The other fields and the invariants: as in
    #   ftmap._sync.SyncMap (an entry is expunged when its value pointer is the expunged mark).

    def __init__(self, other: Mapping[K, V] | Iterable[tuple[K, V]] = (), /, **kwargs: V) -> None:
        self._mu: _OwnedLock = RLock()  # type: ignore[assignment]
        self._holder = ""
        self._read = _EMPTY_READ
        self._dirty: dict[Any, Any] | None = None
        self._misses = 0
        self._promotions = 0
        if other or kwargs:
            self.update(other, **kwargs)
            _promote_initial(self)

    # -- the mutex-held helpers, as in Go ---------------------------------------

    def _recursive(self, operation: str) -> RecursiveUpdateError:
        return RecursiveUpdateError(
            "SyncMap",
            operation,
            f"{self._holder} (a key's __hash__ or __eq__, or other code it ran while holding its lock)",
        )

    def _promote_locked(self, dirty: dict[Any, Any]) -> None:
        """The dirty map becomes the read map. The caller keeps the old _read alive until it releases _mu."""
        read = (dirty, False)
        self._read = read
        self._dirty = None
        self._misses = 0
        self._promotions += 1

    def _build_dirty_locked(self, read: tuple[dict[Any, Any], bool]) -> dict[Any, Any]:
        """With _dirty None: build the dirty map from read's map, publish it with an amended read map.

        All or nothing: on any exception no entry stays expunged and nothing is published.
        """
        m = read[0]
        # No `if` ends the body of the loop that changes things (python/cpython#130279).
        deleted = [(key, entry) for key, entry in m.items() if entry.value is _DELETED]
        dirty = dict(m)  # not m.copy(): see ftmap._sync's _build_dirty_locked
        try:
            for key, entry in deleted:
                _purge_locked(dirty, key, entry)
            amended = (m, True)
        except BaseException:
            # Nothing was published, and no entry was expunged before (_dirty was None).
            for entry in m.values():
                entry.unexpunge_locked()
            raise
        self._dirty = dirty
        self._read = amended
        return dirty

    def _unexpunge_locked(self, entry: Any) -> Any:
        """An expunged entry of the read map, put back in the dirty map: the entry now there for its key."""
        dirty = self._dirty
        if dirty is None:  # never, by the invariants; rebuilding keeps them anyway
            dirty = self._build_dirty_locked(self._read)
        key = entry.key
        if key in dirty:  # only for a key whose __hash__/__eq__ changed their answers
            return dirty[key]
        # In the dirty map first, then un-expunged: no delivery point between the subscript
        # store and the C call (a C function has no RESUME); if the key's __hash__ or __eq__
        # raises, nothing was inserted.
        dirty[key] = entry
        entry.unexpunge_locked()
        return entry

    def _locate_slow(self, key: Any, operation: str, write: bool) -> Any:
        """The entry for key when the read map lacks it and is amended (a miss is counted); None if absent."""
        mu = self._mu
        if mu._is_owned():
            if write:
                raise self._recursive(operation)
            return self._locate_reentrant(key)
        try:
            mu.acquire()
            self._holder = operation
            read = self._read  # kept alive until the mutex is released
            entry = dict_get(read[0], key)
            if entry is None:
                dirty = self._dirty
                if dirty is not None:
                    entry = dirty[key] if key in dirty else None  # noqa: SIM401  # not .get(): see ftmap._sync
                    # Found or not, this key takes the slow path until the next promotion.
                    self._misses = misses = self._misses + 1
                    if misses >= len(dirty):
                        self._promote_locked(dirty)
            mu.release()
        except BaseException:
            if mu._is_owned():
                mu.release()
            raise
        return entry

    def _locate_reentrant(self, key: Any) -> Any:
        """A read from code the map runs under its mutex, on the holder's thread: no miss, no promotion."""
        entry = dict_get(self._read[0], key)
        if entry is None:
            dirty = self._dirty  # None exactly when the read map is complete
            if dirty is not None:
                entry = dirty[key] if key in dirty else None  # noqa: SIM401  # not .get(): see ftmap._sync
        return entry

    # -- Go's API (load, get, store, m[k], m[k] = v, in: the C base) -------------------

    # The C methods' argument binders, for calls with keywords or the wrong number of
    # arguments (cold): the pure methods' signatures and names, so that the errors match.
    def _bind_load(self, key: Any) -> tuple[Any]:
        return (key,)

    def _bind_store(self, key: Any, value: Any) -> tuple[Any, Any]:
        return (key, value)

    def _bind_get(self, key: Any, default: Any = None, /) -> tuple[Any, Any]:
        return (key, default)

    _bind_load.__qualname__ = "SyncMap.load"
    _bind_store.__qualname__ = "SyncMap.store"
    _bind_get.__qualname__ = "SyncMap.get"

    def _value_slow(self, key: Any, operation: str) -> Any:
        """key's value or _DELETED, when the read map lacks key but the dirty map may have it (from C)."""
        entry = self._locate_slow(key, operation, False)
        return _DELETED if entry is None else entry.value

    def swap(self, key: K, value: V) -> tuple[V | None, bool]:
        """Set the value for key; return the previous value and whether there was one."""
        entry = dict_get(self._read[0], key)
        if entry is not None:
            previous = entry.try_swap(value)
            if previous is not _EXPUNGED:
                return (None, False) if previous is _DELETED else (previous, True)
        previous = self._swap_slow(key, value, "swap")
        return (None, False) if previous is _DELETED else (previous, True)

    def _swap_slow(self, key: Any, value: Any, operation: str) -> Any:
        """swap under the mutex: the previous value, or _DELETED (store's slow path, called by C)."""
        mu = self._mu
        if mu._is_owned():
            raise self._recursive(operation)
        try:
            mu.acquire()
            self._holder = operation
            read = self._read
            entry = dict_get(read[0], key)
            if entry is None:
                dirty = self._dirty
                if dirty is None:
                    dirty = self._build_dirty_locked(read)  # the key is new: not in the full read map
                else:
                    entry = dirty[key] if key in dirty else None  # noqa: SIM401  # not .get(): see ftmap._sync
                if entry is None:
                    new = _Entry(key, value)
                    entry = dirty.setdefault(key, new)  # if __hash__/__eq__ raise: nothing added
                    if entry is new:
                        mu.release()
                        return _DELETED
            elif entry.expunged:
                entry = self._unexpunge_locked(entry)
            # Not expunged: entries of the dirty map never are, and only the mutex holder expunges.
            previous = entry.try_swap(value)
            mu.release()
        except BaseException:
            if mu._is_owned():
                mu.release()
            raise
        return previous

    def load_or_store(self, key: K, value: V) -> tuple[V, bool]:
        """The existing value and True, or store value and return it with False."""
        entry = dict_get(self._read[0], key)
        if entry is not None:
            result = entry.try_load_or_store(value)
            if result is not _EXPUNGED:
                return result  # type: ignore[no-any-return]
        return self._load_or_store_slow(key, value)  # type: ignore[no-any-return]

    def _load_or_store_slow(self, key: Any, value: Any) -> Any:
        """load_or_store under the mutex: (actual, loaded)."""
        mu = self._mu
        if mu._is_owned():
            raise self._recursive("load_or_store")
        try:
            mu.acquire()
            self._holder = "load_or_store"
            read = self._read
            entry = dict_get(read[0], key)
            if entry is not None:
                if entry.expunged:
                    entry = self._unexpunge_locked(entry)
                result = entry.try_load_or_store(value)
            else:
                dirty = self._dirty
                if dirty is None:
                    dirty = self._build_dirty_locked(read)
                else:
                    entry = dirty[key] if key in dirty else None  # noqa: SIM401  # not .get(): see ftmap._sync
                if entry is None:
                    new = _Entry(key, value)
                    entry = dirty.setdefault(key, new)
                    result = (value, False) if entry is new else entry.try_load_or_store(value)
                else:
                    result = entry.try_load_or_store(value)
                    # The key set does not change: count a miss, so a dirty-only key gets promoted.
                    self._misses = misses = self._misses + 1
                    if misses >= len(dirty):
                        self._promote_locked(dirty)
            mu.release()
        except BaseException:
            if mu._is_owned():
                mu.release()
            raise
        return result

    def load_and_delete(self, key: K) -> tuple[V | None, bool]:
        """Delete key; return the value it had and whether it was present."""
        read = self._read
        entry = dict_get(read[0], key)
        if entry is None and read[1]:
            mu = self._mu
            if mu._is_owned():
                raise self._recursive("load_and_delete")
            try:
                mu.acquire()
                self._holder = "load_and_delete"
                read = self._read
                entry = dict_get(read[0], key)
                dirty = self._dirty
                if entry is None and dirty is not None:
                    entry = dirty.pop(key, None)  # the entry keeps its key alive past the release
                    self._misses = misses = self._misses + 1
                    if misses >= len(dirty):
                        self._promote_locked(dirty)
                mu.release()
            except BaseException:
                if mu._is_owned():
                    mu.release()
                raise
        if entry is None:
            return None, False
        previous = entry.delete()
        return (None, False) if previous is _DELETED else (previous, True)

    def compare_and_swap(self, key: K, old: V, new: V) -> bool:
        """Replace key's value with new if it is old (identity, then ==); True if swapped.

        Unlike Go, the comparison runs with no lock held, even on the slow path:
        a Python __eq__ may call back into this map.
        """
        read = self._read
        entry = dict_get(read[0], key)
        if entry is None:
            if not read[1]:
                return False
            mu = self._mu
            if mu._is_owned():
                raise self._recursive("compare_and_swap")
            try:
                mu.acquire()
                self._holder = "compare_and_swap"
                read = self._read
                entry = dict_get(read[0], key)
                if entry is None:
                    # Promoted meanwhile? Then there is no dirty map (Go's nil-map lookup).
                    dirty = self._dirty
                    if dirty is not None:
                        entry = dirty[key] if key in dirty else None  # noqa: SIM401  # not .get(): see ftmap._sync
                        if entry is not None:
                            # The key set does not change: count a miss, so a dirty-only key gets promoted.
                            self._misses = misses = self._misses + 1
                            if misses >= len(dirty):
                                self._promote_locked(dirty)
                mu.release()
            except BaseException:
                if mu._is_owned():
                    mu.release()
                raise
            if entry is None:
                return False
        return entry.compare_and_set(old, new)  # type: ignore[no-any-return]

    def compare_and_delete(self, key: K, old: V) -> bool:
        """Delete key if its value is old (identity, then ==); True if deleted."""
        read = self._read
        entry = dict_get(read[0], key)
        if entry is None and read[1]:
            entry = self._locate_slow(key, "compare_and_delete", True)
        return entry is not None and entry.compare_and_set(old, _DELETED)

    def range(self, fn: Callable[[K, V], object]) -> None:
        """Call fn(key, value) for each key present; stop when fn returns False (as ftmap._sync's)."""
        for key, value in self._items():
            if fn(key, value) is False:
                return

    def clear(self) -> None:
        """Delete every key (Go 1.23's Clear)."""
        read = self._read
        if not read[0] and not read[1]:
            return
        mu = self._mu
        if mu._is_owned():
            raise self._recursive("clear")
        try:
            mu.acquire()
            self._holder = "clear"
            # Kept alive until the mutex is released, so no __del__ runs under it.
            dropped = (self._read, self._dirty)  # noqa: F841
            self._read = _EMPTY_READ
            self._dirty = None
            self._misses = 0
            mu.release()
        except BaseException:
            if mu._is_owned():
                mu.release()
            raise

    def stats(self) -> SyncMapStats:
        """Promotions so far, current misses, sizes of the read and dirty maps, amended."""
        mu = self._mu
        if mu._is_owned():
            return self._stats_locked()
        try:
            mu.acquire()
            stats = self._stats_locked()
            mu.release()
        except BaseException:
            if mu._is_owned():
                mu.release()
            raise
        return stats

    def _stats_locked(self) -> SyncMapStats:
        read, dirty = self._read, self._dirty
        return SyncMapStats(
            self._promotions, self._misses, len(read[0]), 0 if dirty is None else len(dirty), read[1]
        )

    def _debug_state(self) -> _DebugState:
        """The internals, for tests that check the invariants (not API); the shape of ftmap._sync's.

        Atomic unless another thread holds the mutex (then ``mutex_held`` is True).
        """
        mu = self._mu
        mine = mu._is_owned()
        held = not mine and not mu.acquire(False)
        try:
            read, dirty = self._read, self._dirty
            return _DebugState(
                tuple(_debug_entry(k, e) for k, e in list(read[0].items())),
                read[1],
                None if dirty is None else tuple(_debug_entry(k, e) for k, e in list(dirty.items())),
                self._misses,
                self._promotions,
                held,
                mine,
            )
        finally:
            if not mine and not held:
                mu.release()

    # -- iteration --------------------------------------------------------------------

    def _all_entries(self) -> Iterable[tuple[Any, Any]]:
        """(key, entry) for every key present now, and perhaps deleted ones (see ftmap._sync)."""
        read = self._read
        if not read[1]:
            return read[0].items()  # the published dict never changes: safe under any writes
        mu = self._mu
        if mu._is_owned():
            dirty = self._dirty
            return read[0].items() if dirty is None else list(dirty.items())
        try:
            mu.acquire()
            self._holder = "iteration"
            read = self._read  # the old one stays alive until the release
            dirty = self._dirty
            if dirty is not None:
                self._promote_locked(dirty)
            mu.release()
        except BaseException:
            if mu._is_owned():
                mu.release()
            raise
        return self._read[0].items()

    def _items(self) -> Iterator[tuple[Any, Any]]:
        for key, entry in self._all_entries():
            value = entry.value
            if value is not _DELETED:
                yield key, value

    def __len__(self) -> int:
        read = self._read
        if not read[1]:
            return _count_live(read[0])
        mu = self._mu
        if mu._is_owned():
            dirty = self._dirty
            return _count_live(self._read[0] if dirty is None else dirty)
        # The dirty map has every key present: count it under the mutex, without promoting.
        try:
            mu.acquire()
            dirty = self._dirty
            n = _count_live(self._read[0] if dirty is None else dirty)
            mu.release()
        except BaseException:
            if mu._is_owned():
                mu.release()
            raise
        return n

    def __bool__(self) -> bool:
        read = self._read
        if _any_live(read[0]):
            return True
        if not read[1]:
            return False
        mu = self._mu
        if mu._is_owned():
            dirty = self._dirty
            return _any_live(self._read[0] if dirty is None else dirty)
        try:
            mu.acquire()
            dirty = self._dirty
            found = _any_live(self._read[0] if dirty is None else dirty)
            mu.release()
        except BaseException:
            if mu._is_owned():
                mu.release()
            raise
        return found

    # -- the MutableMapping protocol (m[k], m[k] = v, del m[k], in, get: the C base) ----

    def popitem(self) -> tuple[K, V]:
        """Remove and return some (key, value); KeyError if the map is empty."""
        for key in self:
            value, loaded = self.load_and_delete(key)
            if loaded:
                return key, value  # type: ignore[return-value]
        raise KeyError("popitem(): SyncMap is empty")

    def setdefault(self, key: K, default: V = None, /) -> V:  # type: ignore[assignment, override]
        """Atomic: the same as load_or_store(key, default)[0]."""
        return self.load_or_store(key, default)[0]

    def copy(self) -> SyncMap[K, V]:
        return type(self)(self._items())

    __copy__ = copy

    def __reduce__(self) -> tuple[object, ...]:
        return _impl.reduce(self, "SyncMap", (dict(self._items()),))

    def handle(self) -> SyncMapHandle[K, V]:
        """A handle for the calling thread to keep (see SyncMapHandle)."""
        return SyncMapHandle(self)


class SyncMapHandle(_core.SyncMapHandleBase, _HandleWholeMap, MutableMapping[K, V]):  # type: ignore[misc]
    """A SyncMap's single-key API for one thread to keep: ``h = m.handle()``.

    The C core's variant of ftmap._sync.SyncMapHandle, with the same API and
    semantics (read that class's documentation). The C base keeps the read map
    the handle loaded last and revalidates it with one atomic load
    (csrc/syncmap.c, ftmap_ref_load_cached), so load, get, ``h[k]``, ``in``,
    store and ``h[k] = v`` on a read-map key touch no shared reference count but
    the entry's and the value's; a busy flag keeps that cache safe when several
    threads share the handle (a thread that finds it taken goes the map's way).
    The other single-key operations are the map's own methods.
    """

    __slots__ = ()

    # The C methods' argument binders (see SyncMap's): the pure handle's signatures and names.
    def _bind_load(self, key: Any) -> tuple[Any]:
        return (key,)

    def _bind_store(self, key: Any, value: Any) -> tuple[Any, Any]:
        return (key, value)

    def _bind_get(self, key: Any, default: Any = None, /) -> tuple[Any, Any]:
        return (key, default)

    _bind_load.__qualname__ = "SyncMapHandle.load"
    _bind_store.__qualname__ = "SyncMapHandle.store"
    _bind_get.__qualname__ = "SyncMapHandle.get"

    def swap(self, key: K, value: V) -> tuple[V | None, bool]:
        """Set the value for key; return the previous value and whether there was one."""
        return self.map.swap(key, value)  # type: ignore[no-any-return]

    def load_or_store(self, key: K, value: V) -> tuple[V, bool]:
        """The existing value and True, or store value and return it with False."""
        return self.map.load_or_store(key, value)  # type: ignore[no-any-return]

    def setdefault(self, key: K, default: V = None, /) -> V:  # type: ignore[assignment, override]
        """Atomic: the same as load_or_store(key, default)[0]."""
        return self.map.load_or_store(key, default)[0]  # type: ignore[no-any-return]

    def load_and_delete(self, key: K) -> tuple[V | None, bool]:
        """Delete key; return the value it had and whether it was present."""
        return self.map.load_and_delete(key)  # type: ignore[no-any-return]

    def delete(self, key: K) -> None:
        """Delete key, if present."""
        self.map.load_and_delete(key)

    @overload
    def pop(self, key: K, /) -> V: ...
    @overload
    def pop(self, key: K, default: V | D, /) -> V | D: ...

    def pop(self, key: K, default: object = _MISSING, /) -> object:
        value, loaded = self.map.load_and_delete(key)
        if loaded:
            return value
        if default is _MISSING:
            raise KeyError(key)
        return default

    def compare_and_swap(self, key: K, old: V, new: V) -> bool:
        """Replace key's value with new if it is old (identity, then ==); True if swapped."""
        return self.map.compare_and_swap(key, old, new)  # type: ignore[no-any-return]

    def compare_and_delete(self, key: K, old: V) -> bool:
        """Delete key if its value is old (identity, then ==); True if deleted."""
        return self.map.compare_and_delete(key, old)  # type: ignore[no-any-return]
