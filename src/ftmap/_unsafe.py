"""UnsafeMap: a dict that reports concurrent misuse the way Go's runtime does.

Go's runtime marks a map "being written" for the length of every write and
checks the mark when a read, an iteration step or another write starts:
"concurrent map writes", "concurrent map read and map write", "concurrent map
iteration and map write". UnsafeMap keeps those checks and closes their gaps:

- A write registers its thread for the whole operation and checks for other
  writers both on entry and on exit (as Go's mapassign does), so two writes
  that overlap at all are seen by at least one of them.
- Every finished write moves a counter. A read or an iteration step notes the
  counter on entry and compares it on exit, so it also catches a write that
  began and ended inside it, which Go's entry-only flag check misses.
- An iteration is one long read: from ``iter()`` to its last step, a write by
  another thread that falls anywhere inside it is reported by the iterator at
  its next step.

Nothing is reported that did not happen: each check names a write by another
thread whose span provably overlapped the checking operation. Iterators are
not tracked while they sit unused, because an abandoned iterator that is never
advanced again has not raced with anything. The price is that detection is
incomplete in narrow windows (a thread's own nested writes from ``__eq__`` or
``__hash__`` can hide another thread's write), and a race is only seen when
the two operations really overlap in time: like Go's checks, and unlike a
happens-before race detector, it cannot see a race that the scheduler happened
to serialise.
"""

from __future__ import annotations

import collections
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

from ._errors import (
    NO_KEY,
    ConcurrentIterationError,
    ConcurrentMapError,
    ConcurrentReadWriteError,
    ConcurrentWriteError,
    ThreadInfo,
)

__all__ = ["RaceLog", "UnsafeMap", "race_log"]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")
D = TypeVar("D")

_get_ident = threading.get_ident
_MISSING: Any = object()
# The keys of UnsafeMap._state. The hot paths spell them as the literals 0 and 1:
# 3.13t does not specialise global loads, and a constant costs nothing.
WRITER = 0
LAST = 1


class RaceLog:
    """Every race any UnsafeMap in the process detected: a count and the latest reports.

    The pytest plugin compares ``total`` before and after each test, so a race
    that was raised in a worker thread and swallowed there still fails the test.
    """

    def __init__(self, keep: int = 100) -> None:
        self._lock = threading.Lock()
        self._total = 0  # only changed under _lock
        self.recent: collections.deque[ConcurrentMapError] = collections.deque(maxlen=keep)

    @property
    def total(self) -> int:
        """How many races have been detected since the process started."""
        return self._total

    def record(self, error: ConcurrentMapError) -> None:
        with self._lock:
            self._total += 1
            self.recent.append(error)


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

    # _data: the plain dict holding the content. Never locked: that is the point.
    # _state[WRITER]: the ident of the thread inside a write, present only for the
    #   span of that write. Taken with one atomic setdefault, so of two overlapping
    #   writes the second always finds the first; only the taker removes it.
    # _state[LAST]: the ident object stored by the last finished write, a new int
    #   object per write (get_ident allocates it): compared by identity it tells an
    #   iterator whether any write finished since it last looked, and who wrote.
    # reports: each race detected on this map, in order (list.append is atomic).

    def __init__(self, other: Mapping[K, V] | Iterable[tuple[K, V]] = (), /, **kwargs: V) -> None:
        self._data: dict[K, V] = dict(other, **kwargs)
        self._state: dict[int, int] = {LAST: _get_ident()}
        self.reports: list[ConcurrentMapError] = []

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
        other = self._state.get(WRITER)
        if other is None or other == me:
            last = self._state[LAST]
            other = last if noted is not None and last is not noted and last != me else None
        if other is not None:
            raise self._report(kind(op, ThreadInfo.of(me), ThreadInfo.of(other), key))

    def _claim_failed(self, me: int, owner: int, op: str, key: object) -> bool:
        """The WRITER claim was held: True for this thread's own nested write, else raise."""
        if owner == me:
            return True
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
        owner = state.setdefault(0, me)
        if owner is not me and self._claim_failed(me, owner, op, key):
            return fn(*args)  # nested inside this thread's own write, which holds the claim
        try:
            return fn(*args)
        finally:
            state[1] = me
            del state[0]

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
        value = self._data.get(key, default)
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
        return (type(self), (self._read("pickle", self._data.copy),))

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
        owner = state.setdefault(0, me)
        if owner is not me and self._claim_failed(me, owner, "write", key):
            self._data[key] = value
            return
        try:
            self._data[key] = value
        finally:
            state[1] = me
            del state[0]

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
        """Update from a mapping or pairs, as dict.update: one write for the whole batch."""
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
    """Steps a dict iterator, checking at each step that no other thread wrote the map.

    The last write is noted when the iterator is made; a step that finds a
    write by another thread finished since, or one in progress, raises
    ConcurrentIterationError. The thread's own writes are left to the dict,
    which raises its usual RuntimeError if they changed its size.
    """

    __slots__ = ("_it", "_map", "_noted", "_op", "_state")

    def __init__(self, owner: UnsafeMap[Any, Any], make: Callable[[Any], Iterator[T]], op: str) -> None:
        state = owner._state
        self._map = owner
        self._state = state
        self._op = op
        self._noted = state[1]
        if 0 in state:
            owner._check_read(ConcurrentIterationError, op, NO_KEY, None)
        self._it = make(owner._data)

    def __iter__(self) -> _MapIterator[T]:
        return self

    def __next__(self) -> T:
        state = self._state
        try:
            return next(self._it)
        finally:
            if 0 in state or state[1] is not self._noted:
                self._map._check_read(ConcurrentIterationError, self._op, NO_KEY, self._noted)
                self._noted = state[1]  # the writes were this thread's own


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


class _ItemsView(ItemsView[K, V]):
    __slots__ = ()
    _mapping: UnsafeMap[K, V]

    def __iter__(self) -> Iterator[tuple[K, V]]:
        return _MapIterator(self._mapping, _iter_items, "iterate items")


def _iter_values(data: dict[Any, V]) -> Iterator[V]:
    return iter(data.values())


def _iter_items(data: dict[K, V]) -> Iterator[tuple[K, V]]:
    return iter(data.items())
