"""SnapshotMap: immutable snapshots published by one reference store.

Readers take the current snapshot with one reference load and never lock;
writers serialise on a lock, build the next snapshot off to the side and
publish it with one reference store (Go's atomic.Value, Rust's arc-swap).

The one published reference is the current snapshot's own ``dict.get``,
bound method and all: ``m.get(key)`` is then a slot load and a C call (no
Python frame), and ``snapshot()`` and ``version`` read the same reference
through its ``__self__``, so they can never disagree with ``get``.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from ._base import same_value

__all__ = ["Change", "FrozenDict", "Snapshot", "SnapshotMap", "SnapshotReader", "freeze"]

K = TypeVar("K")
V = TypeVar("V")

log = logging.getLogger("ftmap")


class FrozenDict(dict[K, V]):
    """A dict that refuses every change: what nested dicts become when a SnapshotMap publishes.

    It is a real dict (json.dumps, ``==`` and ``dict(...)`` work as for any
    dict), so C code that calls dict's methods directly could still change
    it: it is read-only to Python code, not sealed against C.
    """

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError(f"{type(self).__name__} is read-only")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict.__repr__(self)})"

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (dict(self),))

    def __copy__(self) -> FrozenDict[K, V]:
        return self  # immutable: a copy is the same value

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenDict[K, V]:
        return self


class Snapshot(FrozenDict[K, V]):
    """One version of a SnapshotMap's content: read-only forever, ``version`` attached."""

    __slots__ = ("version",)

    def __init__(self, content: Mapping[K, V] | Iterable[tuple[K, V]] = (), version: int = 0) -> None:
        dict.__init__(self, content)
        self.version = version

    def __repr__(self) -> str:
        return f"Snapshot(version={self.version}, {dict.__repr__(self)})"

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (dict(self), self.version))


