"""SnapshotMap: immutable snapshots published by one reference store.

Readers take the current snapshot with one reference load and never lock;
writers serialise on a lock, build the next snapshot off to the side and
publish it with one reference store (Go's atomic.Value, Rust's arc-swap).

The one published reference is the current snapshot's own ``dict.get``,
bound method and all: ``m.get(key)`` is then a slot load and a C call (no
Python frame), and ``snapshot()`` and ``version`` read the same reference
through its ``__self__``, so they can never disagree with ``get``.

Keys follow dict semantics everywhere (identity first, then ``==``): a write
copies the current snapshot with dict's own copy and changes only the target
key with dict's own operations, so ``del m[k]`` removes exactly the key that
``k in m`` finds, and a stored key's ``__eq__`` runs only where dict itself
would run it.

Re-entrance. User code that runs while this thread holds the writer lock (a
``transform`` function, a key's ``__hash__``/``__eq__`` during a write, a
``__del__`` run by a write) may read the map, ``history_versions()``,
``subscribe``, make a ``reader()`` or a ``handle()`` (and read through them); a write from there raises
RecursiveUpdateError and the outer write goes on (or fails) as if it had not
been tried: no deadlock, the map intact. Subscribers run outside the writer
lock and may write the map.

Asynchronous exceptions (KeyboardInterrupt, ``PyThreadState_SetAsyncExc``),
pure-Python implementation. Assuming one such exception per operation,
delivered where CPython 3.13 delivers them (function entry, loop back-edges,
right after any call returns; never between two attribute or item stores):

- every write is all-or-nothing: its publish flags every reader first
  (``Published.begin``, harmless if nothing follows), then is a run of
  attribute stores (history, current snapshot, pending delivery) with no
  delivery point inside, then ``Published.end`` in a ``finally``, so either
  the version is published completely or not at all. An exception that lands
  at the very entry of ``begin`` or ``end`` leaves the readers' sequence odd:
  readers then refresh on every read (correct, slower) until the next write
  completes;
- no lock is held afterwards: both locks are RLocks acquired inside ``try``
  and released in ``finally`` by one call that fails harmlessly when this
  thread does not own it (no ``with``, so the 3.14 window between
  ``__enter__`` and the protected block does not exist here);
- every write that returned is visible, ``history_versions()`` ends with the
  current version and is contiguous, and no reader is stale after a publish
  that completed;
- every published version is delivered to each of its subscribers exactly
  once and in order, eventually: by the end of the next write that
  completes, or by ``flush()``. A callback that the exception interrupts
  counts as having received that version (the exception is its own).

An exception that lands inside a key's ``__hash__``/``__eq__`` or a
``transform`` function is an ordinary failure of the write (nothing
published). A second asynchronous exception delivered while the first
unwinds is outside this guarantee. A ``__del__`` run by the stores drops
any asynchronous exception delivered inside it (CPython reports it as
unraisable), so the publish still completes. ``subscribe``, unsubscribing
and ``reader()`` also take effect completely or not at all (an exception
after ``subscribe`` registered the callback loses only its return value).
CPython 3.14 is untested here: the guarantee assumes it delivers at the same
kinds of points, and never between two stores.
"""

from __future__ import annotations

import array
import collections
import copy
import dataclasses
import logging
import operator
import threading
import types
from collections.abc import (
    Callable,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    MutableSequence,
    Set,
    ValuesView,
)
from itertools import compress
from typing import Any, NoReturn, TypeVar

from . import _impl
from ._base import DICT_GET_PARKS, dict_get, is_dict_miss
from ._errors import RecursiveUpdateError
from ._published import Follower, Published

__all__ = ["Change", "FrozenDict", "Snapshot", "SnapshotMap", "SnapshotMapHandle", "SnapshotReader", "freeze"]

K = TypeVar("K")
V = TypeVar("V")
_T = TypeVar("_T")

log = logging.getLogger("ftmap")

_ABSENT: Any = object()  # "no such key": never a value, never visible outside this module


# -- read-only values --------------------------------------------------------------------


_NO_KEY: Any = object()  # FrozenDict.get called without a key


def _get_misuse(d: dict[Any, Any], has_key: bool, extra: int, keywords: bool) -> TypeError:
    """dict.get's TypeError for a call with keywords or the wrong number of arguments."""
    if keywords:
        return TypeError(f"{type(d).__name__}.get() takes no keyword arguments")
    if not has_key:
        return TypeError("get expected at least 1 argument, got 0")
    return TypeError(f"get expected at most 2 arguments, got {2 + extra}")


