"""UnsafeMap: a dict that reports concurrent misuse the way Go's runtime does.

Go's runtime marks a map "being written" for the length of every write and
checks the mark when a read, an iteration step or another write starts:
"concurrent map writes", "concurrent map read and map write", "concurrent map
iteration and map write". UnsafeMap keeps those checks and closes their gaps:

- A write claims the map for its whole span with one atomic ``setdefault``
  that records its thread, and checks on entry only: of two writes that
  overlap at all, the later one finds the earlier one's claim. (Go's
  mapassign also checks on exit that its flag is still set, because another
  writer may have cleared it; here only the claimant removes its claim.)
- Every finished write moves a counter. A read notes the counter on entry
  and compares it on exit, so it also catches a write that began and ended
  inside it, which Go's entry-only flag check misses.
- An iteration step is a read of its own: it reports a write by another
  thread that was in progress when the step began or finished during it.
  Writes between two steps are not reported, as Go's mapiternext does not
  report them: a thread that hands the map to another (a lock, a
  ``queue.Queue``) and takes it back between steps is correctly synchronised.
  If such a write changed the map's size, the next step raises the dict's own
  RuntimeError, exactly as a dict does.

Nothing is reported that did not happen: each check names a write by another
thread whose span provably overlapped the checking operation. The price is
that detection is incomplete in narrow windows (a thread's own nested writes
from ``__eq__`` or ``__hash__`` can hide another thread's write), and a race
is only seen when the two operations really overlap in time: like Go's
checks, and unlike a happens-before race detector, it cannot see a race that
the scheduler happened to serialise.

Asynchronous exceptions (KeyboardInterrupt, ``PyThreadState_SetAsyncExc``):
after one is delivered anywhere inside an operation, the write claim is not
held (no later write from any thread is reported against it), every write
that returned before is in the map, and the map is the dict it wraps, so it
is as consistent as a dict: the interrupted operation took effect or not as
the dict operation it forwards to did (single-key operations are
all-or-nothing; ``update`` may have stored a prefix of its items). This holds
on 3.13 and 3.14, whose delivery points (function entry, loop back-edges,
after every call returns) are all inside the ``try`` whose ``finally`` drops
the claim with subscript operations only, which are no delivery points. One
exception per operation: a second one delivered while the first unwinds the
rare path where the claim's owner must be looked up is outside any
pure-Python guarantee.
"""

from __future__ import annotations

import collections
import operator
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
from types import MappingProxyType
from typing import Any, Generic, TypeVar, overload

from . import _impl
from ._base import HandleOperators, dict_get
from ._errors import (
    NO_KEY,
    ConcurrentIterationError,
    ConcurrentMapError,
    ConcurrentReadWriteError,
    ConcurrentWriteError,
    ThreadInfo,
)

__all__ = ["RaceLog", "UnsafeMap", "UnsafeMapHandle", "race_log"]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")
D = TypeVar("D")

_get_ident = threading.get_ident


class _MISSING:
    """pop's "no default" sentinel: a class, so loading it touches no shared reference count."""


# The keys of UnsafeMap._state. The hot paths spell them as the literals 0, 1 and 2:
# 3.13t does not specialise global loads, and a constant costs nothing.
WRITER = 0
LAST = 1
WRITES = 2


class RaceLog:
    """Every race any UnsafeMap in the process detected: a count and the latest reports.

    The pytest plugin compares ``total`` before and after each test, so a race
    that was raised in a worker thread and swallowed there still fails the test.
    """

    def __init__(self, keep: int = 100) -> None:
        # An RLock, acquired inside the try: its release checks the owner, so the
        # finally can release without knowing whether an asynchronous exception
        # came before or after the acquire (3.14 delivers one between `with`'s
        # __enter__ and its block).
        self._lock = threading.RLock()
        self._total = 0  # only changed under _lock
        self.recent: collections.deque[ConcurrentMapError] = collections.deque(maxlen=keep)

    @property
    def total(self) -> int:
        """How many races have been detected since the process started."""
        return self._total

    def record(self, error: ConcurrentMapError) -> None:
        lock = self._lock
        try:
            lock.acquire()
            self._total += 1
            self.recent.append(error)
        finally:
            try:  # noqa: SIM105  (contextlib.suppress would call before the release)
                lock.release()
            except RuntimeError:  # not held: the acquire never happened
                pass


