"""A reference that writers replace and per-thread handles follow without touching it.

Why: on free-threaded 3.13 every load of an object shared between threads writes its
reference count, so N threads reading one shared structure (SnapshotMap's snapshot,
SyncMap's read map) run no faster than one. A per-thread handle instead keeps, in a
*cell* of its own, bound methods of the current structure (a bound method made by the
handle's thread belongs to that thread, and calling it never touches its ``__self__``'s
count) and a stale flag that every writer sets. While nothing is published a read costs
one load of the handle's own cell, one flag test and the call.

The owner keeps its own attribute (``SyncMap._read``, ...) and its own reads of it: one
attribute load is a linearizable read of the current object. ``Published`` adds the
writers' side (``begin``/``end`` around the owner's store) and the followers' registry;
it holds no reference to the owner (``load(owner)`` reads the attribute).

Protocol. ``seq`` is even while no publish is in progress.
- Writer (the owner serialises writers with its own lock)::

      begin:  seq becomes odd; set cell[0] = True in every registered cell
      the owner stores the new object in its attribute
      end:    seq becomes even (in a finally)

- Follower refresh (serialised per follower by the follower's own lock)::

      register a new cell C (flagged)      R
      s1 = seq                             S1
      v = load(owner); fill C from v       L
      C[0] = False                         F
      s2 = seq                             S2
      if s1 is odd or s1 != s2: C[0] = True
      follower.cell = C; unregister the old cell

- A read through a cell whose flag is clear returns from that cell's object; a read
  that finds the flag set refreshes and answers from the object it loaded at L.

Claim: a read through a cell is linearizable with every publish and every read of the
owner's attribute (no new/old inversion between threads). It suffices that a cell C
whose flag is clear never holds an object older than the attribute's current one, i.e.
for every publish W that stores after C's L: C's flag is set at W's store. W's begin
flags every cell registered before its flag loop, before W stores. Cases on W's begin:
(a) its flag loop saw C (C registered before it): C[0] = True before W's store; C's own
clear F comes after R. If F came after W's flag, then W's begin (seq odd) happened
before S2: either S1 already saw seq odd or S1 != S2, so C is flagged again after S2,
before anyone can use C (C is published on the follower after S2). (b) its flag loop
did not see C: the loop ran before R, so seq was made odd before R < S1: S1 is odd, or W
ended before S1 (then W's store precedes L, so v is W's object or newer: nothing to
flag). In every case a clear flag after S2 means no publish stored between L and the
moment the flag is next set. The object read at L was current at L, so a read answered
from it is linearized at L (or, for later reads with the flag still clear, at the read
itself: no publish has stored since L).

Assumptions: each list item store and load, each attribute store and load, is atomic in
the free-threaded interpreter; the orders the proof uses between a list item store and a
later attribute load (F before S2; a flag before a store) are the critical sections'
sequentially consistent read-modify-writes (list stores take the list's per-object
mutex) and total store order on x86-64; the GIL build serialises everything anyway.

Cost: a publish flags every live follower (O(followers), under the owner's writer lock);
a refresh is O(1) (bound methods, no copy), taken once per follower per publish.

Asynchronous exceptions: a lost ``end()`` leaves seq odd, which keeps followers on the
refresh path (correct, slower) until the next publish's ``end()``: ``begin()`` keeps an
odd seq odd. A refresh interrupted before it publishes its cell leaves the old cell
(flagged) in place and unregisters the new one.
"""

from __future__ import annotations

from _thread import RLock
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

__all__ = ["Follower", "Published"]

T = TypeVar("T")


class Published(Generic[T]):
    """The writers' side: ``begin()``, the owner's store, ``end()``; and the followers' registry."""

    __slots__ = ("_cells", "_load", "_seq")

    # _load: load(owner) -> the owner's current object; set once.
    # _seq: even while no publish is in progress; written by writers only (serialised by the
    #   owner), read by followers' refreshes.
    # _cells: id(cell) -> cell of every live follower's current (or in-flight) cell. Inserted
    #   and removed by followers, listed by writers (dict operations are atomic).

    def __init__(self, load: Callable[[Any], T]) -> None:
        self._load = load
        self._seq = 0
        self._cells: dict[int, list[Any]] = {}

    def begin(self) -> None:
        """Before the owner stores a new object: flag every follower (writers serialised)."""
        seq = self._seq
        self._seq = seq + 1 if seq % 2 == 0 else seq + 2
        # list(d.values()), not d.copy(): both are atomic (one critical section), but on
        # free-threaded 3.13 dict.copy() of a dict with many deleted slots (every refresh pops
        # a cell) merges under a second, nested critical section on the same dict, and that
        # parks the writer: about 10 us a publish (benchmarks/dict_copy_nested.py).
        for cell in list(self._cells.values()):
            cell[0] = True

    def end(self) -> None:
        """After the owner stored it (in a finally)."""
        self._seq += 1

    def follow(self, owner: Any, derive: Callable[[T], Sequence[Any]]) -> Follower[T]:
        """A follower of ``owner``'s object: ``cell`` is ``[stale, value, *derive(value)]``."""
        return Follower(self, owner, derive)

    def followers(self) -> int:
        """How many cells are registered (live followers, plus refreshes in flight)."""
        return len(self._cells)


class Follower(Generic[T]):
    """One handle's cache of a Published object. Read ``cell`` afresh for every operation."""

    __slots__ = ("__weakref__", "_derive", "_lock", "_owner", "_published", "cell")

    # cell: replaced (never mutated, except its flag by writers) by refresh under _lock; read
    #   by any thread using the handle. _owner, _published, _derive: set once.

    def __init__(self, published: Published[T], owner: Any, derive: Callable[[T], Sequence[Any]]) -> None:
        self._published = published
        self._owner = owner
        self._derive = derive
        self._lock = RLock()
        self.cell: list[Any] = [True, None]  # never registered: the first read refreshes
        self.refresh()

    def refresh(self) -> list[Any]:
        """A validated cell from an object that was current during the call (see the module)."""
        lock = self._lock
        try:
            lock.acquire()
            return self._refresh_locked()
        finally:
            try:  # noqa: SIM105 (no contextlib here: it would be a call that can be interrupted)
                lock.release()
            except RuntimeError:  # interrupted inside acquire(): not held
                pass

    def _refresh_locked(self) -> list[Any]:
        published = self._published
        cells = published._cells
        cell: list[Any] = [True]
        key = id(cell)
        cells[key] = cell
        try:
            seq = published._seq
            value = published._load(self._owner)
            cell.append(value)
            cell.extend(self._derive(value))
            cell[0] = False
            if seq % 2 or published._seq != seq:
                cell[0] = True
        except BaseException:
            cells.pop(key, None)
            raise
        old = self.cell
        self.cell = cell
        cells.pop(id(old), None)
        return cell

    def close(self) -> None:
        """Stop following: writers no longer flag this follower. Idempotent; reads still work."""
        self._published._cells.pop(id(self.cell), None)
        self.cell = [True, *self.cell[1:]]

    def __del__(self) -> None:
        # No module globals: they may be gone at interpreter exit.
        try:  # noqa: SIM105
            self._published._cells.pop(id(self.cell), None)
        except AttributeError:  # never fully built
            pass