class FrozenDict(dict[K, V]):
    """A dict that refuses every change, deep-frozen from the start.

    ``FrozenDict(content, **kwargs)`` takes what ``dict()`` takes and freezes
    every value (see freeze): a FrozenDict holds only frozen values, however
    it was built, so freeze returns one as it is. It is a real dict
    (json.dumps, ``==`` and ``dict(...)`` work as for any dict); C code that
    calls dict's methods directly (or Python code calling ``dict.__setitem__``
    on it) could still change it: it is read-only to Python code that uses the
    mapping protocol, not sealed.
    """

    __slots__ = ()

    def __new__(cls, content: Mapping[K, V] | Iterable[tuple[K, V]] = (), /, **kwargs: V) -> FrozenDict[K, V]:
        self = dict.__new__(cls)
        dict.update(self, _frozen_content(content, kwargs))
        return self

    def __init__(self, content: Mapping[K, V] | Iterable[tuple[K, V]] = (), /, **kwargs: V) -> None:
        """Filled by __new__: calling __init__ again changes nothing."""

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError(f"{type(self).__name__} is read-only")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    @classmethod
    def fromkeys(cls, iterable: Iterable[Any], value: Any = None) -> Any:
        return cls(dict.fromkeys(iterable, value))

    if DICT_GET_PARKS:
        # Free-threaded 3.13: dict.get parks a thread that reads objects another thread made
        # (ftmap._base.DICT_GET_PARKS: 9 us a call instead of 0.05), and a frozen dict is read
        # by every thread (a SnapshotMap's get is its current snapshot's get). So get is a
        # subscript here: 0.15 us from any thread. dict.get's answers and errors, one lookup.
        def get(self, key: Any = _NO_KEY, default: Any = None, /, *extra: Any, **keywords: Any) -> Any:
            """Return the value for key if key is in the dictionary, else default."""
            if key is _NO_KEY or extra or keywords:
                raise _get_misuse(self, key is not _NO_KEY, len(extra), bool(keywords))
            try:
                return self[key]
            except KeyError as error:
                if is_dict_miss(error, key):  # not a KeyError of the key's own __hash__/__eq__
                    return default
                raise

        def __init_subclass__(cls, **kwargs: Any) -> None:
            super().__init_subclass__(**kwargs)
            if hasattr(cls, "__missing__") and "get" not in cls.__dict__:
                # A subscript would call __missing__, which dict.get never does.
                cls.get = dict.get  # type: ignore[assignment, method-assign]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict.__repr__(self)})"

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (dict(self),))

    def __copy__(self) -> FrozenDict[K, V]:
        return self  # immutable: a copy is the same value

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenDict[K, V]:
        return self


class Snapshot(FrozenDict[K, V]):
    """One version of a SnapshotMap's content: read-only forever, ``version`` attached (read-only too)."""

    __slots__ = ("version",)

    version: int

    def __new__(cls, content: Mapping[K, V] | Iterable[tuple[K, V]] = (), version: int = 0) -> Snapshot[K, V]:
        self = dict.__new__(cls)
        dict.update(self, _frozen_content(content, {}))
        _set_version(self, version)
        return self

    def __init__(self, content: Mapping[K, V] | Iterable[tuple[K, V]] = (), version: int = 0) -> None:
        """Filled by __new__: calling __init__ again changes nothing."""

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is read-only: cannot set {name!r}")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is read-only: cannot delete {name!r}")

    def __repr__(self) -> str:
        return f"Snapshot(version={self.version}, {dict.__repr__(self)})"

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (dict(self), self.version))


# The version slot's own setter: the only way this module sets it (Snapshot.__setattr__ refuses).
_set_version: Callable[[Snapshot[Any, Any], int], None] = Snapshot.version.__set__  # type: ignore[attr-defined]


def _snapshot_of(content: Mapping[Any, Any]) -> Snapshot[Any, Any]:
    """A new, private Snapshot holding content's items (already frozen); one dict copy."""
    new: Snapshot[Any, Any] = dict.__new__(Snapshot)
    dict.update(new, content)
    return new


def _frozen_dict_of(content: dict[Any, Any]) -> FrozenDict[Any, Any]:
    new: FrozenDict[Any, Any] = dict.__new__(FrozenDict)
    dict.update(new, content)
    return new


# Exact types whose instances are immutable and hold nothing mutable: freeze returns them at once.
_ATOMS = frozenset(
    {type(None), bool, int, float, complex, str, bytes, range, type(...), type(NotImplemented)}
)
_IN_PROGRESS: Any = object()  # a memo entry for a value being frozen: met again, it contains itself


def freeze(value: Any) -> Any:
    """A read-only deep copy of value: what a SnapshotMap publishes.

    - Immutable atoms (None, bool, int, float, complex, str, bytes, range) and
      FrozenDict (frozen by construction) are returned as they are.
    - Any other Mapping becomes a FrozenDict of frozen values (keys are kept:
      they are hashable already).
    - list, deque, array.array, any other MutableSequence and a mapping's
      values() view become tuples.
    - set and any other collections.abc.Set become frozensets.
    - bytearray and memoryview become bytes (a memoryview's bytes, whatever its format).
    - tuple, frozenset, a namedtuple and a frozen dataclass keep their type with
      frozen items or fields (returned as they are when nothing inside changes);
      a tuple subclass that is not a namedtuple becomes a plain tuple when an
      item changes.
    - Anything else (instances of other classes, non-frozen dataclasses
      included) is published by reference: freeze cannot make it immutable, so
      readers share it. Publish only immutable objects if readers must never
      see them change.

    One object reached twice is frozen once (a DAG stays a DAG, in linear time).
    A value that contains itself, or is nested deeper than the recursion limit
    allows, raises ValueError.
    """
    if type(value) in _ATOMS:
        return value
    try:
        return _freeze(value, {})
    except RecursionError:
        raise ValueError("cannot freeze a value nested more deeply than the recursion limit allows") from None