race_log = RaceLog()


class UnsafeMap(MutableMapping[K, V]):
    """A dict, deliberately unsynchronized, that detects use from two threads at once.

    One thread's own use behaves exactly as a dict, including the RuntimeError
    for a dict changed during its own iteration. A write that overlaps another
    thread's write, read or iteration raises ConcurrentWriteError,
    ConcurrentReadWriteError or ConcurrentIterationError in the thread that
    detects it; each detection is also appended to ``reports`` and to the
    process-wide ``race_log``, because an exception raised in a worker thread
    is easily lost. A write that detects a race on entry is not performed.
    """

    __slots__ = ("__weakref__", "_data", "_state", "reports")
    _data: dict[K, V]
    _state: dict[int, int]

    # _data: the plain dict holding the content. Never locked: that is the point.
    # _state[WRITER]: the ident of the thread inside a write, present only for the
    #   span of that write. Taken with one atomic setdefault, so of two overlapping
    #   writes the second always finds the first; only the taker removes it, in a
    #   finally, with subscript operations (no async-exception delivery point).
    #   The taker compares it by identity with the int object it stored.
    # _state[LAST]: the ident object stored by the last finished write, a new int
    #   object per write (get_ident allocates it): compared by identity it tells a
    #   read or an iteration step whether a write finished while it ran, and who wrote.
    # _state[WRITES]: present from the first handle() on (setdefault, never removed): how
    #   many writes have finished since, modulo 256, an immortal small int, stored by the
    #   claimant before it stores LAST and releases WRITER. The map's own reads compare LAST
    #   by identity; a handle's reads compare WRITES (loading LAST, a shared int object, would
    #   write its reference count from every reading thread). A map without handles pays one
    #   `in` test per write for it. A write whose test ran before the first handle set the
    #   key still held the claim after that, so a handle read it overlaps sees the claim.
    # reports: each race detected on this map, in order (list.append is atomic).

    def __init__(self, other: Mapping[K, V] | Iterable[tuple[K, V]] = (), /, **kwargs: V) -> None:
        data: dict[K, V] = dict(other, **kwargs)
        try:
            old = self._data
        except AttributeError:  # the usual case: a new map
            self._data = data
            self._state = {LAST: _get_ident()}
        else:
            # __init__ run again: the dicts are kept (handles hold proxies and bound methods
            # of them), the contents replaced, as the C map's _reset does.
            old.clear()
            old.update(data)
            state = self._state
            if WRITES in state:
                state[WRITES] = (state[WRITES] + 1) & 255
            state[LAST] = _get_ident()
        self.reports: list[ConcurrentMapError] = []

    def handle(self) -> UnsafeMapHandle[K, V]:
        """A handle for the calling thread to keep: the same map, the same checks, faster reads.

        See UnsafeMapHandle: reads through it scale across threads, where reads through the
        map itself contend on the map's reference counts.
        """
        return UnsafeMapHandle(self)

    # -- race checks: the slow paths, entered only when something is amiss ----

    def _report(self, error: ConcurrentMapError) -> ConcurrentMapError:
        self.reports.append(error)
        race_log.record(error)
        return error

    def _check_read(self, kind: type[ConcurrentMapError], op: str, key: object, noted: int | None) -> None:
        """Raise ``kind`` if another thread's write overlapped this read.

        ``noted`` is the _state[LAST] object the read saw when it began, or None
        to check only for a write in progress.
        """
        me = _get_ident()
        other = dict_get(self._state, WRITER)
        if other is None or other == me:
            last = self._state[LAST]
            other = last if noted is not None and last is not noted and last != me else None
        if other is not None:
            raise self._report(kind(op, ThreadInfo.of(me), ThreadInfo.of(other), key))

    def _check_read_counted(self, kind: type[ConcurrentMapError], op: str, key: object, noted: int) -> None:
        """_check_read's exit check for a handle, which noted _state[WRITES] instead of LAST.

        The same decision: a write by another thread still in progress, or else one that
        finished since the read began (the counter moved) when the latest writer is not
        this thread. Blind spot: a read that spans exactly a multiple of 256 writes.
        """
        me = _get_ident()
        state = self._state
        other = dict_get(state, WRITER)
        if other is None or other == me:
            last = state[LAST]
            other = last if state[WRITES] != noted and last != me else None
        if other is not None:
            raise self._report(kind(op, ThreadInfo.of(me), ThreadInfo.of(other), key))

    def _claim_failed(self, me: int, owner: object, op: str, key: object) -> None:
        """The WRITER claim was held: return for this thread's own nested write, else raise."""
        if owner == me:
            return
        assert isinstance(owner, int)
        raise self._report(ConcurrentWriteError(op, ThreadInfo.of(me), ThreadInfo.of(owner), key))

    # -- the two ways in: a read and a write ----------------------------------

    def _read(self, op: str, fn: Callable[..., T], *args: Any) -> T:
        state = self._state
        noted = state[1]
        if 0 in state:
            self._check_read(ConcurrentReadWriteError, op, NO_KEY, None)
        result = fn(*args)
        if 0 in state or state[1] is not noted:
            self._check_read(ConcurrentReadWriteError, op, NO_KEY, noted)
        return result

    def _write(self, op: str, fn: Callable[..., T], *args: Any, key: object = NO_KEY) -> T:
        me = _get_ident()
        state = self._state
        owner: object = None
        # The claim is taken inside the try: an asynchronous exception delivered as
        # setdefault returns (the end of a call is a delivery point) is still
        # followed by the finally, which finds the claim even before `owner` is set.
        try:
            owner = state.setdefault(0, me)
            if owner is me:
                return fn(*args)
        finally:
            # Subscript stores and deletes only: no delivery point until the claim is gone.
            if owner is me:
                if 2 in state:  # a handle was made: count the write for it
                    state[2] = (state[2] + 1) & 255
                state[1] = me
                del state[0]
            elif owner is None:
                self._drop_unrecorded_claim(me)
        self._claim_failed(me, owner, op, key)
        return fn(*args)  # nested inside this thread's own write, which holds the claim

    def _drop_unrecorded_claim(self, me: int) -> None:
        """An exception arrived as setdefault returned: drop the claim if it was taken.

        Nothing was written, so the write counter does not move. Only the claimant
        removes its claim, so the entry cannot change between the look and the delete.
        """
        state = self._state
        if dict_get(state, WRITER) is me:
            del state[WRITER]

    # -- reads -----------------------------------------------------------------
    # The single-key reads and len inline _read's checks: they are the hot path.

    def __getitem__(self, key: K) -> V:
        state = self._state
        noted = state[1]
        if 0 in state:
            self._check_read(ConcurrentReadWriteError, "read", key, None)
        value = self._data[key]
        if 0 in state or state[1] is not noted:
            self._check_read(ConcurrentReadWriteError, "read", key, noted)
        return value

    @overload
    def get(self, key: K, /) -> V | None: ...
    @overload
    def get(self, key: K, default: V | D, /) -> V | D: ...

    def get(self, key: K, default: object = None, /) -> object:
        state = self._state
        noted = state[1]
        if 0 in state:
            self._check_read(ConcurrentReadWriteError, "read", key, None)
        value = dict_get(self._data, key, default)
        if 0 in state or state[1] is not noted:
            self._check_read(ConcurrentReadWriteError, "read", key, noted)
        return value

    def __contains__(self, key: object) -> bool:
        state = self._state
        noted = state[1]
        if 0 in state:
            self._check_read(ConcurrentReadWriteError, "contains", key, None)
        found = key in self._data
        if 0 in state or state[1] is not noted:
            self._check_read(ConcurrentReadWriteError, "contains", key, noted)
        return found

    def __len__(self) -> int:
        state = self._state
        noted = state[1]
        if 0 in state:
            self._check_read(ConcurrentReadWriteError, "len", NO_KEY, None)
        size = len(self._data)
        if 0 in state or state[1] is not noted:
            self._check_read(ConcurrentReadWriteError, "len", NO_KEY, noted)
        return size

    def __eq__(self, other: object) -> bool:
        if isinstance(other, UnsafeMap):
            other = other.copy()._data
        elif isinstance(other, Mapping) and not isinstance(other, dict):
            other = dict(other.items())
        return self._read("compare", self._data.__eq__, other)

    __hash__ = None  # type: ignore[assignment]  # mutable, like dict

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._read('repr', self._data.__repr__)})"

    def copy(self) -> UnsafeMap[K, V]:
        """A new UnsafeMap with the same content (a read of every key)."""
        return type(self)(self._read("copy", self._data.copy))

    __copy__ = copy

    def __reduce__(self) -> tuple[object, ...]:
        return _impl.reduce(self, "UnsafeMap", (self._read("pickle", self._data.copy),))

    # -- iteration -------------------------------------------------------------

    def __iter__(self) -> Iterator[K]:
        return _MapIterator(self, iter, "iterate")

    def __reversed__(self) -> Iterator[K]:
        return _MapIterator(self, reversed, "iterate")

    def keys(self) -> KeysView[K]:
        return _KeysView(self)

    def values(self) -> ValuesView[V]:
        return _ValuesView(self)

    def items(self) -> ItemsView[K, V]:
        return _ItemsView(self)

    # -- writes ----------------------------------------------------------------

    def __setitem__(self, key: K, value: V) -> None:
        # _write inlined: the hot path.
        me = _get_ident()
        state = self._state
        owner: object = None
        try:
            owner = state.setdefault(0, me)
            if owner is me:
                self._data[key] = value
                return
        finally:
            if owner is me:
                if 2 in state:  # a handle was made: count the write for it
                    state[2] = (state[2] + 1) & 255
                state[1] = me
                del state[0]
            elif owner is None:
                self._drop_unrecorded_claim(me)
        self._claim_failed(me, owner, "write", key)
        self._data[key] = value

    def __delitem__(self, key: K) -> None:
        self._write("delete", self._data.__delitem__, key, key=key)

    @overload
    def pop(self, key: K, /) -> V: ...
    @overload
    def pop(self, key: K, default: V | D, /) -> V | D: ...

    def pop(self, key: K, default: object = _MISSING, /) -> object:
        if default is _MISSING:
            return self._write("pop", self._data.pop, key, key=key)
        return self._write("pop", self._data.pop, key, default, key=key)

    def popitem(self) -> tuple[K, V]:
        """Remove and return the most recently inserted item, as dict does."""
        return self._write("popitem", self._data.popitem)

    def setdefault(self, key: K, default: V = None, /) -> V:  # type: ignore[assignment]
        return self._write("setdefault", self._data.setdefault, key, default, key=key)

    def update(self, other: Any = (), /, **kwargs: V) -> None:
        """Update from a mapping or pairs, as dict.update: one write for the whole batch.

        An UnsafeMap source (``m | other_map``, ``dict | m``) is read as one copy first, so a
        key callback that writes the source meanwhile cannot tear the update, where a dict
        source would raise RuntimeError (changed size during iteration).
        """
        if isinstance(other, UnsafeMap):
            other = other.copy()._data
        self._write("update", _update, self._data, other, kwargs)

    def clear(self) -> None:
        self._write("clear", self._data.clear)

    def __ior__(self, other: Any) -> UnsafeMap[K, V]:
        self.update(other)
        return self

    def __or__(self, other: Any) -> UnsafeMap[K, V]:
        if not isinstance(other, Mapping):
            return NotImplemented
        merged = self.copy()
        merged.update(other)
        return merged

    def __ror__(self, other: Any) -> UnsafeMap[K, V]:
        if not isinstance(other, Mapping):
            return NotImplemented
        merged = type(self)(other)
        merged.update(self)
        return merged

    @classmethod
    def fromkeys(cls, keys: Iterable[K], value: V = None) -> UnsafeMap[K, V]:  # type: ignore[assignment]
        return cls(dict.fromkeys(keys, value))


