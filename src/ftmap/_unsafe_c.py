"""UnsafeMap on the C core: ftmap._core.UnsafeMapBase plus the cold methods, in Python.

The semantics are the pure map's (src/ftmap/_unsafe.py, the reference; its docstring
describes the checks). ``UnsafeMapBase`` (csrc/unsafemap.c) implements the hot paths,
``m[k]``, ``get``, ``in``, ``len``, ``m[k] = v``, ``del m[k]``, ``pop``, ``setdefault``
and every iteration step, and the two ways in that the methods here use:
``_read(op, fn, *args)`` and ``_write(op, fn, *args, key=...)``, the same checks as the
pure map's methods of those names. The write claim is a real atomic compare-and-swap on
the ident of the writing thread; the counter of finished writes is an atomic integer.

Asynchronous exceptions: C code is never interrupted, so an asynchronous exception can
only come out of Python code the C code calls (a key's ``__hash__``/``__eq__``, a
value's ``__del__``, the callable ``_write`` runs), and the C code releases the claim on
every path out of the write. The methods below call ``_read``/``_write`` once each: an
exception delivered before that call leaves the map untouched, one delivered after it
returned finds the operation done and the claim released. So the pure map's guarantee
holds, more strongly: the claim never outlives its write, whatever is delivered where,
and ``m[k] = v``, ``del m[k]``, ``get``, ``m[k]``, ``in`` with keys whose hash and
equality are C code (str, int, tuples of them) cannot be interrupted at all.
"""

from __future__ import annotations

import importlib
import operator
from collections.abc import (
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    MutableMapping,
    ValuesView,
)
from typing import Any, TypeVar

from . import _impl
from . import _unsafe as _pure
from ._errors import ConcurrentMapError, ThreadInfo
from ._unsafe import race_log

__all__ = ["UnsafeMap", "UnsafeMapHandle"]

K = TypeVar("K")
V = TypeVar("V")

_core: Any = importlib.import_module("ftmap._core")

# _iter's kinds (csrc/unsafemap.c).
_KEYS, _KEYS_REVERSED, _VALUES, _VALUES_REVERSED, _ITEMS, _ITEMS_REVERSED = range(6)


class UnsafeMap(_core.UnsafeMapBase, MutableMapping[K, V]):  # type: ignore[misc]
    """A dict, deliberately unsynchronized, that detects use from two threads at once.

    One thread's own use behaves exactly as a dict, including the RuntimeError
    for a dict changed during its own iteration. A write that overlaps another
    thread's write, read or iteration raises ConcurrentWriteError,
    ConcurrentReadWriteError or ConcurrentIterationError in the thread that
    detects it; each detection is also appended to ``reports`` and to the
    process-wide ``race_log``, because an exception raised in a worker thread
    is easily lost. A write that detects a race on entry is not performed.
    """

    __slots__ = ("__weakref__", "reports")

    # Inherited from UnsafeMapBase (C): _data (the dict, never replaced), _state (the pure
    # map's _state, rebuilt for inspection), __getitem__, get, __contains__, __len__,
    # __setitem__, __delitem__, pop, setdefault, __iter__, _read, _write, _iter, _reset.
    _data: dict[K, V]
    reports: list[ConcurrentMapError]

    def __init__(self, other: Mapping[K, V] | Iterable[tuple[K, V]] = (), /, **kwargs: V) -> None:
        data: dict[K, V] = dict(other, **kwargs)
        self._reset(data)
        self.reports = []

    def handle(self) -> UnsafeMapHandle[K, V]:
        """A handle for the calling thread to keep: the same map, the same checks, faster reads.

        See UnsafeMapHandle: reads through it scale across threads, where reads through the
        map itself contend on the map's reference count.
        """
        return UnsafeMapHandle(self)

    # -- the report: called by the C code, which decided that a race happened ---------

    def _race(self, kind: type[ConcurrentMapError], op: str, me: int, other: int, *key: object) -> None:
        error = kind(op, ThreadInfo.of(me), ThreadInfo.of(other), *key)
        self.reports.append(error)
        race_log.record(error)
        raise error

    # -- reads -----------------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (UnsafeMap, _pure.UnsafeMap)):
            other = other.copy()._data
        elif isinstance(other, Mapping) and not isinstance(other, dict):
            other = dict(other.items())
        result: bool = self._read("compare", self._data.__eq__, other)
        return result

    __hash__ = None  # type: ignore[assignment]  # mutable, like dict

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._read('repr', self._data.__repr__)})"

    def copy(self) -> UnsafeMap[K, V]:
        """A new UnsafeMap with the same content (a read of every key)."""
        return type(self)(self._read("copy", self._data.copy))

    __copy__ = copy

    def __reduce__(self) -> tuple[object, ...]:
        return _impl.reduce(self, "UnsafeMap", (self._read("pickle", self._data.copy),))

    # -- iteration ---------------------------------------------------------------------------

    def __reversed__(self) -> Iterator[K]:
        it: Iterator[K] = self._iter(_KEYS_REVERSED, "iterate")
        return it

    def keys(self) -> KeysView[K]:
        return _KeysView(self)

    def values(self) -> ValuesView[V]:
        return _ValuesView(self)

    def items(self) -> ItemsView[K, V]:
        return _ItemsView(self)

    # -- writes ------------------------------------------------------------------------------

    def popitem(self) -> tuple[K, V]:
        """Remove and return the most recently inserted item, as dict does."""
        item: tuple[K, V] = self._write("popitem", self._data.popitem)
        return item

    def update(self, other: Any = (), /, **kwargs: V) -> None:
        """Update from a mapping or pairs, as dict.update: one write for the whole batch."""
        if isinstance(other, (UnsafeMap, _pure.UnsafeMap)):
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