def _freeze(value: Any, memo: dict[int, tuple[Any, Any]]) -> Any:  # noqa: PLR0912  (one branch a kind)
    """freeze, with memo: id(original) -> (original, frozen or _IN_PROGRESS). The memo keeps
    every original alive, so that an id is never reused during one freeze."""
    kind = type(value)
    if kind in _ATOMS:
        return value
    key = id(value)
    seen = memo.get(key)
    if seen is not None:
        if seen[1] is _IN_PROGRESS:
            raise ValueError(f"cannot freeze a value that contains itself (a {kind.__name__} inside itself)")
        return seen[1]
    memo[key] = (value, _IN_PROGRESS)
    frozen: Any
    if isinstance(value, FrozenDict):
        frozen = value
    elif kind is dict or isinstance(value, Mapping):
        frozen = _frozen_dict_of({k: _freeze(v, memo) for k, v in value.items()})
    elif isinstance(value, tuple):
        items = tuple([_freeze(v, memo) for v in value])
        if all(map(operator.is_, items, value)):
            frozen = value
        elif kind is not tuple and callable(getattr(kind, "_make", None)) and hasattr(kind, "_fields"):
            frozen = kind._make(items)  # a namedtuple: its type and field names kept
        else:
            frozen = items
    elif isinstance(value, bytearray | memoryview):
        frozen = value.tobytes() if isinstance(value, memoryview) else bytes(value)
    elif isinstance(value, list | collections.deque | array.array | MutableSequence | ValuesView):
        frozen = tuple([_freeze(v, memo) for v in value])
    elif isinstance(value, Set):
        members = [_freeze(v, memo) for v in value]
        unchanged = kind is frozenset and all(map(operator.is_, members, value))
        frozen = value if unchanged else frozenset(members)
    elif getattr(getattr(kind, "__dataclass_params__", None), "frozen", False):  # a frozen dataclass instance
        frozen = _freeze_frozen_dataclass(value, memo)
    else:
        frozen = value
    memo[key] = (value, frozen)
    return frozen


def _freeze_frozen_dataclass(value: Any, memo: dict[int, tuple[Any, Any]]) -> Any:
    changed = {}
    for field in dataclasses.fields(value):
        try:
            before = getattr(value, field.name)
        except AttributeError:  # a slot never set
            continue
        after = _freeze(before, memo)
        if after is not before:
            changed[field.name] = after
    if not changed:
        return value
    clone = copy.copy(value)
    for name, after in changed.items():
        object.__setattr__(clone, name, after)  # as dataclasses itself sets a frozen instance's fields
    return clone


def _frozen_content(content: Any, kwargs: Mapping[str, Any]) -> Mapping[Any, Any]:
    """content and kwargs as dict(content, **kwargs) would merge them, every value frozen
    (one memo for all). A FrozenDict without kwargs is returned as it is: it is frozen."""
    if isinstance(content, FrozenDict) and not kwargs:
        return content
    pairs = content.items() if isinstance(content, Mapping) else dict(content).items()
    memo: dict[int, tuple[Any, Any]] = {}
    try:
        frozen = {k: _freeze(v, memo) for k, v in pairs}
        for k, v in kwargs.items():
            frozen[k] = _freeze(v, memo)
    except RecursionError:
        raise ValueError("cannot freeze a value nested more deeply than the recursion limit allows") from None
    return frozen


# -- changes -------------------------------------------------------------------------------


class Change:
    """What one publish changed: the two snapshots, and the keys added, removed and changed.

    ``added``, ``removed`` and ``changed`` are frozensets of keys, computed on
    first access (in the thread that reads them) and kept, so publishing never
    compares values. Keys are found with dict semantics. A key is in
    ``changed`` when it is in both snapshots and its two values are not the same
    object and do not compare equal; a value whose ``==`` raises, or returns
    something without a truth value, counts as changed. A key whose lookup in
    the other snapshot raises (its or a colliding key's ``__eq__``) counts as
    not found there: removed from old, added in new.
    """

    __slots__ = ("_diff", "new", "old")

    old: Snapshot[Any, Any]
    new: Snapshot[Any, Any]
    _diff: tuple[frozenset[Any], frozenset[Any], frozenset[Any]] | None

    def __init__(
        self,
        old: Snapshot[Any, Any],
        new: Snapshot[Any, Any],
        added: Iterable[Any] | None = None,
        removed: Iterable[Any] | None = None,
        changed: Iterable[Any] | None = None,
    ) -> None:
        given = added is not None or removed is not None or changed is not None
        diff = (frozenset(added or ()), frozenset(removed or ()), frozenset(changed or ())) if given else None
        object.__setattr__(self, "old", old)
        object.__setattr__(self, "new", new)
        object.__setattr__(self, "_diff", diff)

    @classmethod
    def between(cls, old: Snapshot[Any, Any], new: Snapshot[Any, Any]) -> Change:
        return cls(old, new)

    def _computed(self) -> tuple[frozenset[Any], frozenset[Any], frozenset[Any]]:
        diff = self._diff
        if diff is None:
            diff = _diff(self.old, self.new)
            object.__setattr__(self, "_diff", diff)  # two threads may both compute it: equal results
        return diff

    @property
    def added(self) -> frozenset[Any]:
        return self._computed()[0]

    @property
    def removed(self) -> frozenset[Any]:
        return self._computed()[1]

    @property
    def changed(self) -> frozenset[Any]:
        return self._computed()[2]

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> NoReturn:
        raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Change):
            return NotImplemented
        return (self.old, self.new, self._computed()) == (other.old, other.new, other._computed())

    __hash__ = None  # type: ignore[assignment]  # snapshots are unhashable

    def __repr__(self) -> str:
        return (
            f"Change(version {self.old.version} -> {self.new.version}, added={set(self.added)!r}, "
            f"removed={set(self.removed)!r}, changed={set(self.changed)!r})"
        )