def _update(data: dict[Any, Any], other: Any, kwargs: dict[str, Any]) -> None:
    data.update(other, **kwargs)


class _MapIterator(Iterator[T]):
    """Steps a dict iterator; each step is a read checked as Go's mapiternext checks.

    A step raises ConcurrentIterationError if another thread's write was in
    progress when it began or finished while it ran (the write counter, noted
    at the step's start, moved). Writes between steps are not races: another
    thread may have written while this one waited for it (a lock, a queue), as
    Go allows. The dict itself still raises its usual RuntimeError when the
    map's size changed since the iterator was made, whoever changed it.
    """

    __slots__ = ("_it", "_map", "_op", "_state")

    def __init__(self, owner: UnsafeMap[Any, Any], make: Callable[[Any], Iterator[T]], op: str) -> None:
        state = owner._state
        self._map = owner
        self._state = state
        self._op = op
        noted = state[1]
        if 0 in state:
            owner._check_read(ConcurrentIterationError, op, NO_KEY, None)
        self._it = make(owner._data)
        if 0 in state or state[1] is not noted:
            owner._check_read(ConcurrentIterationError, op, NO_KEY, noted)

    def __iter__(self) -> _MapIterator[T]:
        return self

    def __next__(self) -> T:
        state = self._state
        noted = state[1]
        # One check, on exit: a write in progress when the step began is either still
        # in progress (the claim) or finished during the step (the counter moved).
        try:
            return next(self._it)
        finally:
            # Also when the dict raised (StopIteration, RuntimeError): a write by
            # another thread that overlapped this step is the better report.
            if 0 in state or state[1] is not noted:
                self._map._check_read(ConcurrentIterationError, self._op, NO_KEY, noted)


