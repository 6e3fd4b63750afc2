"""SnapshotMap, SnapshotReader and SnapshotMapHandle with their reads in C (ftmap._core), the rest in Python.

The C bases (csrc/snapshotmap.c) hold the current snapshot and the history as
published references (ftmap_ref) and implement the reads: ``get``, ``m[k]``,
``in``, ``len``, iteration, ``snapshot()``, ``version``, and the per-thread
reader's reads. Everything else is the pure-Python map's own code, shared with
ftmap._snapshot (the reference implementation): the same functions, so the
same semantics, errors and guarantees; only ``__init__``, ``_write`` (whose
publish is one C call, ``_publish``), ``history_versions``, ``reader``,
``__eq__`` and ``from_file`` are written here, for the C storage.

Differences from the pure map, none of them visible through the public API:
``m.get`` is a method of the map (the pure map's is the current snapshot's own
``dict.get``, so ``m.get.__self__`` differs), and a reader or a handle
registers nothing with the map: it compares its cached snapshot with the map's
current one on every read (one atomic load), so a publish sets no flags.
A handle's cache is used by one thread at a time (a busy flag taken with a
compare-and-swap; another thread reads through the map's path), so a handle
shared between threads stays correct; its writes are the pure handle's code,
which calls the map's methods.

Asynchronous exceptions. The reads are C code: nothing can interrupt them; an
exception can only come out of a key's ``__hash__``/``__eq__`` (the read's
own error, as in a dict). A write is the pure map's: stores, then its publish
as one C call (history, current snapshot, pending delivery, in that order),
so it is published completely or not at all; the guarantees of
ftmap._snapshot's docstring hold unchanged. Readers have no flags to set, so
no publish can leave one stale.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any, TypeVar

from . import _snapshot
from ._errors import RecursiveUpdateError
from ._snapshot import (
    Change,
    Snapshot,
    _frozen_content,
    _Pending,
    _set_version,
    _snapshot_of,
    _Subscription,
)

__all__ = ["SnapshotMap", "SnapshotMapHandle", "SnapshotReader"]

K = TypeVar("K")
V = TypeVar("V")

_core: Any = importlib.import_module("ftmap._core")
_Pure: Any = _snapshot.SnapshotMap  # Any: its methods are reused below, typed by the pure class


def _signature(qualname: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """fn, named as the pure method it stands for: the C methods call it when given arguments
    their fast path does not take, so that errors name the method as the pure class does."""
    fn.__qualname__ = qualname
    fn.__name__ = qualname.rsplit(".", 1)[-1]
    return fn


def _reader_get(self: SnapshotReader[Any, Any], key: Any, default: Any = None) -> Any:
    return _core.SnapshotReaderBase.get(self, key, default)


def _reader_snapshot(self: SnapshotReader[Any, Any]) -> Any:
    return _core.SnapshotReaderBase.snapshot(self)


def _map_snapshot(self: SnapshotMap[Any, Any]) -> Any:
    return _core.SnapshotMapBase.snapshot(self)


class SnapshotReader(_core.SnapshotReaderBase, Mapping[K, V]):  # type: ignore[misc]
    __doc__ = _snapshot.SnapshotReader.__doc__

    __slots__ = ()

    _signature_get = _signature("SnapshotReader.get", _reader_get)
    _signature_snapshot = _signature("SnapshotReader.snapshot", _reader_snapshot)


# m.reader() returns this class: isinstance(r, ftmap.SnapshotReader) holds for both implementations.
_snapshot.SnapshotReader.register(SnapshotReader)  # type: ignore[type-abstract]


def _handle_get(self: SnapshotMapHandle[Any, Any], key: Any, default: Any = None) -> Any:
    return _core.SnapshotMapHandleBase.get(self, key, default)


def _handle_snapshot(self: SnapshotMapHandle[Any, Any]) -> Any:
    return _core.SnapshotMapHandleBase.snapshot(self)


_PureHandle: Any = _snapshot.SnapshotMapHandle


class SnapshotMapHandle(_core.SnapshotMapHandleBase, MutableMapping[K, V]):  # type: ignore[misc]
    __doc__ = _PureHandle.__doc__

    __slots__ = ()

    # In C (the base, csrc/snapshotmap.c): get, h[k], in, len, iter, snapshot(), version, map,
    #   through a cached snapshot that one thread at a time uses (the safety argument is there).
    # Here: the pure handle's own code for everything else (its writes call h.map's methods).

    _signature_get = _signature("SnapshotMapHandle.get", _handle_get)
    _signature_snapshot = _signature("SnapshotMapHandle.snapshot", _handle_snapshot)

    keys = _PureHandle.keys
    values = _PureHandle.values
    items = _PureHandle.items
    __reduce__ = _PureHandle.__reduce__
    __repr__ = _PureHandle.__repr__
    __eq__ = _PureHandle.__eq__
    __hash__ = None  # type: ignore[assignment]

    __setitem__ = _PureHandle.__setitem__
    __delitem__ = _PureHandle.__delitem__
    pop = _PureHandle.pop
    popitem = _PureHandle.popitem
    setdefault = _PureHandle.setdefault
    update = _PureHandle.update
    clear = _PureHandle.clear
    replace = _PureHandle.replace
    compare_and_replace = _PureHandle.compare_and_replace
    transform = _PureHandle.transform
    rollback = _PureHandle.rollback
    history_versions = _PureHandle.history_versions
    subscribe = _PureHandle.subscribe
    flush = _PureHandle.flush
    copy = _PureHandle.copy


# m.handle() returns this class: isinstance(h, ftmap._snapshot.SnapshotMapHandle) holds for both.
_snapshot.SnapshotMapHandle.register(SnapshotMapHandle)  # type: ignore[type-abstract]


class SnapshotMap(_core.SnapshotMapBase, MutableMapping[K, V]):  # type: ignore[misc]
    __doc__ = _Pure.__doc__

    __slots__ = (
        "__weakref__",
        "_delivered",
        "_delivering",
        "_history_size",
        "_lock",
        "_subscribers",
        "_tail",
        "_writing",
    )

    # In C (the base): get, __getitem__, __contains__, __len__, __iter__, snapshot, version,
    #   _history (the history tuple) and _publish. The current snapshot and the history are
    #   published references; _publish (under _lock) stores the history, then the current
    #   snapshot, then links the pending-delivery node after _tail and moves _tail.
    # _lock, _writing, _subscribers, _tail, _delivered, _delivering, _history_size: as in the
    #   pure map (ftmap._snapshot.SnapshotMap), same protocol.

    _signature_snapshot = _signature("SnapshotMap.snapshot", _map_snapshot)

    def __init__(
        self, content: Mapping[K, V] | Iterable[tuple[K, V]] = (), /, *, history: int = 10, **kwargs: V
    ) -> None:
        if isinstance(history, bool) or not isinstance(history, int) or history < 1:
            raise ValueError(f"history must be an int >= 1, not {history!r}")
        first: Snapshot[K, V] = _snapshot_of(_frozen_content(content, kwargs))
        _set_version(first, 1)
        self._lock = threading.RLock()
        self._writing = ""
        self._history_size = history
        self._subscribers: tuple[_Subscription, ...] = ()
        self._tail = self._delivered = _Pending(None, ())
        self._delivering = threading.RLock()
        self._publish(first, (first,), None, None)

    # -- reads: in C, but for these (cold) ones ------------------------------------------------

    keys = _Pure.keys
    values = _Pure.values
    items = _Pure.items
    __repr__ = _Pure.__repr__
    copy = _Pure.copy
    __copy__ = _Pure.__copy__
    __reduce__ = _Pure.__reduce__
    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SnapshotMap | _Pure):
            other = other.snapshot()
        return dict.__eq__(self.snapshot(), other)

    def history_versions(self) -> list[int]:
        """The versions kept for rollback, oldest first; the last is the current version.

        Takes no lock: it may be called from anywhere, a transform function included."""
        current: int = self.version
        # The history is published before the current snapshot: loaded after it, it holds
        # the current version (and, during a publish, perhaps the next one, left out here).
        return [s.version for s in self._history if s.version <= current]

    def reader(self) -> SnapshotReader[K, V]:
        """A reader for the calling thread to keep: reads that scale across threads (see SnapshotReader)."""
        return SnapshotReader(self)

    def handle(self) -> SnapshotMapHandle[K, V]:
        """A handle for the calling thread to keep: the whole API, scaling reads (see SnapshotMapHandle)."""
        return SnapshotMapHandle(self)

    # -- writes: the pure map's, around this _write ---------------------------------------------

    def _write(self, operation: str, build: Callable[[Snapshot[K, V]], Snapshot[K, V] | None]) -> int:
        """Under the writer lock, build the next snapshot (private, version unset) from the
        current one and publish it; return the new version. build returns None to publish
        nothing; the current version is then returned. (ftmap._snapshot's _write, with the
        publish as one C call.)"""
        lock = self._lock
        if lock._is_owned():  # type: ignore[attr-defined]
            raise RecursiveUpdateError(type(self).__name__, operation, self._writing)
        try:
            lock.acquire()
            self._writing = operation
            current: Snapshot[K, V] = self.snapshot()
            new = build(current)
            if new is None:
                version: int = current.version
            else:
                # Everything that calls (and so may be interrupted) comes first ...
                version = current.version + 1
                _set_version(new, version)
                history = self._history
                kept = history[1:] if len(history) >= self._history_size else history
                subscriptions = self._subscribers
                node = _Pending(Change(current, new), subscriptions) if subscriptions else None
                # ... then the publish: one C call (history, current, node linked after _tail).
                # (The old history, current and tail stay referenced by locals: nothing is
                # freed, so no __del__ runs, until the lock is released.)
                tail = self._tail
                self._publish(new, (*kept, new), tail, node)
        finally:
            try:  # noqa: SIM105  (the lock protocol: see ftmap._snapshot.SnapshotMap._lock)
                lock.release()
            except RuntimeError:
                pass
        if self._delivered.next is not None:
            self._deliver()
        return version

    replace = _Pure.replace
    compare_and_replace = _Pure.compare_and_replace
    transform = _Pure.transform
    rollback = _Pure.rollback
    __setitem__ = _Pure.__setitem__
    __delitem__ = _Pure.__delitem__
    update = _Pure.update
    setdefault = _Pure.setdefault
    pop = _Pure.pop
    popitem = _Pure.popitem
    clear = _Pure.clear

    @classmethod
    def from_file(
        cls,
        path: str | Any,
        *,
        format: str | None = None,
        validate: Callable[[dict[str, Any]], object] | None = None,
        history: int = 10,
    ) -> SnapshotMap[str, Any]:
        """A SnapshotMap loaded from a JSON, TOML, YAML or .env file (raises if it cannot be).

        To keep it current as the file changes, use ftmap.ConfigWatcher(map, path).
        """
        from ._config import ConfigWatcher  # noqa: PLC0415  (_config builds on the snapshot module)

        store: SnapshotMap[str, Any] = SnapshotMap(history=history)
        ConfigWatcher(store, path, format=format, validate=validate)
        return store

    # -- change callbacks: the pure map's -------------------------------------------------------

    subscribe = _Pure.subscribe
    flush = _Pure.flush
    _deliver = _Pure._deliver
    _deliver_lock_held = _Pure._deliver_lock_held