def _same(a: object, b: object) -> bool:
    try:
        return bool(a == b)
    except Exception:  # a raising == (or a result with no truth value): counted as changed
        return False


def _diff(
    old: Snapshot[Any, Any], new: Snapshot[Any, Any]
) -> tuple[frozenset[Any], frozenset[Any], frozenset[Any]]:
    try:
        added = frozenset(new.keys() - old.keys())
        removed = frozenset(old.keys() - new.keys())
        # Values that are not the very same object, found in C; then, in Python, only those.
        candidates = list(compress(new.keys(), map(operator.is_not, map(old.get, new.keys()), new.values())))
    except Exception:  # a key whose lookup raises: the slow way, key by key
        added, removed = _missing_keys(new, old), _missing_keys(old, new)
        candidates = list(new.keys())
    changed = []
    for key in candidates:
        try:
            before = dict_get(old, key, _ABSENT)
        except Exception:
            continue  # not found in old: counted in added
        after = new[key]
        if before is not _ABSENT and before is not after and not _same(before, after):
            changed.append(key)
    return added, removed, frozenset(changed)


def _missing_keys(source: Snapshot[Any, Any], other: Snapshot[Any, Any]) -> frozenset[Any]:
    missing = []
    for key in source:
        try:
            found = key in other
        except Exception:
            found = False
        if not found:
            missing.append(key)
    return frozenset(missing)


# -- the map -------------------------------------------------------------------------------


class _Subscription:
    """One subscribe() call. active: True until its unsubscribe function runs (set once, by it)."""

    __slots__ = ("active", "callback")

    def __init__(self, callback: Callable[[Change], object]) -> None:
        self.callback = callback
        self.active = True


class _Pending:
    """A published version waiting for delivery: a link in the map's delivery chain.

    change, subscriptions: set before the node is linked; cleared (None, ()) once
      delivered, so that a delivered node holds no snapshot.
    next: None until the next pending version is linked after it (once, under the writer lock).
    done: how many of subscriptions have been called for it (only the deliverer writes it,
      counting each call before making it, so no callback is called twice for one version).
    """

    __slots__ = ("change", "done", "next", "subscriptions")

    def __init__(self, change: Change | None, subscriptions: tuple[_Subscription, ...]) -> None:
        self.change = change
        self.subscriptions = subscriptions
        self.next: _Pending | None = None
        self.done = 0


