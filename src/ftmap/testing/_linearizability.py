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
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

__all__ = ["MISSING", "CheckResult", "KeyValueModel", "Model", "Operation", "check_linearizable", "recorded"]

S = TypeVar("S", bound=Hashable)


class _Missing:
    """The value of an absent key: what a get of a missing key returns in a recorded history."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


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

    def __post_init__(self) -> None:
        if self.ret < self.call:
            raise ValueError(f"operation returns before it is called: {self}")

    def describe(self, origin: int = 0) -> str:
        args = ", ".join(map(repr, self.args))
        return (
            f"thread {self.thread}: {self.name}({args}) -> {self.result!r}"
            f"  [{self.call - origin} .. {self.ret - origin}] ns"
        )


class Model(Protocol[S]):
    """What the checker needs to know of an object: its states and how operations move them."""

    def init(self) -> S:
        """The state before any operation."""
        ...

    def step(self, state: S, op: Operation) -> tuple[bool, S]:
        """Whether ``op`` with its recorded result is legal in ``state``, and the state after it."""
        ...

    def partition(self, history: Sequence[Operation]) -> list[list[Operation]]:
        """Independent sub-histories (e.g. one per key); ``[list(history)]`` if there are none."""
        ...


class KeyValueModel:
    """A map, checked one key at a time: a register per key.

    Operation names, arguments and recorded results (``MISSING`` stands for an
    absent key):

    - ``get(k) -> value or MISSING``
    - ``set(k, v) -> anything``; ``delete(k) -> anything``
    - ``pop(k) -> value or MISSING`` (removes)
    - ``cas(k, old, new) -> bool`` (``old`` may be MISSING: insert if absent)
    - ``load_or_store(k, v) -> (value, loaded)``
    - ``swap(k, v) -> (previous or MISSING, loaded)``
    - ``merge(k, v, fn) -> new value``: fn(old, v) if present, else v
    - ``compute(k, fn) -> new value or MISSING``: fn(old or MISSING); MISSING deletes
    """

    def init(self) -> Any:
        return MISSING

    def partition(self, history: Sequence[Operation]) -> list[list[Operation]]:
        by_key: dict[Any, list[Operation]] = {}
        for op in history:
            by_key.setdefault(op.args[0], []).append(op)
        return list(by_key.values())

    def step(self, state: Any, op: Operation) -> tuple[bool, Any]:  # noqa: PLR0911
        name, args, result = op.name, op.args, op.result
        if name == "get":
            return result == state or result is state, state
        if name == "set":
            return True, args[1]
        if name == "delete":
            return True, MISSING
        if name == "pop":
            return result == state or result is state, MISSING
        if name == "cas":
            swapped = state is args[1] or (state is not MISSING and state == args[1])
            return result == swapped, args[2] if swapped else state
        if name == "load_or_store":
            if state is MISSING:
                return result == (args[1], False), args[1]
            return result == (state, True), state
        if name == "swap":
            return result == (state, state is not MISSING), args[1]
        if name == "merge":
            new = args[1] if state is MISSING else args[2](state, args[1])
            return result == new, new
        if name == "compute":
            new = args[1](state)
            return result == new or result is new, new
        raise ValueError(f"KeyValueModel has no operation {name!r}")


@dataclass
class CheckResult:
    """``status`` is "ok", "illegal" or "unknown" (the time ran out before an answer)."""

    status: str
    failing: list[Operation]
    checked_partitions: int

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def explain(self) -> str:
        if self.status != "illegal":
            return f"{self.status}: {self.checked_partitions} partitions checked"
        origin = min(op.call for op in self.failing)
        lines = [f"not linearizable: no order of these {len(self.failing)} operations is legal:"]
        lines += ["  " + op.describe(origin) for op in sorted(self.failing, key=lambda o: o.call)]
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


def _check_partition(ops: Sequence[Operation], model: Model[Any], deadline: float) -> bool | None:
    """True if linearizable, False if not, None if the deadline passed first."""
    head = _event_list(ops)
    state = model.init()
    linearized = 0
    seen: set[tuple[int, Any]] = set()
    stack: list[tuple[_Entry, Any]] = []
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
            if not stack:
                return False
            entry, state = stack.pop()
            linearized &= ~(1 << entry.index)
            _unlift(entry)
            entry = entry.next
    return True


def check_linearizable(
    history: Sequence[Operation], model: Model[Any] | None = None, *, timeout: float = 60.0
) -> CheckResult:
    """Check a recorded history against a model (a KeyValueModel by default).

    Each partition is checked on its own; when some are not linearizable, the
    smallest of them is returned in ``failing``, so the explanation is short.
    """
    model = model if model is not None else KeyValueModel()
    deadline = time.monotonic() + timeout
    partitions = sorted(model.partition(history), key=len)
    unknown = False
    for count, part in enumerate(partitions, 1):
        verdict = _check_partition(part, model, deadline)
        if verdict is False:
            return CheckResult("illegal", list(part), count)
        if verdict is None:
            unknown = True
            break
    return CheckResult("unknown" if unknown else "ok", [], len(partitions))


def recorded(
    history: list[Operation], thread: int, name: str, args: tuple[Any, ...], fn: Callable[[], Any]
) -> Any:
    """Call fn, append the Operation it makes to ``history`` (list.append is atomic), return its result."""
    call = time.perf_counter_ns()
    result = fn()
    history.append(Operation(thread, name, args, result, call, time.perf_counter_ns()))
    return result
