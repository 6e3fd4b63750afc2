"""SyncMap: Go's classic sync.Map (read map, dirty map, misses promotion) in Python.

A port of Go 1.23's src/sync/map.go. Reads of keys already in the read-only
map take no lock and write no shared state; stores to such keys take only
their entry's own lock; everything else goes through one mutex, and the
misses counter decides when the dirty map has cost enough lookups to be
promoted to the read map.

Go updates an entry's value with atomic compare-and-swap; Python has none.
The atomic dict operations cannot stand in for it: deleting needs "set nil
unless expunged", and an unconditional pop would erase the expunged mark,
letting a later store land in an entry that is missing from the dirty map (a
lost store). So each entry has its own small lock, held only for the
compare-and-set itself. Lock order: the map mutex, then an entry lock; no
path takes the mutex while it holds an entry lock, so none can deadlock.
Reads never take either: an entry's value slot is read with one atomic load.
"""

from __future__ import annotations

import threading
from collections.abc import (
    Callable,
    Iterable,
    Iterator,
    Mapping,
)
from typing import Any, NamedTuple, TypeVar, overload

from ._base import ItemsBackedMap, same_value
from ._markers import _Marker

__all__ = ["SyncMap", "SyncMapStats"]

K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")


# An entry's value: a live value or _DELETED. Go's two deleted states, nil and
# expunged, share the one sentinel, so a read tells live from deleted with a
# single identity test; whether a deleted entry is expunged is a flag beside it.
_DELETED: Any = _Marker("deleted")
_MISSING: Any = object()


class _Entry:
    """A slot for one key's value, shared by the read and the dirty map."""

    __slots__ = ("expunged", "lock", "value")

    # value: a live value or _DELETED. Read without any lock (one atomic load);
    #   changed only under lock.
    # expunged: under lock. Go's expunged state: value is _DELETED, the map has a
    #   dirty map, and this entry is not in it; a value can be stored here only
    #   after the entry is put back in the dirty map (with the map's mutex held).
    #   A _DELETED entry that is not expunged is Go's nil: if there is a dirty map,
    #   it is in it. Set and cleared only with the map's mutex held as well.
    # lock: makes each compare-and-set of (value, expunged) atomic; held for a few
    #   bytecodes and never while calling out to user code.

    def __init__(self, value: Any) -> None:
        self.value = value
        self.expunged = False
        self.lock = threading.Lock()

    def try_swap(self, value: Any) -> tuple[Any, bool]:
        """Store value unless expunged: (previous value or _DELETED, stored)."""
        with self.lock:
            if self.expunged:
                return _DELETED, False
            previous = self.value
            self.value = value
            return previous, True

    def try_load_or_store(self, value: Any) -> tuple[Any, bool, bool]:
        """(actual, loaded, ok): ok is False only if the entry is expunged."""
        with self.lock:
            if self.expunged:
                return None, False, False
            current = self.value
            if current is not _DELETED:
                return current, True, True
            self.value = value
            return value, False, True

    def compare_and_set(self, old: Any, new: Any) -> bool:
        """Set new if the value is old (identity, then ==); False if absent or different."""
        # As Go's CAS loop: compare outside the lock (== may run any code, even code
        # that uses this map), then set only if the slot still holds what was compared.
        # An expunged entry holds _DELETED, so it never compares equal.
        while True:
            current = self.value
            if current is _DELETED or not same_value(current, old):
                return False
            with self.lock:
                if self.value is current:
                    self.value = new
                    return True

    def delete(self) -> Any:
        """Delete the value; return it, or _DELETED if there was none."""
        with self.lock:
            current = self.value
            self.value = _DELETED
            return current

    def unexpunge_locked(self) -> bool:
        """With the map's mutex held: expunged -> deleted (nil); True if it was expunged."""
        with self.lock:
            was = self.expunged
            self.expunged = False
            return was

    def try_expunge_locked(self) -> bool:
        """With the map's mutex held: deleted (nil) -> expunged; True if the entry is now expunged."""
        with self.lock:
            if self.value is _DELETED:
                self.expunged = True
            return self.expunged


class _ReadOnly:
    """The read map and whether the dirty map holds keys it lacks. Never changed once published."""

    __slots__ = ("amended", "m")

    def __init__(self, m: dict[Any, _Entry], amended: bool = False) -> None:
        self.m = m
        self.amended = amended


_EMPTY_READ = _ReadOnly({})