class SnapshotMap(MutableMapping[K, V]):
    """A map whose whole content is one immutable snapshot, replaced as a whole by every write.

    Reads (``m[k]``, ``get``, ``in``, ``len``, iteration, the views,
    ``history_versions()``) each use one snapshot and take no lock; iteration
    never raises, whatever writers do. ``snapshot()`` returns that snapshot (a
    read-only dict with its read-only ``version``), so multi-key reads from it
    are consistent: never torn.

    Every write publishes exactly one new version, under a writer lock, or
    nothing if it fails: ``m[k] = v``, ``del m[k]``, ``update`` (one version for
    the batch), ``replace``, ``compare_and_replace`` (a stale writer never
    overwrites a newer version), ``transform``, ``rollback``, ``clear``,
    ``pop``, ``popitem``, ``setdefault`` (atomic). Keys follow dict semantics
    (``del m[k]`` removes exactly the key ``k in m`` finds, NaN included).
    Values are deep-frozen on publish (see freeze). The last ``history``
    snapshots are kept for ``rollback``.

    Subscribers get a Change after each publish, in version order, one at a
    time, outside the writer lock: each version published after ``subscribe()``
    returned, once, until its unsubscribe function returns. One that raises an
    Exception is logged (logger "ftmap") and the others still run; a
    BaseException (KeyboardInterrupt, SystemExit) stops that delivery and
    propagates out of the write or ``flush()`` that was delivering (the write
    itself was published); the callback that raised has received that version,
    and the rest is delivered by the next write or ``flush()``.

    User code run under the writer lock (a ``transform`` function, a key's
    ``__hash__``/``__eq__``) may read the map but not write it: that raises
    RecursiveUpdateError, the map intact. The module docstring states the
    guarantee under asynchronous exceptions.
    """

    __slots__ = (
        "__weakref__",
        "_delivered",
        "_delivering",
        "_history",
        "_history_size",
        "_lock",
        "_published",
        "_subscribers",
        "_tail",
        "_writing",
        "get",
    )

    # get: the current snapshot's own dict.get (a bound method). The one published
    #   reference: replaced, under _lock, by one store; read without any lock.
    #   get.__self__ is the current Snapshot.
    # _lock: an RLock that serialises writers (and subscribe/unsubscribe/reader registration,
    #   which may nest inside a write's user code). A write first checks _lock._is_owned():
    #   a write from inside a write raises RecursiveUpdateError instead of nesting.
    #   The lock protocol (both locks), safe against one asynchronous exception anywhere:
    #     try: lock.acquire() ... finally: try: lock.release() / except RuntimeError: pass
    #   The acquire is inside try, so an exception right after it returns still reaches the
    #   release. The release is one call that fails harmlessly when this thread does not
    #   own the lock (the acquire never ran, or a blocked acquire was interrupted), written
    #   inline: a helper's entry would be a delivery point before the release. No with
    #   statement: 3.14 delivers between __enter__ and the protected block.
    # _writing: under _lock: the name of the write holding it (for RecursiveUpdateError).
    # _history: a tuple of the last snapshots published, oldest first, newest = current.
    #   Replaced under _lock, stored before get, so that a reader that loads get and then
    #   _history finds the current snapshot in it. Read without a lock.
    # _history_size: the history's length limit; never changes.
    # _subscribers: a tuple of _Subscription, replaced under _lock; read under _lock.
    # _tail: under _lock: the last node of the delivery chain; a publish with subscribers
    #   links its node after it, then moves it.
    # _delivered: the last node whose delivery is finished. Read by anyone (its .next says
    #   whether something is pending); moved forward only by the thread holding _delivering.
    # _delivering: an RLock held by the one thread delivering changes, in chain order.
    # _published: the followers' side of `get` (ftmap._published): every SnapshotReader is a
    #   Follower of the current snapshot. A publish calls its begin() (every follower flagged)
    #   before storing get, and its end() after, in a finally; both under _lock.

    get: Callable[..., Any]

    def __init__(
        self, content: Mapping[K, V] | Iterable[tuple[K, V]] = (), /, *, history: int = 10, **kwargs: V
    ) -> None:
        if isinstance(history, bool) or not isinstance(history, int) or history < 1:
            raise ValueError(f"history must be an int >= 1, not {history!r}")
        first: Snapshot[K, V] = _snapshot_of(_frozen_content(content, kwargs))
        _set_version(first, 1)
        self._lock = threading.RLock()
        self._writing = ""
        self._history: tuple[Snapshot[K, V], ...] = (first,)
        self._history_size = history
        self._subscribers: tuple[_Subscription, ...] = ()
        self._tail = self._delivered = _Pending(None, ())
        self._delivering = threading.RLock()
        self._published: Published[Snapshot[K, V]] = Published(_current_snapshot)
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
        return type(self)(self.snapshot(), history=self._history_size)

    __copy__ = copy

    def __reduce__(self) -> tuple[object, ...]:
        return _impl.reduce(self, "SnapshotMap", (dict(self.snapshot()),), {"history": self._history_size})

    def history_versions(self) -> list[int]:
        """The versions kept for rollback, oldest first; the last is the current version.

        Takes no lock: it may be called from anywhere, a transform function included."""
        current = self.get.__self__.version  # type: ignore[attr-defined]
        # _history is stored before get: loaded after get, it holds the current version
        # (and, during a publish, perhaps the next one, left out here).
        return [s.version for s in self._history if s.version <= current]

    # -- writes: each publishes one version ----------------------------------------------

    def _write(self, operation: str, build: Callable[[Snapshot[K, V]], Snapshot[K, V] | None]) -> int:
        """Under the writer lock, build the next snapshot (private, version unset) from the
        current one and publish it; return the new version. build returns None to publish
        nothing; the current version is then returned."""
        lock = self._lock
        if lock._is_owned():  # type: ignore[attr-defined]
            raise RecursiveUpdateError(type(self).__name__, operation, self._writing)
        try:
            lock.acquire()
            self._writing = operation
            current: Snapshot[K, V] = self.get.__self__  # type: ignore[attr-defined]
            new = build(current)
            if new is None:
                version: int = current.version
            else:
                # Everything that calls (and so may be interrupted) comes first ...
                version = current.version + 1
                _set_version(new, version)
                history = self._history
                kept = history[1:] if len(history) >= self._history_size else history
                new_history = (*kept, new)
                subscriptions = self._subscribers
                node = _Pending(Change(current, new), subscriptions) if subscriptions else None
                published = self._published
                # ... then the publish: every reader flagged (begin), then stores only, no
                # delivery point between them, then end() in a finally (see the module docstring).
                # (history, current and the dropped nodes stay referenced by locals: nothing
                # is freed, so no __del__ runs, until the lock is released.)
                try:
                    published.begin()
                    self._history = new_history
                    self.get = new.get
                    if node is not None:
                        self._tail.next = node
                        self._tail = node
                finally:
                    published.end()
        finally:
            try:  # noqa: SIM105  (the lock protocol: see _lock)
                lock.release()
            except RuntimeError:
                pass
        if self._delivered.next is not None:
            self._deliver()
        return version

    def replace(self, content: Mapping[K, V] | Iterable[tuple[K, V]] = (), /, **kwargs: V) -> int:
        """Make content the whole content; return the new version."""
        new = _snapshot_of(_frozen_content(content, kwargs))
        return self._write("replace", lambda current: new)

    def compare_and_replace(self, expected_version: int, content: Mapping[K, V]) -> bool:
        """replace, but only if the current version is still expected_version; True if published."""
        new = _snapshot_of(_frozen_content(content, {}))
        published = False

        def build(current: Snapshot[K, V]) -> Snapshot[K, V] | None:
            nonlocal published
            published = current.version == expected_version
            return new if published else None

        self._write("compare_and_replace", build)
        return published

    def transform(self, fn: Callable[[Snapshot[K, V]], Mapping[K, V]]) -> int:
        """Publish fn(current snapshot) as the new content, fn running under the writer lock.

        fn may read this map (it sees the current version) but not write it
        (RecursiveUpdateError); if fn raises, nothing is published."""
        return self._write("transform", lambda current: _snapshot_of(_frozen_content(fn(current), {})))

    def rollback(self, version: int) -> int:
        """Republish the content of an earlier version (still in history) as a new version."""

        def build(current: Snapshot[K, V]) -> Snapshot[K, V]:
            for kept in self._history:
                if kept.version == version:
                    return _snapshot_of(kept)
            raise ValueError(f"version {version} is not in the history (kept: {self.history_versions()})")

        return self._write("rollback", build)

    def __setitem__(self, key: K, value: V) -> None:
        frozen = freeze(value)

        def build(current: Snapshot[K, V]) -> Snapshot[K, V]:
            new = _snapshot_of(current)
            dict.__setitem__(new, key, frozen)
            return new

        self._write("set", build)

    def __delitem__(self, key: K) -> None:
        def build(current: Snapshot[K, V]) -> Snapshot[K, V]:
            new = _snapshot_of(current)
            dict.__delitem__(new, key)  # KeyError(key) if absent, exactly as a dict
            return new

        self._write("delete", build)

    def update(self, other: Any = (), /, **kwargs: V) -> None:
        """Set every item given: one version for the whole batch."""
        items = _frozen_content(other, kwargs)

        def build(current: Snapshot[K, V]) -> Snapshot[K, V]:
            new = _snapshot_of(current)
            dict.update(new, items)
            return new

        self._write("update", build)

    def setdefault(self, key: K, default: V = None, /) -> V:  # type: ignore[assignment]
        """Atomic: the value for key, or default published and returned."""
        frozen = freeze(default)
        taken: Any = None

        def build(current: Snapshot[K, V]) -> Snapshot[K, V] | None:
            nonlocal taken
            value = dict_get(current, key, _ABSENT)
            if value is not _ABSENT:
                taken = value
                return None
            new = _snapshot_of(current)
            dict.__setitem__(new, key, frozen)
            taken = frozen
            return new

        self._write("setdefault", build)
        return taken  # type: ignore[no-any-return]

    def pop(self, key: K, *default: Any) -> Any:
        if len(default) > 1:
            raise TypeError(f"pop expected at most 2 arguments, got {1 + len(default)}")
        taken: Any = None

        def build(current: Snapshot[K, V]) -> Snapshot[K, V] | None:
            nonlocal taken
            # Look first, so that popping an absent key with a default copies nothing; an
            # empty content looks at no key (as dict.pop, which never hashes it then).
            value = dict_get(current, key, _ABSENT) if current else _ABSENT
            if value is not _ABSENT:
                new = _snapshot_of(current)
                value = dict.pop(new, key, _ABSENT)
                if value is not _ABSENT:  # (absent only if the key's __eq__ changed its mind)
                    taken = value
                    return new
            if not default:
                raise KeyError(key)
            taken = default[0]
            return None

        self._write("pop", build)
        return taken

    def popitem(self) -> tuple[K, V]:
        """Remove and return the last item inserted (as dict.popitem)."""
        taken: Any = None

        def build(current: Snapshot[K, V]) -> Snapshot[K, V]:
            nonlocal taken
            if not current:
                raise KeyError("popitem(): SnapshotMap is empty")
            new = _snapshot_of(current)
            taken = dict.popitem(new)
            return new

        self._write("popitem", build)
        return taken  # type: ignore[no-any-return]

    def clear(self) -> None:
        """Publish an empty content (one version)."""
        self._write("clear", lambda current: _snapshot_of({}))

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

    # -- per-thread readers ------------------------------------------------------------

    def reader(self) -> SnapshotReader[K, V]:
        """A reader for the calling thread to keep: reads that scale across threads (see SnapshotReader)."""
        return SnapshotReader(self)

    def handle(self) -> SnapshotMapHandle[K, V]:
        """A handle for the calling thread to keep: the whole API, scaling reads (see SnapshotMapHandle)."""
        return SnapshotMapHandle(self)

    # -- change callbacks --------------------------------------------------------------

    def subscribe(self, callback: Callable[[Change], object]) -> Callable[[], None]:
        """Call callback(change) for every version published from now on; returns the
        unsubscribe function (idempotent). Subscribing twice means two calls per version."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        subscription = _Subscription(callback)
        lock = self._lock
        try:
            lock.acquire()
            self._subscribers = (*self._subscribers, subscription)
        finally:
            try:  # noqa: SIM105  (the lock protocol: see _lock)
                lock.release()
            except RuntimeError:
                pass

        def unsubscribe() -> None:
            subscription.active = False  # first: no call starts after this
            try:
                lock.acquire()
                self._subscribers = tuple(s for s in self._subscribers if s is not subscription)
            finally:
                try:  # noqa: SIM105  (the lock protocol: see _lock)
                    lock.release()
                except RuntimeError:
                    pass

        return unsubscribe

    def flush(self) -> bool:
        """Deliver, on this thread, every change still pending (normally none: each write
        delivers its own; an asynchronous exception or a callback's BaseException can leave
        some). True if none is pending when it returns; False if another thread is
        delivering them, or if called from inside a callback or a write (they are then
        delivered when that ends)."""
        if self._lock._is_owned():  # type: ignore[attr-defined]
            return False  # never run callbacks under the writer lock
        return self._deliver()

    def _deliver(self) -> bool:
        # One thread at a time delivers, in publish order. A thread that finds another
        # delivering leaves its change to it, and that one looks again after releasing
        # _delivering: the release and a publisher's failed try-acquire are atomic
        # operations on one lock, so one of the two sees the other's work.
        lock = self._delivering
        while self._delivered.next is not None:
            if lock._is_owned():  # type: ignore[attr-defined]
                return False  # from inside a callback: the delivery below us goes on
            try:
                if not lock.acquire(False):
                    return False
                self._deliver_lock_held()
            finally:
                try:  # noqa: SIM105  (the lock protocol: see _lock)
                    lock.release()
                except RuntimeError:
                    pass
        return True

    def _deliver_lock_held(self) -> None:
        node = self._delivered
        while (pending := node.next) is not None:
            change, subscriptions = pending.change, pending.subscriptions
            while (done := pending.done) < len(subscriptions):
                pending.done = done + 1  # counted before the call: never called twice
                subscription = subscriptions[done]
                if subscription.active:
                    try:
                        subscription.callback(change)  # type: ignore[arg-type]
                    except Exception:
                        log.exception(
                            "SnapshotMap subscriber %r failed on version %d",
                            subscription.callback,
                            change.new.version,  # type: ignore[union-attr]
                        )
            pending.change, pending.subscriptions = None, ()
            self._delivered = node = pending


_current_snapshot: Callable[[SnapshotMap[Any, Any]], Snapshot[Any, Any]] = operator.attrgetter("get.__self__")


def _follow(snapshot: Snapshot[Any, Any]) -> tuple[Any, ...]:
    """A follower's cell entries for snapshot: its own dict methods, bound by the thread that
    refreshes (so that calling them never touches the shared snapshot's reference count)."""
    return (snapshot.__getitem__, snapshot.__contains__)


class _Following(Follower[Any]):
    """The reads of SnapshotReader and SnapshotMapHandle: a Follower (ftmap._published) of the
    map's current snapshot, whose cell is::

        [stale, snapshot, snapshot.__getitem__, snapshot.__contains__]

    the bound methods made by the thread that refreshed (calling them touches no shared
    reference count; the snapshot is immutable, so nothing is copied). A read loads the cell
    once, refreshes if the cell is flagged, and answers from that cell: it is linearized at
    the flag test, or at the refresh's load of the current snapshot (the proof is
    ftmap._published's).
    """

    __slots__ = ()

    def __getitem__(self, key: Any) -> Any:
        cell = self.cell
        if cell[0]:
            cell = self.refresh()
        return cell[2](key)

    def get(self, key: Any, default: Any = None) -> Any:
        cell = self.cell
        if cell[0]:
            cell = self.refresh()
        try:
            # d[key], not d.get: on 3.13t dict.get takes the shared snapshot's critical
            # section, a lookup by d[key] does not. One lookup either way (a key's __hash__
            # and __eq__ run exactly as often as in dict.get).
            return cell[2](key)
        except KeyError as error:
            # Raised by the lookup itself: the key is missing. Raised by the key's own
            # __hash__/__eq__: theirs.
            if is_dict_miss(error, key):
                return default
            raise

    def __contains__(self, key: object) -> bool:
        cell = self.cell
        if cell[0]:
            cell = self.refresh()
        return cell[3](key)  # type: ignore[no-any-return]

    def snapshot(self) -> Snapshot[Any, Any]:
        """The map's current snapshot (as SnapshotMap.snapshot)."""
        cell = self.cell
        if cell[0]:
            cell = self.refresh()
        return cell[1]  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.snapshot())

    def __len__(self) -> int:
        return len(self.snapshot())

    def keys(self) -> Any:
        return self.snapshot().keys()

    def values(self) -> Any:
        return self.snapshot().values()

    def items(self) -> Any:
        return self.snapshot().items()