class _KeysView(KeysView[K]):
    __slots__ = ()
    _mapping: UnsafeMap[K, Any]

    def __iter__(self) -> Iterator[K]:
        return _MapIterator(self._mapping, iter, "iterate keys")

    def __reversed__(self) -> Iterator[K]:
        return _MapIterator(self._mapping, reversed, "iterate keys")


class _ValuesView(ValuesView[V]):
    __slots__ = ()
    _mapping: UnsafeMap[Any, V]

    def __iter__(self) -> Iterator[V]:
        return _MapIterator(self._mapping, _iter_values, "iterate values")

    def __reversed__(self) -> Iterator[V]:
        return _MapIterator(self._mapping, _reversed_values, "iterate values")

    def __contains__(self, value: object) -> bool:
        # dict's own test: ValuesView's would look every key up again (calling
        # __hash__), where a dict compares its values only.
        mapping = self._mapping
        return mapping._read("contains", operator.contains, mapping._data.values(), value)


class _ItemsView(ItemsView[K, V]):
    __slots__ = ()
    _mapping: UnsafeMap[K, V]

    def __iter__(self) -> Iterator[tuple[K, V]]:
        return _MapIterator(self._mapping, _iter_items, "iterate items")

    def __reversed__(self) -> Iterator[tuple[K, V]]:
        return _MapIterator(self._mapping, _reversed_items, "iterate items")

    def __contains__(self, item: object) -> bool:
        # dict's own test: False for anything but a pair, where ItemsView's unpacks it.
        mapping = self._mapping
        return mapping._read("contains", operator.contains, mapping._data.items(), item)