def freeze(value: Any) -> Any:
    """A read-only deep copy: dicts (any Mapping) become FrozenDict, lists and tuples
    tuples, sets frozensets; everything else is kept as it is."""
    if isinstance(value, FrozenDict | str | bytes | int | float | bool | type(None)):
        return value
    if isinstance(value, Mapping):
        return FrozenDict((k, freeze(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, set | frozenset):
        return frozenset(freeze(v) for v in value)
    return value


@dataclass(frozen=True)
class Change:
    """What a publish changed: the two snapshots and the keys added, removed and changed."""

    old: Snapshot[Any, Any]
    new: Snapshot[Any, Any]
    added: frozenset[Any]
    removed: frozenset[Any]
    changed: frozenset[Any]

    @classmethod
    def between(cls, old: Snapshot[Any, Any], new: Snapshot[Any, Any]) -> Change:
        changed = frozenset(k for k in old.keys() & new.keys() if not same_value(old[k], new[k]))
        return cls(old, new, frozenset(new.keys() - old.keys()), frozenset(old.keys() - new.keys()), changed)


class SnapshotMap(MutableMapping[K, V]):
    """A map whose whole content is one immutable snapshot, replaced as a whole by every write.

    Reads (``m[k]``, ``get``, ``in``, ``len``, iteration, the views) each use
    one snapshot and take no lock; iteration never raises, whatever writers
    do. ``snapshot()`` returns that snapshot (a read-only dict with its
    ``version``), so multi-key reads from it are consistent: never torn.

    Every write publishes exactly one new version, under a writer lock:
    ``m[k] = v``, ``del m[k]``, ``update`` (one version for the batch),
    ``replace``, ``compare_and_replace`` (a stale writer never overwrites a
    newer version), ``transform``, ``rollback``, ``clear``, ``pop``,
    ``popitem``, ``setdefault`` (atomic). Values are deep-frozen on publish
    (see freeze): no reader can change shared content. The last ``history``
    snapshots are kept for ``rollback``. Subscribers get a Change after each
    publish, in version order, one at a time, outside the writer lock; one
    that raises is logged (logger "ftmap") and the others still run.
    """

    __slots__ = (
        "__weakref__",
        "_delivering",
        "_history",
        "_lock",
        "_pending",
        "_subscribers",
        "_versions",
        "get",
    )

    # get: the current snapshot's own dict.get (a bound method). The one published
    #   reference: replaced, under _lock, by one store; read without any lock.
    #   get.__self__ is the current Snapshot.
    # _lock: serialises writers: each reads the current snapshot, builds the next off
    #   to the side and publishes it.
    # _history: under _lock. The last snapshots published, newest last.
    # _subscribers: replaced, under _lock, by a new tuple; read without a lock.
    # _pending: changes published and not yet delivered, in version order (appended
    #   under _lock; taken by whichever thread holds _delivering).
    # _delivering: held by the one thread delivering changes to subscribers.
    # _versions: a class private to this map; _versions.token is a fresh empty class
    #   per publish, stored after get. Readers compare tokens: loading a class touches
    #   no contended reference count on 3.13t, where loading a shared snapshot does.

    get: Callable[..., Any]

    def __init__(
        self, content: Mapping[K, V] | Iterable[tuple[K, V]] = (), /, *, history: int = 10, **kwargs: V
    ) -> None:
        if isinstance(history, bool) or not isinstance(history, int) or history < 1:
            raise ValueError(f"history must be an int >= 1, not {history!r}")
        first: Snapshot[K, V] = Snapshot(_frozen_items(content, kwargs), 1)
        self._lock = threading.Lock()
        self._history: collections.deque[Snapshot[K, V]] = collections.deque([first], maxlen=history)
        self._subscribers: tuple[Callable[[Change], object], ...] = ()
        self._pending: collections.deque[Change] = collections.deque()
        self._delivering = threading.Lock()
        self._versions: Any = type("SnapshotMapVersions", (), {"token": _new_token()})
        self.get = first.get

    # -- reads: one snapshot each, no lock ---------------------------------------

    def snapshot(self) -> Snapshot[K, V]:
        """The current content, read-only forever, with its ``version``."""
        return self.get.__self__  # type: ignore[no-any-return, attr-defined]

    @property
    def version(self) -> int:
        """The current version: 1 for the initial content, one more for every publish."""
        return self.get.__self__.version  # type: ignore[no-any-return, attr-defined]

    def __getitem__(self, key: K) -> V:
        return self.get.__self__[key]  # type: ignore[no-any-return, attr-defined]

    def __contains__(self, key: object) -> bool:
        return key in self.get.__self__  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self.get.__self__)  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[K]:
        return iter(self.get.__self__)  # type: ignore[attr-defined]

    def keys(self) -> Any:
        return self.snapshot().keys()

    def values(self) -> Any:
        return self.snapshot().values()

    def items(self) -> Any:
        return self.snapshot().items()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SnapshotMap):
            other = other.snapshot()
        return dict.__eq__(self.snapshot(), other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        current = self.snapshot()
        return f"{type(self).__name__}({dict.__repr__(current)}, version={current.version})"

    def copy(self) -> SnapshotMap[K, V]:
        return type(self)(self.snapshot(), history=self._history.maxlen or 1)

    __copy__ = copy

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (dict(self.snapshot()), self._history.maxlen))

    # -- writes: each publishes one version ----------------------------------------------

    def _publish_locked(self, content: dict[Any, Any]) -> int:
        """With _lock held: publish content (already frozen) as the next version."""
        old = self.get.__self__  # type: ignore[attr-defined]
        new: Snapshot[K, V] = Snapshot(content, old.version + 1)
        self.get = new.get  # the publish: one reference store
        self._versions.token = _new_token()  # after get: a reader seeing it sees new
        self._history.append(new)
        if self._subscribers:
            self._pending.append(Change.between(old, new))
        return new.version

    def _write(self, build: Callable[[Snapshot[K, V]], dict[Any, Any] | None]) -> int:
        """Under the writer lock, build the next content from the current snapshot and publish it.

        build returns None to publish nothing; the current version is then returned.
        """
        with self._lock:
            content = build(self.snapshot())
            version = self.version if content is None else self._publish_locked(content)
        if self._pending:
            self._deliver()
        return version

    def replace(self, content: Mapping[K, V] | Iterable[tuple[K, V]] = (), /, **kwargs: V) -> int:
        """Make content the whole content; return the new version."""
        items = _frozen_items(content, kwargs)
        return self._write(lambda current: items)

    def compare_and_replace(self, expected_version: int, content: Mapping[K, V]) -> bool:
        """replace, but only if the current version is still expected_version; True if published."""
        items = _frozen_items(content, {})
        published = False

        def build(current: Snapshot[K, V]) -> dict[Any, Any] | None:
            nonlocal published
            published = current.version == expected_version
            return items if published else None

        self._write(build)
        return published

    def transform(self, fn: Callable[[Snapshot[K, V]], Mapping[K, V]]) -> int:
        """Publish fn(current snapshot) as the new content, fn running under the writer lock."""
        return self._write(lambda current: _frozen_items(fn(current), {}))

    def rollback(self, version: int) -> int:
        """Republish the content of an earlier version (still in history) as a new version."""
        with self._lock:
            kept = [s for s in self._history if s.version == version]
        if not kept:
            raise ValueError(f"version {version} is not in the history (kept: {self.history_versions()})")
        return self._write(lambda current: dict(kept[0]))

    def history_versions(self) -> list[int]:
        """The versions kept for rollback, oldest first."""
        with self._lock:
            return [s.version for s in self._history]

    def __setitem__(self, key: K, value: V) -> None:
        frozen = freeze(value)
        self._write(lambda current: {**current, key: frozen})

    def __delitem__(self, key: K) -> None:
        def build(current: Snapshot[K, V]) -> dict[Any, Any]:
            if key not in current:
                raise KeyError(key)
            return {k: v for k, v in current.items() if k != key}

        self._write(build)

    def update(self, other: Any = (), /, **kwargs: V) -> None:
        """Set every item given: one version for the whole batch."""
        items = _frozen_items(other.items() if isinstance(other, Mapping) else other, kwargs)
        self._write(lambda current: {**current, **items})

    def setdefault(self, key: K, default: V = None, /) -> V:  # type: ignore[assignment]
        """Atomic: the value for key, or default published and returned."""
        frozen = freeze(default)
        taken: list[Any] = []

        def build(current: Snapshot[K, V]) -> dict[Any, Any] | None:
            if key in current:
                taken.append(current[key])
                return None
            taken.append(frozen)
            return {**current, key: frozen}

        self._write(build)
        return taken[0]  # type: ignore[no-any-return]

    def pop(self, key: K, *default: Any) -> Any:
        taken: list[Any] = []

        def build(current: Snapshot[K, V]) -> dict[Any, Any] | None:
            if key not in current:
                if not default:
                    raise KeyError(key)
                taken.append(default[0])
                return None
            taken.append(current[key])
            return {k: v for k, v in current.items() if k != key}

        self._write(build)
        return taken[0]

    def popitem(self) -> tuple[K, V]:
        taken: list[tuple[K, V]] = []

        def build(current: Snapshot[K, V]) -> dict[Any, Any]:
            if not current:
                raise KeyError("popitem(): SnapshotMap is empty")
            content = dict(current)
            taken.append(content.popitem())
            return content

        self._write(build)
        return taken[0]

    def clear(self) -> None:
        """Publish an empty content (one version)."""
        self._write(lambda current: {})

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
        from ._config import ConfigWatcher  # noqa: PLC0415  (_config builds on this module)

        store: SnapshotMap[str, Any] = SnapshotMap(history=history)
        ConfigWatcher(store, path, format=format, validate=validate)
        return store

    def reader(self) -> SnapshotReader[K, V]:
        """A reader for the calling thread to keep: reads that scale across threads (see SnapshotReader)."""
        return SnapshotReader(self)

    # -- change callbacks --------------------------------------------------------------

    def subscribe(self, callback: Callable[[Change], object]) -> Callable[[], None]:
        """Call callback(change) after every publish from now on; returns the unsubscribe function."""
        with self._lock:
            self._subscribers = (*self._subscribers, callback)

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = tuple(s for s in self._subscribers if s is not callback)

        return unsubscribe

    def _deliver(self) -> None:
        # One thread at a time delivers, in publish order. A thread that finds another
        # delivering leaves its change to it: publishing never waits for a callback.
        while self._pending:
            if not self._delivering.acquire(blocking=False):
                return
            try:
                while self._pending:
                    change = self._pending.popleft()
                    for callback in self._subscribers:
                        try:
                            callback(change)
                        except Exception:
                            log.exception(
                                "SnapshotMap subscriber %r failed on version %d", callback, change.new.version
                            )
            finally:
                self._delivering.release()