_FOLLOWING_METHODS = ["__getitem__", "get", "__contains__", "snapshot", "__iter__", "__len__", "keys"]
_FOLLOWING_METHODS += ["values", "items"]


def _own_reads(cls: type[_T]) -> type[_T]:
    """Give cls its own copies of _Following's read methods, named as cls's (so that an error
    says ``SnapshotReader.get()``, as the C class's does)."""
    for name in _FOLLOWING_METHODS:
        fn = _Following.__dict__[name]
        qualname = f"{cls.__qualname__}.{name}"
        copy_ = types.FunctionType(
            fn.__code__.replace(co_qualname=qualname), fn.__globals__, name, fn.__defaults__, fn.__closure__
        )
        copy_.__qualname__ = qualname
        copy_.__doc__ = fn.__doc__
        copy_.__annotations__ = fn.__annotations__
        setattr(cls, name, copy_)
    return cls


@_own_reads
class SnapshotReader(_Following, Mapping[K, V]):
    """One thread's own view of a SnapshotMap, for reads that scale across threads.

    On free-threaded 3.13 every load of a shared object touches its reference
    count, so threads reading one shared snapshot slow each other down. A
    reader keeps, in a cell of its own, bound methods of the current snapshot
    made by its own thread, and a stale flag that every publish sets before
    it stores the new snapshot (ftmap._published: the map knows its live
    readers); a read checks the flag and, only after a publish, takes the new
    snapshot (no copy: snapshots are immutable). Each read sees the latest
    version published before it began, as the map's own reads do, and no
    two readers can see a new version and then an older one, also after an
    asynchronous exception anywhere in a publish or a refresh.

    Make one per thread and keep it in that thread: a reader shared between
    threads is correct, but then shared, and so no faster than the map.
    """

    __slots__ = ()

    def __init__(self, owner: SnapshotMap[K, V]) -> None:
        Follower.__init__(self, owner._published, owner, _follow)

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"cannot pickle a {type(self).__name__}: it belongs to its thread (pickle its map)")


