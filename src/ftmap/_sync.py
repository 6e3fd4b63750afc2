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

User code under the mutex, and re-entrancy. A dict operation on the read or
the dirty map with the mutex held runs the key's ``__hash__`` and ``__eq__``;
dropping the last reference to a key or value runs its ``__del__``. So the
mutex holder can find itself calling back into this map on its own thread.
The rule (the C core copies it exactly; it tracks the mutex's owner thread):

- Before taking the mutex, an operation checks whether its own thread holds
  it. If so, it is running inside code the map called under the mutex:
  * a read (load, get, ``[]``, ``in``, len, bool, iteration, range, the
    views, ``==``, repr, copy, stats) reads the state as it is, without the
    mutex; it counts no miss and never promotes;
  * a write that needs the mutex (a new key, a key only the dirty map holds,
    an expunged key, clear, and the slow paths of load_and_delete,
    compare_and_swap and compare_and_delete) raises RecursiveUpdateError and
    changes nothing. A write whose lock-free fast path applies (its key in
    the read map, not expunged) takes effect, as it would from another thread.
- Every mutex-held path keeps the state consistent at each point where it
  can run user code, so such reads see the map as before or after the
  interrupted operation, never half-way; and the mutex holder never drops a
  key or value while holding a lock: whatever it removes stays referenced
  until the lock is released, so ``__del__`` runs outside every lock.
- Entry-lock sections contain no call at all, so no user code, garbage
  collection or asynchronous exception can run inside one.

len and bool never promote. Without a dirty map, len counts the live entries
of the read map (no lock: it never changes); with one, it counts the dirty
map's live entries under the mutex (the dirty map holds every key present).
O(n), at C speed, running no user code; exact unless keys are added or
removed meanwhile. bool stops at the first live entry, read map first. Only
iteration, range and misses promote (iteration and range promote as Go's
Range does, except when re-entered: then they copy the dirty map instead).

Errors from user code, all or nothing. A ``__hash__``/``__eq__`` that raises
(or an unhashable key) propagates to the caller and leaves the content
unchanged. Building the dirty map is the one multi-step change: it copies the
read map (no re-hashing) and removes the deleted keys; a deleted key whose
``__hash__``/``__eq__`` raises there is kept as a deleted (nil) entry instead
of being expunged, so a bad old key never fails a store of another key; a
BaseException there (KeyboardInterrupt, an asynchronous exception) undoes
every expunge mark and propagates.

Asynchronous exceptions (``PyThreadState_SetAsyncExc``, KeyboardInterrupt).
Locks are taken as ``try: lock.acquire() ... lock.release()`` with ``except
BaseException: if lock._is_owned(): lock.release()`` (RLocks, never ``with``):
robust on 3.13 and on 3.14, where ``with`` leaves a window after ``__enter__``,
and when a KeyboardInterrupt interrupts a blocked acquire. Every change under a
lock is a series of attribute and subscript stores, which are no delivery
points, or is undone on the way out (building the dirty map). Guarantee, for
one asynchronous exception delivered anywhere inside an operation (including
inside a key's ``__hash__``/``__eq__``, which is the same as that code raising):

- the map's invariants hold and no lock (mutex or entry lock) is held;
- every write that returned before is visible;
- the interrupted operation either took effect or did not: store, swap,
  load_or_store, setdefault, load_and_delete (delete, pop), compare_and_swap,
  compare_and_delete and clear are each all or nothing; update and popitem are
  sequences of those, each all or nothing.

Outside the guarantee: a second asynchronous exception delivered while the
first one unwinds (in the lock release of the ``except`` clause, or while the
dirty-map build undoes its marks). Also, CPython 3.13 can leave a loop
back-edge that follows an ``if`` at the end of a loop body outside the
exception table (python/cpython#130279): an exception delivered there skips
the enclosing ``except`` and ``finally``. No protected block here has that
shape; tests/unit/test_sync_bytecode.py checks the compiled bytecode for it.
This was tested on 3.13 only; on 3.14 it relies on the same delivery points
(function entry, loop back-edges, the return of a CALL-family instruction).

The C core's variant (src/ftmap/_sync_c.py on csrc/syncmap.c) gives the same
guarantee: its mutex-held paths are this module's code on C entries, and its hot
paths (read-map hits, stores to read-map keys) are C code, which is never
interrupted: an exception there can only come out of a key's ``__hash__`` or
``__eq__`` (before anything changed) or a replaced value's ``__del__`` (after the
store completed); an entry's compare-and-swap is one atomic instruction.
"""

from __future__ import annotations

from _thread import RLock
from collections.abc import (
    Callable,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
)
from itertools import repeat
from operator import attrgetter, is_, is_not
from typing import Any, Generic, NamedTuple, Protocol, TypeVar, overload

from . import _impl
from ._base import ItemsBackedMap, dict_get, same_value
from ._errors import RecursiveUpdateError
from ._published import Follower, Published

__all__ = ["SyncMap", "SyncMapHandle", "SyncMapStats"]

K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")


# The sentinels are classes, not instances: on free-threaded 3.13 a class has deferred
# reference counting, so loading one from a global touches no shared reference count (an
# object() sentinel's count is written by every thread that loads it: contended).


class _Deleted:
    """An entry's value when deleted. Go's two deleted states, nil and expunged, share it,
    so a read tells live from deleted with a single identity test; whether a deleted
    entry is expunged is a flag beside it."""


class _Expunged:
    """Returned by the entry's try_ methods when the entry is expunged: never stored."""


class _Missing:
    """pop's "no default" marker."""


_DELETED: Any = _Deleted
_EXPUNGED: Any = _Expunged
_MISSING: Any = _Missing

_value_of = attrgetter("value")


class _OwnedLock(Protocol):
    """What SyncMap uses of an RLock: ``_is_owned()`` (by this thread) is missing from typeshed's stub."""

    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...
    def release(self) -> None: ...
    def _is_owned(self) -> bool: ...


def _count_live(m: dict[Any, _Entry]) -> int:
    """Live entries of m, at C speed and without running any user code (m must not change meanwhile)."""
    return len(m) - sum(map(is_, map(_value_of, m.values()), repeat(_DELETED)))


def _any_live(m: dict[Any, _Entry]) -> bool:
    """Whether m has a live entry; stops at the first one (m must not change meanwhile)."""
    return any(map(is_not, map(_value_of, m.values()), repeat(_DELETED)))


class _Entry:
    """A slot for one key's value, shared by the read and the dirty map."""

    __slots__ = ("expunged", "key", "lock", "value")

    # key: the key object this entry is stored under, in the read and the dirty map
    #   alike; never changes. It keeps the key alive while a dict drops it under the mutex.
    # value: a live value or _DELETED. Read without any lock (one atomic load);
    #   changed only under lock.
    # expunged: Go's expunged state: value is _DELETED, the map has a dirty map, and
    #   this entry is not in it; a value can be stored here only after the entry is put
    #   back in the dirty map (with the map's mutex held). A _DELETED entry that is not
    #   expunged is Go's nil: if there is a dirty map, it is in it. Set (under lock,
    #   only if value is _DELETED) and cleared only with the map's mutex held; readers
    #   that decide to store read it under lock.
    # lock: makes each compare-and-set of (value, expunged) atomic. Its sections contain
    #   no call, so nothing else can run (user code, gc, an async exception) while it
    #   is held. An RLock only for _is_owned(): it is never taken twice.

    def __init__(self, key: Any, value: Any) -> None:
        self.key = key
        self.value = value
        self.expunged = False
        self.lock: _OwnedLock = RLock()  # type: ignore[assignment]

    def try_swap(self, value: Any) -> Any:
        """Store value unless expunged: the previous value (or _DELETED); _EXPUNGED if not stored."""
        lock = self.lock
        try:
            lock.acquire()
            if self.expunged:
                lock.release()
                return _EXPUNGED
            previous = self.value
            self.value = value
            lock.release()
        except BaseException:
            if lock._is_owned():
                lock.release()
            raise
        return previous  # dropped by the caller, after the lock is released

    def try_load_or_store(self, value: Any) -> Any:
        """(actual, loaded), or _EXPUNGED if the entry is expunged."""
        lock = self.lock
        try:
            lock.acquire()
            if self.expunged:
                lock.release()
                return _EXPUNGED
            current = self.value
            if current is _DELETED:
                self.value = value
                lock.release()
                return value, False
            lock.release()
        except BaseException:
            if lock._is_owned():
                lock.release()
            raise
        return current, True

    def compare_and_set(self, old: Any, new: Any) -> bool:
        """Set new if the value is old (identity, then ==); False if absent or different."""
        # As Go's CAS loop: compare outside the lock (== may run any code, even code
        # that uses this map), then set only if the slot still holds what was compared.
        # An expunged entry holds _DELETED, so it never compares equal.
        lock = self.lock
        while True:
            current = self.value
            if current is _DELETED or not same_value(current, old):
                return False
            try:
                lock.acquire()
                if self.value is current:
                    self.value = new
                    lock.release()
                    return True  # current, the replaced value, is dropped after the release
                lock.release()
            except BaseException:
                if lock._is_owned():
                    lock.release()
                raise

    def delete(self) -> Any:
        """Delete the value; return it, or _DELETED if there was none."""
        lock = self.lock
        try:
            lock.acquire()
            previous = self.value
            self.value = _DELETED
            lock.release()
        except BaseException:
            if lock._is_owned():
                lock.release()
            raise
        return previous

    def try_expunge_locked(self) -> bool:
        """With the map's mutex held, while the dirty map is built: deleted (nil) -> expunged."""
        lock = self.lock
        try:
            lock.acquire()
            expunged = self.value is _DELETED
            if expunged:
                self.expunged = True
            lock.release()
        except BaseException:
            if lock._is_owned():
                lock.release()
            raise
        return expunged


def _purge_locked(dirty: dict[Any, _Entry], key: Any, entry: _Entry) -> None:
    """While the dirty map is built (mutex held): expunge a deleted entry and remove it from dirty.

    An entry stored meanwhile stays, live. If the key cannot be removed (its __hash__ or
    __eq__ raises, or no longer finds it), the entry stays in the dirty map as nil rather
    than failing the operation that builds it: a bad old key never fails a store of
    another key. A BaseException propagates (the caller undoes every expunge mark).
    """
    if not entry.try_expunge_locked():
        return
    try:
        popped = dirty.pop(key, None)  # runs key.__hash__ (and __eq__)
    except Exception:
        popped = None  # a bad key: nothing was removed
    if popped is not entry:
        entry.expunged = False  # still in the dirty map: keep it, as nil
        if popped is not None:
            # A key whose __hash__/__eq__ changed their answers removed another key's
            # entry: put it back (if that raises too, the caller undoes it all).
            dirty.setdefault(popped.key, popped)


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


class _DebugEntry(NamedTuple):
    """One entry as _debug_state() shows it."""

    key: Any
    entry_id: int  # identity of the entry: the same entry in the read and the dirty map
    live: bool
    value: Any  # None when not live
    expunged: bool
    lock_held: bool  # by any thread, at the moment of the dump


class _DebugState(NamedTuple):
    """The internals at one moment, for tests' invariant checks (the C core gives the same shape)."""

    read: tuple[_DebugEntry, ...]
    amended: bool
    dirty: tuple[_DebugEntry, ...] | None
    misses: int
    promotions: int
    mutex_held: bool  # by another thread when the dump was taken (then the dump is not atomic)
    mutex_mine: bool  # held by the calling thread: the dump was taken from code the map runs under it


def _debug_entry(key: Any, entry: _Entry) -> _DebugEntry:
    lock = entry.lock
    free = lock.acquire(False)
    if free:
        lock.release()
    value = entry.value
    live = value is not _DELETED
    return _DebugEntry(key, id(entry), live, value if live else None, entry.expunged, not free)


def _promote_initial(m: Any) -> None:
    """A new map's constructor keys become its read map, as a range would make them: one promotion.

    Go's Store never promotes, so a map filled by stores keeps every key in its dirty map
    until misses promote it; a map built from a mapping would then send every store to an
    existing key through the mutex (1.9 us a store in C instead of 0.06) until reads
    promoted it. The constructor (of the pure and of the C SyncMap) promotes once instead
    (stats() counts it).
    """
    mu = m._mu
    try:
        mu.acquire()
        dirty = m._dirty
        if dirty is not None:
            m._promote_locked(dirty)
        mu.release()
    except BaseException:
        if mu._is_owned():
            mu.release()
        raise


class _Deletes(Generic[K, V]):
    """delete, ``del m[k]`` and pop on the class's own load_and_delete: written once for the pure
    SyncMap, its handle and the C SyncMap (whose ``del m[k]`` is its C base's)."""

    __slots__ = ()

    load_and_delete: Callable[[K], tuple[V | None, bool]]

    def delete(self, key: K) -> None:
        """Delete key, if present."""
        self.load_and_delete(key)

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


class SyncMap(_Deletes[K, V], ItemsBackedMap[K, V]):
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
    O(n) and never promotes: it counts the keys present at some point during
    the call, so under concurrent writes it is exact only if no key is added
    or removed meanwhile. ``bool()`` stops at the first live key it finds.

    A key's ``__hash__``/``__eq__`` run by the map under its lock may read the
    map; a write from there that needs the lock raises RecursiveUpdateError
    and changes nothing (see the module docstring for the exact rule and for
    what an asynchronous exception leaves behind).
    """

    __slots__ = ("__weakref__", "_dirty", "_holder", "_misses", "_mu", "_promotions", "_pub", "_read")

    # _read: the current _ReadOnly. Loaded without a lock at any time; replaced only
    #   with _mu held, by one reference store. Its dict is never changed once published:
    #   only the values inside its entries change.
    # _dirty: under _mu. Every non-expunged entry of _read.m plus the keys _read.m
    #   lacks, each under the same key object as in _read.m; None exactly when
    #   _read.amended is false. Only ever inserted into with setdefault: the mutex
    #   holder never replaces an entry.
    # _misses: under _mu. Loads since _read was last replaced that needed _mu to tell
    #   whether a key was present; at len(_dirty) the dirty map is promoted. 0 while
    #   _dirty is None.
    # _promotions: under _mu. How many times the dirty map became the read map.
    # _holder: under _mu. The operation holding it, for RecursiveUpdateError's message.
    # _mu: an RLock for _is_owned() (the owner check of the re-entrancy rule, and
    #   releasing on the way out of an exception); never acquired twice by one thread.
    # _pub: None until the first handle(); then the Published that handles follow, set
    #   once under _mu. Every store of _read with _pub set is bracketed by _pub.begin()
    #   and _pub.end(), under _mu (ftmap._published's protocol).
    #
    # Invariants, whenever _mu is free or its holder runs user code:
    #   (_dirty is not None) == _read.amended; _dirty is None => no entry of _read.m
    #   is expunged and _misses == 0; an expunged entry's value is _DELETED; if
    #   _dirty is not None, each entry of _read.m is either expunged and absent from
    #   _dirty, or is _dirty's entry for its key; no entry of _dirty is expunged;
    #   no entry lock is held.

    def __init__(self, other: Mapping[K, V] | Iterable[tuple[K, V]] = (), /, **kwargs: V) -> None:
        self._mu: _OwnedLock = RLock()  # type: ignore[assignment]
        self._holder = ""
        self._read = _EMPTY_READ
        self._pub: Published[_ReadOnly] | None = None
        self._dirty: dict[Any, _Entry] | None = None
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

    def _promote_locked(self, dirty: dict[Any, _Entry]) -> None:
        """The dirty map becomes the read map. The caller keeps the old _read alive until it releases _mu."""
        read = _ReadOnly(dirty)
        pub = self._pub
        if pub is not None:
            pub.begin()  # an exception here: nothing changed (seq may stay odd: handles refresh)
        # Plain stores from here: no point where an async exception can land between them.
        self._read = read
        self._dirty = None
        self._misses = 0
        self._promotions += 1
        if pub is not None:
            pub.end()  # if an exception lands first, seq stays odd: handles refresh (correct)

    def _build_dirty_locked(self, read: _ReadOnly) -> dict[Any, _Entry]:
        """With _dirty None: build the dirty map from read.m, publish it with an amended read map.

        All or nothing: on any exception no entry stays expunged and nothing is published.
        """
        m = read.m
        # Chosen before anything changes. The loop that changes things below has no `if` in
        # its body: on CPython 3.13 a loop back-edge after an `if` can fall outside the
        # exception table (python/cpython#130279), and an asynchronous exception delivered
        # there would skip the `except` that undoes the expunge marks.
        deleted = [(key, entry) for key, entry in m.items() if entry.value is _DELETED]
        # A copy reuses the stored hashes: no __hash__ runs (an __eq__ only between two
        # keys of one full hash, and if it raises, nothing has changed yet). dict(m), not
        # m.copy(): on free-threaded 3.13 the copy of a dict with many deleted slots (a
        # promoted dirty map, purged) merges under a nested critical section and parks.
        dirty = dict(m)
        pub = self._pub
        try:
            for key, entry in deleted:
                _purge_locked(dirty, key, entry)
            amended = _ReadOnly(m, True)
            if pub is not None:
                pub.begin()
        except BaseException:
            # Nothing was published, and no entry was expunged before (_dirty was None).
            for entry in m.values():
                entry.expunged = False
            raise
        self._dirty = dirty
        self._read = amended
        if pub is not None:
            pub.end()
        return dirty

    def _unexpunge_locked(self, entry: _Entry) -> _Entry:
        """An expunged entry of the read map, put back in the dirty map: the entry now there for its key."""
        dirty = self._dirty
        if dirty is None:  # never, by the invariants; rebuilding keeps them anyway
            dirty = self._build_dirty_locked(self._read)
        key = entry.key
        if key in dirty:  # only for a key whose __hash__/__eq__ changed their answers
            return dirty[key]
        # In the dirty map first, then un-expunged. A subscript store, not setdefault: no
        # asynchronous exception can land between these two lines (after a call returns,
        # one could, leaving an expunged entry in the dirty map). If the key's __hash__ or
        # __eq__ raises, nothing was inserted.
        dirty[key] = entry
        entry.expunged = False
        return entry

    def _locate_slow(self, key: Any, operation: str, write: bool) -> _Entry | None:
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
            entry = dict_get(read.m, key)
            if entry is None:
                dirty = self._dirty
                if dirty is not None:
                    entry = dirty[key] if key in dirty else None  # noqa: SIM401  # not .get(), see "Time under the mutex"
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

    def _locate_reentrant(self, key: Any) -> _Entry | None:
        """A read from code the map runs under its mutex, on the holder's thread: no miss, no promotion."""
        entry = dict_get(self._read.m, key)
        if entry is None:
            dirty = self._dirty  # None exactly when the read map is complete
            if dirty is not None:
                entry = dirty[key] if key in dirty else None  # noqa: SIM401  # not .get(), see "Time under the mutex"
        return entry

    # Time under the mutex is what matters most on the slow paths: when threads contend
    # for it, each Python call made while holding it lengthens every hand-off, and past
    # a point the waiters stop spinning and sleep (a lock convoy). One more call held
    # inside made two threads claiming the same fresh keys 7x slower (0.10 s -> 0.72 s
    # for 2 x 20,000 load_or_store). So the common slow paths inline their critical
    # sections; the rare steps (building the dirty map, un-expunging) are helpers.
    # For the same reason the dirty map is read with `key in dirty` and `dirty[key]`
    # (lock-free lookups on 3.13t), not dirty.get(key), which takes the dict's own
    # critical section: with .get the same benchmark took 0.35 s instead of 0.08 s.

    # -- Go's API -------------------------------------------------------------------

    # load, __getitem__, get and __contains__ each inline the read-map lookup: they
    # are the hot path, and on 3.13t one more Python call costs as much as the lookup.

    def _value_slow(self, key: Any, operation: str) -> Any:
        """key's value or _DELETED, when the read map lacks key but the dirty map may have it."""
        entry = self._locate_slow(key, operation, False)
        return _DELETED if entry is None else entry.value

    def load(self, key: K) -> tuple[V | None, bool]:
        """The value for key and True, or (None, False) if absent."""
        read = self._read
        entry = dict_get(read.m, key)
        if entry is not None:
            value = entry.value
        elif read.amended:
            value = self._value_slow(key, "load")
        else:
            return None, False
        return (None, False) if value is _DELETED else (value, True)

    def store(self, key: K, value: V) -> None:
        """Set the value for key."""
        entry = dict_get(self._read.m, key)
        if entry is not None:
            lock = entry.lock
            try:  # Entry.try_swap, inlined: the hot write path
                lock.acquire()
                if not entry.expunged:
                    previous = entry.value  # noqa: F841  # dropped (its __del__ run) after the release
                    entry.value = value
                    lock.release()
                    return
                lock.release()
            except BaseException:
                if lock._is_owned():
                    lock.release()
                raise
        self._swap_slow(key, value, "store")

    def swap(self, key: K, value: V) -> tuple[V | None, bool]:
        """Set the value for key; return the previous value and whether there was one."""
        entry = dict_get(self._read.m, key)
        if entry is not None:
            previous = entry.try_swap(value)
            if previous is not _EXPUNGED:
                return (None, False) if previous is _DELETED else (previous, True)
        previous = self._swap_slow(key, value, "swap")
        return (None, False) if previous is _DELETED else (previous, True)

    def _swap_slow(self, key: Any, value: Any, operation: str) -> Any:
        """swap under the mutex: the previous value, or _DELETED."""
        mu = self._mu
        if mu._is_owned():
            raise self._recursive(operation)
        try:
            mu.acquire()
            self._holder = operation
            read = self._read
            entry = dict_get(read.m, key)
            if entry is None:
                dirty = self._dirty
                if dirty is None:
                    dirty = self._build_dirty_locked(read)  # the key is new: not in the full read map
                else:
                    entry = dirty[key] if key in dirty else None  # noqa: SIM401  # not .get(), see "Time under the mutex"
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
        entry = dict_get(self._read.m, key)
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
            entry = dict_get(read.m, key)
            if entry is not None:
                if entry.expunged:
                    entry = self._unexpunge_locked(entry)
                result = entry.try_load_or_store(value)
            else:
                dirty = self._dirty
                if dirty is None:
                    dirty = self._build_dirty_locked(read)
                else:
                    entry = dirty[key] if key in dirty else None  # noqa: SIM401  # not .get(), see "Time under the mutex"
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
        entry = dict_get(read.m, key)
        if entry is None and read.amended:
            entry = self._load_and_delete_slow(key)
        if entry is None:
            return None, False
        previous = entry.delete()
        return (None, False) if previous is _DELETED else (previous, True)

    def _load_and_delete_slow(self, key: Any) -> _Entry | None:
        """load_and_delete's lookup under the mutex (a dirty-only key is removed): the entry, or None."""
        mu = self._mu
        if mu._is_owned():
            raise self._recursive("load_and_delete")
        try:
            mu.acquire()
            self._holder = "load_and_delete"
            read = self._read
            entry = dict_get(read.m, key)
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
        return entry

    def compare_and_swap(self, key: K, old: V, new: V) -> bool:
        """Replace key's value with new if it is old (identity, then ==); True if swapped.

        Unlike Go, the comparison runs with no lock held, even on the slow path:
        a Python __eq__ may call back into this map.
        """
        read = self._read
        entry = dict_get(read.m, key)
        if entry is None:
            if not read.amended:
                return False
            entry = self._compare_and_swap_slow(key)
            if entry is None:
                return False
        return entry.compare_and_set(old, new)

    def _compare_and_swap_slow(self, key: Any) -> _Entry | None:
        """compare_and_swap's lookup under the mutex (a miss counted if found): the entry, or None."""
        mu = self._mu
        if mu._is_owned():
            raise self._recursive("compare_and_swap")
        try:
            mu.acquire()
            self._holder = "compare_and_swap"
            read = self._read
            entry = dict_get(read.m, key)
            if entry is None:
                # Promoted meanwhile? Then there is no dirty map (Go's nil-map lookup).
                dirty = self._dirty
                if dirty is not None:
                    entry = dirty[key] if key in dirty else None  # noqa: SIM401  # not .get(), see "Time under the mutex"
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
        return entry

    def compare_and_delete(self, key: K, old: V) -> bool:
        """Delete key if its value is old (identity, then ==); True if deleted."""
        read = self._read
        entry = dict_get(read.m, key)
        if entry is None and read.amended:
            entry = self._locate_slow(key, "compare_and_delete", True)
        return entry is not None and entry.compare_and_set(old, _DELETED)

    def range(self, fn: Callable[[K, V], object]) -> None:
        """Call fn(key, value) for each key present; stop when fn returns False.

        Not a snapshot: every key present for the whole call is visited once, a
        key stored or deleted meanwhile may or may not be. fn may call any
        method of this map. Promotes the dirty map first if it has keys the
        read map lacks, as Go does (range is O(n) anyway), except when called
        from code the map runs under its own lock.
        """
        for key, value in self._items():
            if fn(key, value) is False:
                return

    def clear(self) -> None:
        """Delete every key (Go 1.23's Clear)."""
        read = self._read
        if not read.m and not read.amended:
            return
        mu = self._mu
        if mu._is_owned():
            raise self._recursive("clear")
        try:
            mu.acquire()
            self._holder = "clear"
            # Kept alive until the mutex is released, so no __del__ runs under it.
            dropped = (self._read, self._dirty)  # noqa: F841
            pub = self._pub
            if pub is not None:
                pub.begin()
            self._read = _EMPTY_READ
            self._dirty = None
            self._misses = 0
            if pub is not None:
                pub.end()
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
            self._promotions, self._misses, len(read.m), 0 if dirty is None else len(dirty), read.amended
        )

    def _debug_state(self) -> _DebugState:
        """The internals, for tests that check the invariants (not API).

        Atomic unless another thread holds the mutex (then ``mutex_held`` is True).
        """
        mu = self._mu
        mine = mu._is_owned()
        held = not mine and not mu.acquire(False)
        try:
            read, dirty = self._read, self._dirty
            return _DebugState(
                tuple(_debug_entry(k, e) for k, e in list(read.m.items())),
                read.amended,
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

    def _all_entries(self) -> Iterable[tuple[Any, _Entry]]:
        """(key, entry) for every key present now, and perhaps deleted ones.

        Promotes the dirty map if it has keys the read map lacks, except when called
        on the mutex holder's thread: then it copies the dirty map, which holds them all.
        """
        read = self._read
        if not read.amended:
            return read.m.items()  # the published dict never changes: safe under any writes
        mu = self._mu
        if mu._is_owned():
            dirty = self._dirty
            return read.m.items() if dirty is None else list(dirty.items())
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
        return self._read.m.items()

    def _items(self) -> Iterator[tuple[Any, Any]]:
        for key, entry in self._all_entries():
            value = entry.value
            if value is not _DELETED:
                yield key, value

    def __len__(self) -> int:
        read = self._read
        if not read.amended:
            return _count_live(read.m)
        mu = self._mu
        if mu._is_owned():
            dirty = self._dirty
            return _count_live(self._read.m if dirty is None else dirty)
        # The dirty map has every key present: count it under the mutex, without promoting.
        try:
            mu.acquire()
            dirty = self._dirty
            n = _count_live(self._read.m if dirty is None else dirty)
            mu.release()
        except BaseException:
            if mu._is_owned():
                mu.release()
            raise
        return n

    def __bool__(self) -> bool:
        read = self._read
        if _any_live(read.m):
            return True
        if not read.amended:
            return False
        mu = self._mu
        if mu._is_owned():
            dirty = self._dirty
            return _any_live(self._read.m if dirty is None else dirty)
        try:
            mu.acquire()
            dirty = self._dirty
            found = _any_live(self._read.m if dirty is None else dirty)
            mu.release()
        except BaseException:
            if mu._is_owned():
                mu.release()
            raise
        return found

    # -- the MutableMapping protocol ---------------------------------------------------

    def __getitem__(self, key: K) -> V:
        # A subscript, not .get(): 15% faster on a hit, and a miss raises KeyError anyway.
        read = self._read
        try:
            value = read.m[key].value
        except KeyError:
            if not read.amended:
                raise
            value = self._value_slow(key, "[]")
        if value is _DELETED:
            raise KeyError(key)
        return value  # type: ignore[no-any-return]

    @overload
    def get(self, key: K, /) -> V | None: ...
    @overload
    def get(self, key: K, default: V | D, /) -> V | D: ...

    def get(self, key: K, default: object = None, /) -> object:
        read = self._read
        entry = dict_get(read.m, key)
        if entry is not None:
            value = entry.value
        elif read.amended:
            value = self._value_slow(key, "get")
        else:
            return default
        return default if value is _DELETED else value

    def __contains__(self, key: object) -> bool:
        read = self._read
        entry = dict_get(read.m, key)
        if entry is not None:
            return entry.value is not _DELETED
        return read.amended and self._value_slow(key, "in") is not _DELETED

    __setitem__ = store

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
        return _impl.reduce(self, "SyncMap", (dict(self._items()),))

    # -- per-thread handles ---------------------------------------------------------

    def handle(self) -> SyncMapHandle[K, V]:
        """A handle for the calling thread to keep: this map's single-key API, faster there.

        See SyncMapHandle. The first call makes the map publish its read map for handles.
        """
        return SyncMapHandle(self)

    def _published_for_handles(self) -> Published[_ReadOnly]:
        """The Published that handles follow, made at the first handle (under the mutex)."""
        pub = self._pub
        if pub is not None:
            return pub
        mu = self._mu
        if mu._is_owned():  # from code the map runs under its mutex: this thread holds it
            if self._pub is None:
                self._pub = Published(_load_read)
            return self._pub
        try:
            mu.acquire()
            if self._pub is None:
                self._pub = Published(_load_read)
            pub = self._pub
            mu.release()
        except BaseException:
            if mu._is_owned():
                mu.release()
            raise
        return pub


# -- SyncMapHandle ------------------------------------------------------------------------


def _load_read(m: SyncMap[Any, Any]) -> _ReadOnly:
    """Published's load: the map's current read map (one attribute load)."""
    return m._read


def _derive_read(read: _ReadOnly) -> tuple[Any, Any, bool]:
    """A handle's cell beyond [stale, read]: bound methods of read's dict, made by the refreshing thread."""
    m = read.m
    return (m.get, m.__getitem__, read.amended)


# A handle's cell: [stale, read, get, getitem, amended] (ftmap._published.Follower); the
# handle's methods index it with literals (a global's load would cost a dict lookup).


class _HandleWholeMap:
    """What a SyncMap handle (pure or C) leaves to its map: whole-map operations, pickling."""

    __slots__ = ()

    map: Any

    def __len__(self) -> int:
        return len(self.map)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.map)

    def __bool__(self) -> bool:
        return bool(self.map)

    def keys(self) -> Any:
        return self.map.keys()

    def items(self) -> Any:
        return self.map.items()

    def values(self) -> Any:
        return self.map.values()

    def __eq__(self, other: object) -> bool:
        return self.map == other  # type: ignore[no-any-return]

    def __ne__(self, other: object) -> bool:
        return self.map != other  # type: ignore[no-any-return]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.map!r})"

    def range(self, fn: Callable[[Any, Any], object]) -> None:
        """The map's range (see SyncMap.range)."""
        self.map.range(fn)

    def clear(self) -> None:
        """The map's clear."""
        self.map.clear()

    def stats(self) -> SyncMapStats:
        """The map's stats."""
        return self.map.stats()  # type: ignore[no-any-return]

    def copy(self) -> Any:
        """A copy of the map (a SyncMap, not a handle)."""
        return self.map.copy()

    def popitem(self) -> tuple[Any, Any]:
        """The map's popitem."""
        return self.map.popitem()  # type: ignore[no-any-return]

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError(
            f"cannot pickle a {type(self).__name__}: it is one thread's view of its map; "
            "pickle the map (handle.map) and call handle() on the copy"
        )


class SyncMapHandle(_Deletes[K, V], _HandleWholeMap, Follower[_ReadOnly], MutableMapping[K, V]):
    """A SyncMap's single-key API for one thread to keep: ``h = m.handle()``.

    Every single-key operation of the map (load, store, swap, load_or_store,
    load_and_delete, delete, compare_and_swap, compare_and_delete, ``h[k]``, get,
    ``in``, ``h[k] = v``, ``del h[k]``, pop, setdefault) with the map's exact
    semantics: results, exceptions, the re-entrancy rule, stats, the asynchronous-
    exception guarantee. len, iteration, the views, ``==``, repr, range, clear,
    stats, copy and popitem go to the map (``h.map``).

    Why: the map's own read loads the map's read map, its dict and a fresh bound
    method: shared objects whose reference counts every reading thread writes, so
    reads through one map do not scale with threads on free-threaded Python. The
    handle keeps, in a cell of its own (ftmap._published.Follower), bound methods of
    the current read map made by its thread, and a stale flag that the map sets
    whenever it replaces the read map; a read-map hit then touches only the entry
    and the value. Stores to read-map keys take only the entry's lock, as the map's.

    A handle may be used from any thread, and keeps every guarantee there
    (linearizable operations, read-your-writes): it is only FAST in the thread that
    made it (another thread's use works on bound methods made by the handle's
    thread, which costs it a shared reference count). Handles cannot be pickled.
    """

    __slots__ = ()

    def __init__(self, m: SyncMap[K, V]) -> None:
        Follower.__init__(self, m._published_for_handles(), m, _derive_read)

    @property
    def map(self) -> SyncMap[K, V]:
        """The map this handle works on."""
        return self._owner  # type: ignore[no-any-return]

    # Each operation reads its cell afresh, refreshes it when a writer flagged it, and then
    # is the map's method with `self._read.m.get` replaced by the cell's bound method.

    def load(self, key: K) -> tuple[V | None, bool]:
        """The value for key and True, or (None, False) if absent."""
        cell = self.cell
        if cell[0]:
            cell = self.refresh()
        entry = cell[2](key)
        if entry is not None:
            value = entry.value
        elif cell[4]:
            value = self._owner._value_slow(key, "load")
        else:
            return None, False
        return (None, False) if value is _DELETED else (value, True)

    def __getitem__(self, key: K) -> V:
        cell = self.cell
        if cell[0]:
            cell = self.refresh()
        try:
            value = cell[3](key).value
        except KeyError:
            if not cell[4]:
                raise
            value = self._owner._value_slow(key, "[]")
        if value is _DELETED:
            raise KeyError(key)
        return value  # type: ignore[no-any-return]

    @overload
    def get(self, key: K, /) -> V | None: ...
    @overload
    def get(self, key: K, default: V | D, /) -> V | D: ...

    def get(self, key: K, default: object = None, /) -> object:
        cell = self.cell
        if cell[0]:
            cell = self.refresh()
        entry = cell[2](key)
        if entry is not None:
            value = entry.value
        elif cell[4]:
            value = self._owner._value_slow(key, "get")
        else:
            return default
        return default if value is _DELETED else value

    def __contains__(self, key: object) -> bool:
        cell = self.cell
        if cell[0]:
            cell = self.refresh()
        entry = cell[2](key)
        if entry is not None:
            return entry.value is not _DELETED
        return cell[4] and self._owner._value_slow(key, "in") is not _DELETED

    def store(self, key: K, value: V) -> None:
        """Set the value for key."""
        cell = self.cell
        if cell[0]:
            cell = self.refresh()
        entry = cell[2](key)
        if entry is not None:
            lock = entry.lock
            try:  # Entry.try_swap, inlined: the hot write path (as SyncMap.store)
                lock.acquire()
                if not entry.expunged:
                    previous = entry.value  # noqa: F841  # dropped (its __del__ run) after the release
                    entry.value = value
                    lock.release()
                    return
                lock.release()
            except BaseException:
                if lock._is_owned():
                    lock.release()
                raise
        self._owner._swap_slow(key, value, "store")

    __setitem__ = store

    def swap(self, key: K, value: V) -> tuple[V | None, bool]:
        """Set the value for key; return the previous value and whether there was one."""
        cell = self.cell
        if cell[0]:
            cell = self.refresh()
        entry = cell[2](key)
        if entry is not None:
            previous = entry.try_swap(value)
            if previous is not _EXPUNGED:
                return (None, False) if previous is _DELETED else (previous, True)
        previous = self._owner._swap_slow(key, value, "swap")
        return (None, False) if previous is _DELETED else (previous, True)

    def load_or_store(self, key: K, value: V) -> tuple[V, bool]:
        """The existing value and True, or store value and return it with False."""
        cell = self.cell
        if cell[0]:
            cell = self.refresh()
        entry = cell[2](key)
        if entry is not None:
            result = entry.try_load_or_store(value)
            if result is not _EXPUNGED:
                return result  # type: ignore[no-any-return]
        return self._owner._load_or_store_slow(key, value)  # type: ignore[no-any-return]

    def setdefault(self, key: K, default: V = None, /) -> V:  # type: ignore[assignment]
        """Atomic: the same as load_or_store(key, default)[0]."""
        return self.load_or_store(key, default)[0]

    def load_and_delete(self, key: K) -> tuple[V | None, bool]:
        """Delete key; return the value it had and whether it was present."""
        cell = self.cell
        if cell[0]:
            cell = self.refresh()
        entry = cell[2](key)
        if entry is None and cell[4]:
            entry = self._owner._load_and_delete_slow(key)
        if entry is None:
            return None, False
        previous = entry.delete()
        return (None, False) if previous is _DELETED else (previous, True)

    def compare_and_swap(self, key: K, old: V, new: V) -> bool:
        """Replace key's value with new if it is old (identity, then ==); True if swapped."""
        cell = self.cell
        if cell[0]:
            cell = self.refresh()
        entry = cell[2](key)
        if entry is None:
            if not cell[4]:
                return False
            entry = self._owner._compare_and_swap_slow(key)
            if entry is None:
                return False
        return entry.compare_and_set(old, new)  # type: ignore[no-any-return]

    def compare_and_delete(self, key: K, old: V) -> bool:
        """Delete key if its value is old (identity, then ==); True if deleted."""
        cell = self.cell
        if cell[0]:
            cell = self.refresh()
        entry = cell[2](key)
        if entry is None and cell[4]:
            entry = self._owner._locate_slow(key, "compare_and_delete", True)
        return entry is not None and entry.compare_and_set(old, _DELETED)