class _KeysView(KeysView[K]):
    __slots__ = ()
    _mapping: UnsafeMap[K, Any]

    def __iter__(self) -> Iterator[K]:
        it: Iterator[K] = self._mapping._iter(_KEYS, "iterate keys")
        return it

    def __reversed__(self) -> Iterator[K]:
        it: Iterator[K] = self._mapping._iter(_KEYS_REVERSED, "iterate keys")
        return it


class _ValuesView(ValuesView[V]):
    __slots__ = ()
    _mapping: UnsafeMap[Any, V]

    def __iter__(self) -> Iterator[V]:
        it: Iterator[V] = self._mapping._iter(_VALUES, "iterate values")
        return it

    def __reversed__(self) -> Iterator[V]:
        it: Iterator[V] = self._mapping._iter(_VALUES_REVERSED, "iterate values")
        return it

    def __contains__(self, value: object) -> bool:
        # dict's own test, as in the pure map.
        mapping = self._mapping
        found: bool = mapping._read("contains", operator.contains, mapping._data.values(), value)
        return found


class _ItemsView(ItemsView[K, V]):
    __slots__ = ()
    _mapping: UnsafeMap[K, V]

    def __iter__(self) -> Iterator[tuple[K, V]]:
        it: Iterator[tuple[K, V]] = self._mapping._iter(_ITEMS, "iterate items")
        return it

    def __reversed__(self) -> Iterator[tuple[K, V]]:
        it: Iterator[tuple[K, V]] = self._mapping._iter(_ITEMS_REVERSED, "iterate items")
        return it

    def __contains__(self, item: object) -> bool:
        # dict's own test, as in the pure map.
        mapping = self._mapping
        found: bool = mapping._read("contains", operator.contains, mapping._data.items(), item)
        return found


class UnsafeMapHandle(_core.UnsafeMapHandleBase, _pure._ToTheMap[K, V], MutableMapping[K, V]):  # type: ignore[misc]
    """A per-thread handle on an UnsafeMap: ``m.handle()``, kept by the thread that made it.

    The same map and exactly the same checks: ``h[k]``, ``get``, ``in``, ``h[k] = v``,
    ``del h[k]``, ``pop``, ``setdefault``, ``len`` and iteration are the map's own C
    functions (UnsafeMapHandleBase, csrc/unsafemap.c), called through the handle, with the
    map's results, exceptions, misuse detection, reports and ``race_log`` entries; the rest
    goes to the map. What is faster: the interpreter loads the handle, which the thread owns,
    instead of the shared map, whose reference count every thread would write. The C checks
    read the map's 64-bit write counter: no blind spot (the pure handle's counter is kept
    modulo 256, see ftmap._unsafe.UnsafeMapHandle).

    Any thread may use any handle, with every guarantee (it is the map's operation); it is
    only fast in the thread that made it. A handle does not pickle (pickle its map).
    """

    __slots__ = ()

    # Inherited from UnsafeMapHandleBase (C): map, __getitem__, get, __contains__, __len__,
    # __setitem__, __delitem__, pop, setdefault, __iter__; the rest from _pure._ToTheMap.
    map: UnsafeMap[K, V]