def _new_token() -> type:
    return type("SnapshotVersionToken", (), {"__slots__": ()})


class SnapshotReader(Mapping[K, V]):
    """One thread's own view of a SnapshotMap, for reads that scale across threads.

    On free-threaded 3.13 every load of a shared object touches its reference
    count, so threads reading one shared snapshot slow each other down. A
    reader keeps its own copy of the current snapshot and, on every read,
    compares the map's version token (a class: free to share) with the one
    it copied at; it copies again only after a publish. Each read sees the
    latest version published before it began, as the map's own reads do.

    Make one per thread and keep it in that thread: a reader shared between
    threads is correct, but then shared, and so no faster than the map.
    """

    __slots__ = ("_data", "_map", "_seen", "_versions")

    def __init__(self, owner: SnapshotMap[K, V]) -> None:
        self._map = owner
        self._versions = owner._versions
        self._refresh()

    def _refresh(self) -> None:
        # Token first, then the snapshot: the snapshot is then at least as new as the token.
        self._seen = self._versions.token
        self._data: dict[K, V] = dict(self._map.snapshot())

    def get(self, key: K, default: Any = None) -> Any:
        if self._versions.token is not self._seen:
            self._refresh()
        return self._data.get(key, default)

    def __getitem__(self, key: K) -> V:
        if self._versions.token is not self._seen:
            self._refresh()
        return self._data[key]

    def __contains__(self, key: object) -> bool:
        if self._versions.token is not self._seen:
            self._refresh()
        return key in self._data

    def __iter__(self) -> Iterator[K]:
        return iter(self.snapshot())

    def __len__(self) -> int:
        return len(self.snapshot())

    def snapshot(self) -> Snapshot[K, V]:
        """The map's current snapshot (as SnapshotMap.snapshot)."""
        return self._map.snapshot()


def _frozen_items(content: Any, kwargs: Mapping[str, Any]) -> dict[Any, Any]:
    items = dict(content.items() if isinstance(content, Mapping) else content)
    items.update(kwargs)
    return {k: freeze(v) for k, v in items.items()}


def _rebuild(content: dict[Any, Any], history: int | None) -> SnapshotMap[Any, Any]:
    return SnapshotMap(content, history=history or 10)