def _iter_values(data: dict[Any, V]) -> Iterator[V]:
    return iter(data.values())


def _iter_items(data: dict[K, V]) -> Iterator[tuple[K, V]]:
    return iter(data.items())


def _reversed_values(data: dict[Any, V]) -> Iterator[V]:
    return reversed(data.values())


def _reversed_items(data: dict[K, V]) -> Iterator[tuple[K, V]]:
    return reversed(data.items())


class _ToTheMap(HandleOperators, Generic[K, V]):
    """The part of an UnsafeMapHandle, pure or C (ftmap._unsafe_c), that is the map's own:
    popitem, the views, ==, repr, update, clear, copy and (from HandleOperators) |, each called
    on ``self.map``; and the refusal to pickle. Listed before MutableMapping in both handles' bases, so that
    these, not MutableMapping's generic versions, are what a handle runs."""

    __slots__ = ()

    map: UnsafeMap[K, V]

    def popitem(self) -> tuple[K, V]:
        """Remove and return the most recently inserted item, as dict does."""
        return self.map.popitem()

    def __reversed__(self) -> Iterator[K]:
        return reversed(self.map)

    def keys(self) -> KeysView[K]:
        return self.map.keys()

    def values(self) -> ValuesView[V]:
        return self.map.values()

    def items(self) -> ItemsView[K, V]:
        return self.map.items()

    def __eq__(self, other: object) -> bool:
        return self.map == other

    __hash__ = None  # type: ignore[assignment]  # mutable, like dict

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.map!r})"

    def update(self, other: Any = (), /, **kwargs: V) -> None:
        """The map's update: one write for the whole batch."""
        self.map.update(other, **kwargs)

    def clear(self) -> None:
        self.map.clear()

    def copy(self) -> UnsafeMap[K, V]:
        """A new UnsafeMap (not a handle) with the same content."""
        return self.map.copy()

    def __reduce__(self) -> Any:
        raise TypeError(f"cannot pickle {type(self).__name__}: a per-thread handle (pickle its map)")