@_own_reads
class SnapshotMapHandle(_Following, MutableMapping[K, V]):
    """One thread's handle on a SnapshotMap: the map's whole API, reads that scale across threads.

    Reads (``h[k]``, ``get``, ``in``, ``snapshot()``, ``version``, ``len``,
    iteration, the views) are a SnapshotReader's: through bound methods of
    the current snapshot that the handle's own thread made, behind a stale
    flag that every publish sets before it stores the new snapshot, so they
    touch no shared reference count while nothing is published. Writes
    (``h[k] = v``, ``del``, ``pop``, ``popitem``, ``setdefault``, ``update``,
    ``replace``, ``compare_and_replace``, ``transform``, ``rollback``,
    ``clear``) and everything else (``subscribe``, ``flush``,
    ``history_versions``, ``copy``, ``==``) are the map's own (``h.map``):
    same results, errors, versions and callbacks. Read-your-writes: a write
    that published flagged this handle before its store, so the handle's
    next read takes the new snapshot.

    Make one per thread (``m.handle()``) and keep it in that thread. A handle
    used from several threads keeps every guarantee (each operation is
    linearizable, its reads are never older than a finished write), but it
    is then a shared object, no faster than the map. A handle cannot be
    pickled (it belongs to its thread): pickle ``h.map``.
    """

    __slots__ = ()

    def __init__(self, owner: SnapshotMap[K, V]) -> None:
        Follower.__init__(self, owner._published, owner, _follow)

    @property
    def map(self) -> SnapshotMap[K, V]:
        """The map this handle reads and writes."""
        return self._owner  # type: ignore[no-any-return]

    @property
    def version(self) -> int:
        """The current version (as SnapshotMap.version)."""
        return self.snapshot().version

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"cannot pickle a {type(self).__name__}: it belongs to its thread (pickle h.map)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.map!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SnapshotMapHandle):
            other = other.map
        return self.map == other

    __hash__ = None  # type: ignore[assignment]

    # -- writes and whole-map operations: the map's own ------------------------------------

    def __setitem__(self, key: K, value: V) -> None:
        self.map[key] = value

    def __delitem__(self, key: K) -> None:
        del self.map[key]

    def pop(self, key: K, *default: Any) -> Any:
        return self.map.pop(key, *default)

    def popitem(self) -> tuple[K, V]:
        return self.map.popitem()

    def setdefault(self, key: K, default: V = None, /) -> V:  # type: ignore[assignment]
        return self.map.setdefault(key, default)

    def update(self, other: Any = (), /, **kwargs: V) -> None:
        self.map.update(other, **kwargs)

    def clear(self) -> None:
        self.map.clear()

    def replace(self, content: Mapping[K, V] | Iterable[tuple[K, V]] = (), /, **kwargs: V) -> int:
        return self.map.replace(content, **kwargs)

    def compare_and_replace(self, expected_version: int, content: Mapping[K, V]) -> bool:
        return self.map.compare_and_replace(expected_version, content)

    def transform(self, fn: Callable[[Snapshot[K, V]], Mapping[K, V]]) -> int:
        return self.map.transform(fn)

    def rollback(self, version: int) -> int:
        return self.map.rollback(version)

    def history_versions(self) -> list[int]:
        return self.map.history_versions()

    def subscribe(self, callback: Callable[[Change], object]) -> Callable[[], None]:
        return self.map.subscribe(callback)

    def flush(self) -> bool:
        return self.map.flush()

    def copy(self) -> SnapshotMap[K, V]:
        return self.map.copy()


def _rebuild(content: dict[Any, Any], history: int | None) -> SnapshotMap[Any, Any]:
    return SnapshotMap(content, history=history or 10)
