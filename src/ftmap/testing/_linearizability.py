"""A linearizability checker in the manner of Porcupine.

The search is Wing and Gong's, with Lowe's memoization: operations are
linearized one by one, in any order the real-time intervals allow, and every
(set of linearized operations, model state) already explored is remembered,
so no configuration is searched twice. Histories are first split into
independent partitions (P-compositionality, Horn and Kroening): a map is
linearizable if the history of each key is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from .._markers import DELETE, MISSING

__all__ = ["MISSING", "CheckResult", "DeadEnd", "KeyValueModel", "Model", "Operation", "check_linearizable"]

S = TypeVar("S", bound=Hashable)


@dataclass(frozen=True)
class Operation:
    """One call in a recorded history.

    ``call`` and ``ret`` are ``time.perf_counter_ns()`` readings taken just
    before the call and just after it returned; the operation took effect
    somewhere in between. ``result`` is what it returned (or raised).
    """

    thread: int
    name: str
    args: tuple[Any, ...]
    result: Any
    call: int
    ret: int
    error: BaseException | None = None

    def __post_init__(self) -> None:
        if self.ret < self.call:
            raise ValueError(f"operation returns before it is called: {self}")

    def describe(self, origin: int = 0) -> str:
        args = ", ".join(map(repr, self.args))
        outcome = f"raised {self.error!r}" if self.error is not None else f"-> {self.result!r}"
        interval = f"[{self.call - origin} .. {self.ret - origin}] ns"
        return f"thread {self.thread}: {self.name}({args}) {outcome}  {interval}"


class Model(Generic[S]):
    """What the checker knows of an object: its states and how operations move them.

    Subclass it, or pass any object with ``init`` and ``step`` (and, if the
    object's operations split into independent groups, ``partition``).
    States must be hashable: the search remembers the ones it has explored.
    """

    def init(self) -> S:
        """The state before any operation."""
        raise NotImplementedError

    def step(self, state: S, op: Operation) -> tuple[bool, S]:
        """Whether ``op``, with its recorded result, is legal in ``state``; and the state after it."""
        raise NotImplementedError

    def partition(self, history: Sequence[Operation]) -> list[list[Operation]]:
        """Independent sub-histories, each checked alone (P-compositionality); by default one."""
        return [list(history)]


def _same(a: Any, b: Any) -> bool:
    # Identity first, then ==: as the maps compare values, and safe for MISSING.
    return a is b or (a is not MISSING and b is not MISSING and a == b)


Step = Callable[[Any, tuple[Any, ...], Any], tuple[bool, Any]]


def _get(state: Any, args: tuple[Any, ...], result: Any) -> tuple[bool, Any]:
    return _same(result, state), state


def _set(state: Any, args: tuple[Any, ...], result: Any) -> tuple[bool, Any]:
    return True, args[1]


def _delete(state: Any, args: tuple[Any, ...], result: Any) -> tuple[bool, Any]:
    return True, MISSING


def _pop(state: Any, args: tuple[Any, ...], result: Any) -> tuple[bool, Any]:
    return _same(result, state), MISSING


def _contains(state: Any, args: tuple[Any, ...], result: Any) -> tuple[bool, Any]:
    return result == (state is not MISSING), state


def _setdefault(state: Any, args: tuple[Any, ...], result: Any) -> tuple[bool, Any]:
    after = args[1] if state is MISSING else state
    return _same(result, after), after


def _cas(state: Any, args: tuple[Any, ...], result: Any) -> tuple[bool, Any]:
    swapped = _same(state, args[1])
    return result == swapped, args[2] if swapped else state


def _compare_and_delete(state: Any, args: tuple[Any, ...], result: Any) -> tuple[bool, Any]:
    deleted = state is not MISSING and _same(state, args[1])
    return result == deleted, MISSING if deleted else state


def _set_if_absent(state: Any, args: tuple[Any, ...], result: Any) -> tuple[bool, Any]:
    stored = state is MISSING
    return result == stored, args[1] if stored else state


def _load(state: Any, args: tuple[Any, ...], result: Any) -> tuple[bool, Any]:
    expected = (None, False) if state is MISSING else (state, True)
    return _same(result[1], expected[1]) and _same(result[0], expected[0]), state


def _load_or_store(state: Any, args: tuple[Any, ...], result: Any) -> tuple[bool, Any]:
    if state is MISSING:
        return _same(result[0], args[1]) and result[1] is False, args[1]
    return _same(result[0], state) and result[1] is True, state


def _load_and_delete(state: Any, args: tuple[Any, ...], result: Any) -> tuple[bool, Any]:
    return _load(state, args, result)[0], MISSING


def _swap(state: Any, args: tuple[Any, ...], result: Any) -> tuple[bool, Any]:
    previous = (None, False) if state is MISSING else (state, True)
    return _same(result[0], previous[0]) and result[1] is previous[1], args[1]


def _absent_if_deleted(value: Any) -> Any:
    return MISSING if value is DELETE else value


def _merge(state: Any, args: tuple[Any, ...], result: Any) -> tuple[bool, Any]:
    after = args[1] if state is MISSING else _absent_if_deleted(args[2](state, args[1]))
    return _same(result, after), after


def _compute(state: Any, args: tuple[Any, ...], result: Any) -> tuple[bool, Any]:
    after = _absent_if_deleted(args[1](state))
    return _same(result, after), after


def _compute_if_absent(state: Any, args: tuple[Any, ...], result: Any) -> tuple[bool, Any]:
    after = args[1](args[0]) if state is MISSING else state
    return _same(result, after), after


def _compute_if_present(state: Any, args: tuple[Any, ...], result: Any) -> tuple[bool, Any]:
    after = MISSING if state is MISSING else _absent_if_deleted(args[1](state))
    return _same(result, after), after


def _upsert(state: Any, args: tuple[Any, ...], result: Any) -> tuple[bool, Any]:
    exists = state is not MISSING
    after = args[2](exists, state if exists else None, args[1])
    return _same(result, after), after


def _remove_if(state: Any, args: tuple[Any, ...], result: Any) -> tuple[bool, Any]:
    exists = state is not MISSING
    removed = exists and bool(args[1](args[0], state, exists))
    return result == removed, MISSING if removed else state


class KeyValueModel(Model[Any]):
    """A map, checked one key at a time: each key is a register, MISSING when absent.

    The first argument of every operation is the key. Operations, their other
    arguments and what they must have returned:

    - dict: ``get() -> value or MISSING``, ``set(v)``, ``delete()``,
      ``pop() -> value``, ``contains() -> bool``, ``setdefault(v) -> value``;
      ``get``, ``delete`` and ``pop`` of an absent key may raise KeyError instead
    - sync.Map: ``load() -> (value or None, ok)``, ``store(v)``,
      ``load_or_store(v) -> (value, loaded)``, ``load_and_delete() -> (value or None, loaded)``,
      ``swap(v) -> (previous or None, loaded)``, ``compare_and_swap(old, new) -> bool``,
      ``compare_and_delete(old) -> bool``
    - compound: ``cas(old, new) -> bool`` (``old`` MISSING: insert if absent),
      ``set_if_absent(v) -> bool``, ``merge(v, fn) -> new value or MISSING`` (fn(old, v), or v
      if absent), ``compute(fn) -> new value or MISSING`` (fn(old or MISSING)),
      ``compute_if_absent(factory) -> value`` (factory(key)), ``compute_if_present(fn) -> value
      or MISSING``, ``upsert(v, cb) -> stored value`` (cb(exists, old or None, v)),
      ``remove_if(predicate) -> bool`` (predicate(key, value, exists)); a function that
      returns DELETE removes the key

    Values are compared by identity, then ``==``. An operation that raised
    anything but a KeyError for an absent key is never legal.
    """

    # A subclass can teach it more: steps = {**KeyValueModel.steps, "name": step_function}.
    steps: ClassVar[dict[str, Step]] = {
        "get": _get,
        "set": _set,
        "store": _set,
        "delete": _delete,
        "pop": _pop,
        "contains": _contains,
        "setdefault": _setdefault,
        "load": _load,
        "load_or_store": _load_or_store,
        "load_and_delete": _load_and_delete,
        "swap": _swap,
        "cas": _cas,
        "compare_and_swap": _cas,
        "replace": _cas,
        "compare_and_delete": _compare_and_delete,
        "remove": _compare_and_delete,
        "set_if_absent": _set_if_absent,
        "merge": _merge,
        "compute": _compute,
        "compute_if_absent": _compute_if_absent,
        "compute_if_present": _compute_if_present,
        "upsert": _upsert,
        "remove_if": _remove_if,
    }
    raises_key_error_when_absent = frozenset({"get", "delete", "pop"})

    def init(self) -> Any:
        return MISSING

    def partition(self, history: Sequence[Operation]) -> list[list[Operation]]:
        by_key: dict[Any, list[Operation]] = {}
        for op in history:
            by_key.setdefault(op.args[0], []).append(op)
        return list(by_key.values())

    def step(self, state: Any, op: Operation) -> tuple[bool, Any]:
        step = self.steps.get(op.name)
        if step is None:
            raise ValueError(f"KeyValueModel has no operation {op.name!r}")
        if op.error is not None:
            absent = isinstance(op.error, KeyError) and op.name in self.raises_key_error_when_absent
            return absent and state is MISSING, state
        return step(state, op.args, op.result)


@dataclass
class DeadEnd:
    """Where the search got furthest before a partition proved illegal.

    ``order`` is the longest legal order found (its last operations first
    matter most); from ``state`` none of ``candidates`` (the operations that
    could take effect next) was legal, and ``blocked`` had already returned,
    so it could not be left for later.
    """

    order: list[Operation]
    state: Any
    candidates: list[Operation]
    blocked: Operation


@dataclass
class CheckResult:
    """``status`` is "ok", "illegal" or "unknown" (the time ran out before an answer).

    When illegal, ``failing`` is the smallest illegal partition and
    ``dead_end`` says where its search got furthest.
    """

    status: str
    failing: list[Operation]
    checked_partitions: int
    dead_end: DeadEnd | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def explain(self, context: int = 5) -> str:
        if self.status != "illegal" or self.dead_end is None:
            return f"{self.status}: {self.checked_partitions} partitions checked"
        end = self.dead_end
        origin = min(op.call for op in self.failing)
        lines = [
            f"not linearizable: of {len(self.failing)} operations in this partition, "
            f"the longest legal order found takes {len(end.order)}; its last {min(context, len(end.order))}:"
        ]
        lines += ["    " + op.describe(origin) for op in end.order[-context:]]
        lines.append(f"  then, in state {end.state!r}, this one had returned but cannot take effect:")
        lines.append("    " + end.blocked.describe(origin))
        others = [op for op in end.candidates if op is not end.blocked]
        if others:
            lines.append("  nor can any other operation pending then:")
            lines += ["    " + op.describe(origin) for op in others]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.explain()


class _Entry:
    """A call or return event in the doubly linked list the search lifts entries out of."""

    __slots__ = ("index", "is_call", "match", "next", "prev")

    def __init__(self, index: int, is_call: bool) -> None:
        self.index = index
        self.is_call = is_call
        self.match: _Entry | None = None  # a call's return event
        self.prev: _Entry | None = None
        self.next: _Entry | None = None


def _event_list(ops: Sequence[Operation]) -> _Entry:
    events: list[tuple[int, int, _Entry]] = []
    for index, op in enumerate(ops):
        call, ret = _Entry(index, True), _Entry(index, False)
        call.match = ret
        # On equal timestamps calls sort before returns: touching intervals count as concurrent.
        events.append((op.call, 0, call))
        events.append((op.ret, 1, ret))
    events.sort(key=lambda e: (e[0], e[1]))
    head = _Entry(-1, False)
    last = head
    for _, _, entry in events:
        last.next, entry.prev = entry, last
        last = entry
    return head


def _lift(entry: _Entry) -> None:
    for node in (entry, entry.match):
        assert node is not None and node.prev is not None
        node.prev.next = node.next
        if node.next is not None:
            node.next.prev = node.prev


def _unlift(entry: _Entry) -> None:
    for node in (entry.match, entry):
        assert node is not None and node.prev is not None
        node.prev.next = node
        if node.next is not None:
            node.next.prev = node


def _check_partition(ops: Sequence[Operation], model: Any, deadline: float) -> bool | DeadEnd | None:
    """True if linearizable, None if the deadline passed first, else the furthest DeadEnd."""
    head = _event_list(ops)
    state = model.init()
    linearized = 0
    seen: set[tuple[int, Any]] = set()
    stack: list[tuple[_Entry, Any]] = []
    furthest: DeadEnd | None = None
    entry = head.next
    steps = 0
    while head.next is not None:
        steps += 1
        if steps % 4096 == 0 and time.monotonic() > deadline:
            return None
        assert entry is not None
        if entry.is_call:
            legal, after = model.step(state, ops[entry.index])
            if legal:
                marked = linearized | (1 << entry.index)
                if (marked, after) not in seen:
                    seen.add((marked, after))
                    stack.append((entry, state))
                    state, linearized = after, marked
                    _lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            # A return reached with its call not linearized: undo the last choice.
            if furthest is None or len(stack) > len(furthest.order):
                furthest = _dead_end(ops, head, entry, stack, state)
            if not stack:
                return furthest
            entry, state = stack.pop()
            linearized &= ~(1 << entry.index)
            _unlift(entry)
            entry = entry.next
    return True


def _dead_end(
    ops: Sequence[Operation], head: _Entry, blocked: _Entry, stack: list[tuple[_Entry, Any]], state: Any
) -> DeadEnd:
    candidates = []
    node = head.next
    while node is not None and node is not blocked:
        if node.is_call:
            candidates.append(ops[node.index])
        node = node.next
    return DeadEnd([ops[e.index] for e, _ in stack], state, candidates, ops[blocked.index])


def check_linearizable(
    history: Sequence[Operation] | Iterable[Operation], model: Any = None, *, timeout: float = 60.0
) -> CheckResult:
    """Check a recorded history against a model (a KeyValueModel by default).

    Each partition is checked on its own; when some are not linearizable, the
    smallest of them is returned in ``failing``, so the explanation is short.
    """
    model = model if model is not None else KeyValueModel()
    history = list(history)
    deadline = time.monotonic() + timeout
    split = getattr(model, "partition", None)
    partitions = sorted(split(history) if split is not None else [history], key=len)
    unknown = False
    for count, part in enumerate(partitions, 1):
        verdict = _check_partition(part, model, deadline)
        if isinstance(verdict, DeadEnd):
            return CheckResult("illegal", list(part), count, verdict)
        if verdict is None:
            unknown = True
            break
    return CheckResult("unknown" if unknown else "ok", [], len(partitions))