class SyncMapStats(NamedTuple):
    """The promotion machinery at one moment (taken under the mutex)."""

    promotions: int
    misses: int
    read_size: int
    dirty_size: int
    amended: bool


class SyncMap(ItemsBackedMap[K, V]):
    """Go's sync.Map: safe for concurrent use without further locking; every operation linearizable.

    Best where keys are written once and read many times, or where threads
    read, write and overwrite disjoint sets of keys. A read of a key that has
    been promoted to the read map takes no lock and writes no shared state.

    Go's methods (snake_case) and the MutableMapping protocol:
    ``m[k]``, ``get``, ``in`` are loads; ``m[k] = v`` is store; ``del m[k]``
    and ``pop`` are load_and_delete; ``setdefault`` is load_or_store.
    compare_and_swap and compare_and_delete compare by identity, then ``==``.
    Iteration and range never raise because of concurrent modification, never
    visit a key twice, and visit every key present for the whole iteration; a
    key stored or deleted meanwhile may or may not be seen. ``len()`` is
    O(n): it counts the keys present at some point during the call, so under
    concurrent writes it is exact only if no key is added or removed meanwhile.
    """

    __slots__ = ("__weakref__", "_dirty", "_misses", "_mu", "_promotions", "_read")

    # _read: the current _ReadOnly. Loaded without a lock at any time; replaced only
    #   with _mu held, by one reference store. Its dict is never changed once published:
    #   only the values inside its entries change.
    # _dirty: under _mu. Every non-expunged entry of _read.m plus the keys _read.m
    #   lacks; None exactly when _read.amended is false.
    # _misses: under _mu. Loads since _read was last replaced that needed _mu to tell
    #   whether a key was present; at len(_dirty) the dirty map is promoted.
    # _promotions: under _mu. How many times the dirty map became the read map.

    def __init__(self, other: Mapping[K, V] | Iterable[tuple[K, V]] = (), /, **kwargs: V) -> None:
        self._mu = threading.Lock()
        self._read = _EMPTY_READ
        self._dirty: dict[Any, _Entry] | None = None
        self._misses = 0
        self._promotions = 0
        if other or kwargs:
            self.update(other, **kwargs)

    # -- the mutex-held helpers, as in Go ---------------------------------------

    def _miss_locked(self) -> None:
        self._misses += 1
        if self._dirty is None or self._misses < len(self._dirty):
            return
        self._promote_locked()

    def _promote_locked(self) -> None:
        assert self._dirty is not None
        self._read = _ReadOnly(self._dirty)
        self._dirty = None
        self._misses = 0
        self._promotions += 1

    def _dirty_locked(self) -> dict[Any, _Entry]:
        if self._dirty is None:
            read = self._read.m
            self._dirty = {k: e for k, e in read.items() if not e.try_expunge_locked()}
        return self._dirty

    def _entry_for_write_locked(self, key: Any) -> _Entry | None:
        """The entry to update for key, put back in the dirty map if it was expunged; None if absent."""
        read = self._read
        entry = read.m.get(key)
        if entry is not None:
            if entry.unexpunge_locked():
                # It was expunged, so there is a dirty map and the entry is not in it.
                assert self._dirty is not None
                self._dirty[key] = entry
            return entry
        if self._dirty is not None:
            return self._dirty.get(key)
        return None

    def _add_locked(self, key: Any, value: Any) -> None:
        """Add a key the map lacks: into the dirty map, marking the read map incomplete."""
        read = self._read
        dirty = self._dirty_locked()
        if not read.amended:
            # The first new key in the dirty map: the read map is now incomplete.
            self._read = _ReadOnly(read.m, True)
        dirty[key] = _Entry(value)

    # Time under the mutex is what matters most on the slow paths: when threads contend
    # for it, each Python call made while holding it lengthens every hand-off, and past
    # a point the waiters stop spinning and sleep (a lock convoy). One more call held
    # inside made two threads claiming the same fresh keys 7x slower (0.10 s -> 0.72 s
    # for 2 x 20,000 load_or_store). So the common slow paths inline their critical
    # sections, and _miss_locked and _entry_for_write_locked serve only the rare ones.

    def _locate(self, key: Any) -> _Entry | None:
        """The entry for key, read map first; the mutex only if the dirty map may have it."""
        read = self._read
        entry = read.m.get(key)
        if entry is None and read.amended:
            with self._mu:
                entry = self._read.m.get(key)
                dirty = self._dirty
                if entry is None and dirty is not None:
                    entry = dirty.get(key)
                    # Found or not, this key takes the slow path until the next promotion.
                    self._misses = misses = self._misses + 1
                    if misses >= len(dirty):
                        self._promote_locked()
        return entry

    # -- Go's API -------------------------------------------------------------------

    # load, __getitem__, get and __contains__ each inline the read-map lookup: they
    # are the hot path, and on 3.13t one more Python call costs as much as the lookup.

    def _value_slow(self, key: Any) -> Any:
        """key's value or _DELETED, when the read map lacks key but the dirty map may have it."""
        entry = self._locate(key)
        return _DELETED if entry is None else entry.value

    def load(self, key: K) -> tuple[V | None, bool]:
        """The value for key and True, or (None, False) if absent."""
        read = self._read
        entry = read.m.get(key)
        if entry is not None:
            value = entry.value
        elif read.amended:
            value = self._value_slow(key)
        else:
            return None, False
        return (None, False) if value is _DELETED else (value, True)

    def store(self, key: K, value: V) -> None:
        """Set the value for key."""
        entry = self._read.m.get(key)
        if entry is not None:
            with entry.lock:  # Entry.try_swap, inlined: the hot write path
                if not entry.expunged:
                    entry.value = value
                    return
        self._swap_slow(key, value)

    def swap(self, key: K, value: V) -> tuple[V | None, bool]:
        """Set the value for key; return the previous value and whether there was one."""
        entry = self._read.m.get(key)
        if entry is not None:
            previous, stored = entry.try_swap(value)
            if stored:
                return (None, False) if previous is _DELETED else (previous, True)
        previous = self._swap_slow(key, value)
        return (None, False) if previous is _DELETED else (previous, True)

    def _swap_slow(self, key: Any, value: Any) -> Any:
        """swap under the mutex: the previous value, or _DELETED."""
        with self._mu:
            dirty = self._dirty
            if dirty is not None and key not in self._read.m:
                # The common case, inlined: a key only the dirty map has, or a new one.
                entry = dirty.get(key)
                if entry is None:
                    dirty[key] = _Entry(value)
                    return _DELETED
            else:
                entry = self._entry_for_write_locked(key)
                if entry is None:
                    self._add_locked(key, value)
                    return _DELETED
            return entry.try_swap(value)[0]  # not expunged: the mutex is held

    def load_or_store(self, key: K, value: V) -> tuple[V, bool]:
        """The existing value and True, or store value and return it with False."""
        entry = self._read.m.get(key)
        if entry is not None:
            actual, loaded, ok = entry.try_load_or_store(value)
            if ok:
                return actual, loaded
        # _entry_for_write_locked, inlined: time under the mutex is what matters most. When
        # threads contend for it, one more Python call held inside made two threads claiming
        # the same fresh keys 7x slower (0.10 s -> 0.72 s for 2 x 20,000): a lock convoy.
        with self._mu:
            read = self._read
            entry = read.m.get(key)
            if entry is not None:
                if entry.unexpunge_locked():
                    assert self._dirty is not None
                    self._dirty[key] = entry
                actual, loaded, _ = entry.try_load_or_store(value)
            elif self._dirty is not None and key in self._dirty:
                actual, loaded, _ = self._dirty[key].try_load_or_store(value)
                self._miss_locked()
            else:
                self._add_locked(key, value)
                actual, loaded = value, False
        return actual, loaded

    def load_and_delete(self, key: K) -> tuple[V | None, bool]:
        """Delete key; return the value it had and whether it was present."""
        read = self._read
        entry = read.m.get(key)
        if entry is None and read.amended:
            with self._mu:
                read = self._read
                entry = read.m.get(key)
                dirty = self._dirty
                if entry is None and dirty is not None:
                    entry = dirty.pop(key, None)
                    self._misses = misses = self._misses + 1
                    if misses >= len(dirty):
                        self._promote_locked()
        if entry is None:
            return None, False
        previous = entry.delete()
        return (None, False) if previous is _DELETED else (previous, True)

    def delete(self, key: K) -> None:
        """Delete key, if present."""
        self.load_and_delete(key)

    def compare_and_swap(self, key: K, old: V, new: V) -> bool:
        """Replace key's value with new if it is old (identity, then ==); True if swapped.

        Unlike Go, the comparison runs with no lock held, even on the slow path:
        a Python __eq__ may call back into this map.
        """
        read = self._read
        entry = read.m.get(key)
        if entry is None:
            if not read.amended:
                return False
            with self._mu:
                read = self._read
                entry = read.m.get(key)
                if entry is None:
                    # Promoted meanwhile? Then there may be no dirty map (Go's nil-map lookup).
                    entry = None if self._dirty is None else self._dirty.get(key)
                    if entry is None:
                        return False
                    # The key set does not change: count a miss, so a dirty-only key gets promoted.
                    self._miss_locked()
        return entry.compare_and_set(old, new)

    def compare_and_delete(self, key: K, old: V) -> bool:
        """Delete key if its value is old (identity, then ==); True if deleted."""
        entry = self._locate(key)
        return entry is not None and entry.compare_and_set(old, _DELETED)

    def range(self, fn: Callable[[K, V], object]) -> None:
        """Call fn(key, value) for each key present; stop when fn returns False.

        Not a snapshot: every key present for the whole call is visited once, a
        key stored or deleted meanwhile may or may not be. fn may call any
        method of this map. Promotes the dirty map first if it has keys the
        read map lacks, as Go does (range is O(n) anyway).
        """
        for key, value in self._items():
            if fn(key, value) is False:
                return

    def clear(self) -> None:
        """Delete every key (Go 1.23's Clear)."""
        read = self._read
        if not read.m and not read.amended:
            return
        with self._mu:
            self._read = _EMPTY_READ
            self._dirty = None
            self._misses = 0

    def stats(self) -> SyncMapStats:
        """Promotions so far, current misses, sizes of the read and dirty maps, amended."""
        with self._mu:
            read = self._read
            return SyncMapStats(
                self._promotions,
                self._misses,
                len(read.m),
                0 if self._dirty is None else len(self._dirty),
                read.amended,
            )

    # -- iteration --------------------------------------------------------------------

    def _complete_read(self) -> dict[Any, _Entry]:
        """A read map holding every key present now: promotes the dirty map if needed."""
        read = self._read
        if read.amended:
            with self._mu:
                read = self._read
                if read.amended:
                    self._promote_locked()
                    read = self._read
        return read.m

    def _items(self) -> Iterator[tuple[Any, Any]]:
        # The published dict never changes, so iterating it is safe under any writes.
        for key, entry in self._complete_read().items():
            value = entry.value
            if value is not _DELETED:
                yield key, value

    def __len__(self) -> int:
        return sum(1 for _ in self._items())

    # -- the MutableMapping protocol ---------------------------------------------------

    def __getitem__(self, key: K) -> V:
        # A subscript, not .get(): 15% faster on a hit, and a miss raises KeyError anyway.
        read = self._read
        try:
            value = read.m[key].value
        except KeyError:
            if not read.amended:
                raise
            value = self._value_slow(key)
        if value is _DELETED:
            raise KeyError(key)
        return value  # type: ignore[no-any-return]

    @overload
    def get(self, key: K, /) -> V | None: ...
    @overload
    def get(self, key: K, default: V | D, /) -> V | D: ...

    def get(self, key: K, default: object = None, /) -> object:
        read = self._read
        entry = read.m.get(key)
        if entry is not None:
            value = entry.value
        elif read.amended:
            value = self._value_slow(key)
        else:
            return default
        return default if value is _DELETED else value

    def __contains__(self, key: object) -> bool:
        read = self._read
        entry = read.m.get(key)
        if entry is not None:
            return entry.value is not _DELETED
        return read.amended and self._value_slow(key) is not _DELETED

    __setitem__ = store

    def __delitem__(self, key: K) -> None:
        if not self.load_and_delete(key)[1]:
            raise KeyError(key)

    @overload
    def pop(self, key: K, /) -> V: ...
    @overload
    def pop(self, key: K, default: V | D, /) -> V | D: ...

    def pop(self, key: K, default: object = _MISSING, /) -> object:
        value, loaded = self.load_and_delete(key)
        if loaded:
            return value
        if default is _MISSING:
            raise KeyError(key)
        return default

    def popitem(self) -> tuple[K, V]:
        """Remove and return some (key, value); KeyError if the map is empty."""
        for key in self:
            value, loaded = self.load_and_delete(key)
            if loaded:
                return key, value  # type: ignore[return-value]
        raise KeyError("popitem(): SyncMap is empty")

    def setdefault(self, key: K, default: V = None, /) -> V:  # type: ignore[assignment]
        """Atomic: the same as load_or_store(key, default)[0]."""
        return self.load_or_store(key, default)[0]

    def copy(self) -> SyncMap[K, V]:
        return type(self)(self._items())

    __copy__ = copy

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (dict(self._items()),))