class UnsafeMapHandle(_ToTheMap[K, V], MutableMapping[K, V]):
    """A per-thread handle on an UnsafeMap: ``m.handle()``, kept by the thread that made it.

    The same map and exactly the same checks: every operation through the handle is
    the map's operation, with the map's results, exceptions, misuse detection, reports
    and ``race_log`` entries. A handle is a faster path to the checks, never a way
    around them. ``h.map`` is the map.

    Why it is faster: reads through the map load the map, its dicts and the int object
    that names the latest writer, and on free-threaded Python every such load writes a
    reference count shared by every reading thread. The handle reads through objects its
    thread made (read-only proxies of the map's two dicts and a bound ``dict.get``), and
    notes the map's count of finished writes, kept modulo 256 as an immortal small int,
    instead of the latest writer's int. Blind spot of that count: a read through a handle
    during which exactly a multiple of 256 whole writes by other threads began and ended
    (and none was still in progress at its end) is not reported; the map's own reads have
    no such spot.

    ``h[k]``, ``h.get``, ``in`` and ``h[k] = v``, ``del h[k]`` are the handle's own code
    (the map's checks, inlined); ``pop``, ``setdefault``, ``popitem``, ``len``, iteration
    (the map's iteration rules), the views, ``==``, ``repr``, ``update``, ``clear`` and
    ``copy`` go to the map. Writes are not faster: a map written from two threads at once
    is misused whatever the path.

    Any thread may use any handle, with every guarantee (it is the map's operation); it is
    only fast in the thread that made it. A handle does not pickle (pickle its map).
    """

    __slots__ = ("_d", "_data", "_get", "_s", "_state", "map")

    # map: the map, fixed. _data, _state: read-only proxies (types.MappingProxyType) of the
    #   map's _data and _state, made by the handle's thread (loading them touches no shared
    #   count; the map never replaces its dicts, __init__ included). _get: _data.get bound by
    #   that thread. _d, _s: the map's dicts themselves, for the write paths.

    def __init__(self, owner: UnsafeMap[K, V]) -> None:
        if not isinstance(owner, UnsafeMap):
            raise TypeError(f"UnsafeMapHandle needs an UnsafeMap, not {type(owner).__name__}")
        self.map = owner
        self._d = owner._data
        self._s = owner._state
        owner._state.setdefault(WRITES, 0)  # from now on every write of the map counts
        self._data = MappingProxyType(owner._data)
        self._state = MappingProxyType(owner._state)
        self._get = owner._data.get

    # -- reads: the map's checks, through this thread's own objects ---------------------

    def __getitem__(self, key: K) -> V:
        state = self._state
        noted = state[2]
        if 0 in state:
            self.map._check_read(ConcurrentReadWriteError, "read", key, None)
        value = self._data[key]
        if 0 in state or state[2] is not noted:
            self.map._check_read_counted(ConcurrentReadWriteError, "read", key, noted)
        return value

    @overload
    def get(self, key: K, /) -> V | None: ...
    @overload
    def get(self, key: K, default: V | D, /) -> V | D: ...

    def get(self, key: K, default: object = None, /) -> object:
        state = self._state
        noted = state[2]
        if 0 in state:
            self.map._check_read(ConcurrentReadWriteError, "read", key, None)
        value = self._get(key, default)
        if 0 in state or state[2] is not noted:
            self.map._check_read_counted(ConcurrentReadWriteError, "read", key, noted)
        return value

    def __contains__(self, key: object) -> bool:
        state = self._state
        noted = state[2]
        if 0 in state:
            self.map._check_read(ConcurrentReadWriteError, "contains", key, None)
        found = key in self._data
        if 0 in state or state[2] is not noted:
            self.map._check_read_counted(ConcurrentReadWriteError, "contains", key, noted)
        return found

    # -- writes: the map's claim, inlined (UnsafeMap.__setitem__) -----------------------

    def __setitem__(self, key: K, value: V) -> None:
        me = _get_ident()
        state = self._s
        owner: object = None
        try:
            owner = state.setdefault(0, me)
            if owner is me:
                self._d[key] = value
                return
        finally:
            if owner is me:
                state[2] = (state[2] + 1) & 255
                state[1] = me
                del state[0]
            elif owner is None:
                self.map._drop_unrecorded_claim(me)
        self.map._claim_failed(me, owner, "write", key)
        self._d[key] = value

    def __delitem__(self, key: K) -> None:
        me = _get_ident()
        state = self._s
        owner: object = None
        try:
            owner = state.setdefault(0, me)
            if owner is me:
                del self._d[key]
                return
        finally:
            if owner is me:
                state[2] = (state[2] + 1) & 255
                state[1] = me
                del state[0]
            elif owner is None:
                self.map._drop_unrecorded_claim(me)
        self.map._claim_failed(me, owner, "delete", key)
        del self._d[key]

    @overload
    def pop(self, key: K, /) -> V: ...
    @overload
    def pop(self, key: K, default: V | D, /) -> V | D: ...

    def pop(self, key: K, default: object = _MISSING, /) -> object:
        if default is _MISSING:
            return self.map.pop(key)
        return self.map.pop(key, default)

    def setdefault(self, key: K, default: V = None, /) -> V:  # type: ignore[assignment]
        return self.map.setdefault(key, default)

    # -- the rest: the map's ----------------------------------------------------------

    def __len__(self) -> int:
        return len(self.map)

    def __iter__(self) -> Iterator[K]:
        return iter(self.map)
