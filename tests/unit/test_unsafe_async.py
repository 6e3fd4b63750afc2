"""UnsafeMap after an asynchronous exception at every point where one can land (issue 13, break 6).

CPython delivers an asynchronous exception (KeyboardInterrupt,
``PyThreadState_SetAsyncExc``) at a function's entry, at a loop's back-edge
and right after a call returns. A profile hook sees the same moments (the
"call", "return" and "c_return" events), so raising ``Injected`` from the
hook at its n-th event, for n = 1, 2, ... until the operation completes,
interrupts the operation at each of those points in turn, deterministically
(loop back-edges excepted: tests/stress has the random injection that
covers those too). After each, the map must hold no write claim, keep every
completed write, and be either as before or as after the interrupted
operation.

``interrupt_everywhere`` is shared with the ShardedMap tests.
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pytest

from ftmap import ConcurrentMapError, ConcurrentReadWriteError, ThreadInfo, UnsafeMap, race_log
from tests.inject import Injected
from tests.threads import within
from tests.unit.test_unsafe import another_thread_writing

S = TypeVar("S")

# sys.setprofile is per thread, but the code instrumentation behind it is shared by
# the interpreter: threads that set and clear it at once lose each other's events.
pytestmark = pytest.mark.thread_unsafe(reason="sys.setprofile from several threads at once loses events")

_EVENTS = frozenset({"call", "return", "c_return"})


@dataclass
class Interruption(Generic[S]):
    """One run of the operation: where the exception was raised, and whether it came out."""

    point: int  # the n-th delivery point; 0 for the uninterrupted run
    state: S
    escaped: bool  # Injected came out of the operation (False: it completed, or swallowed it)


def run_interrupted_at(point: int, fn: Callable[[], object]) -> tuple[bool, bool]:
    """Run fn, raising Injected at its point-th delivery point: (raised, escaped)."""
    seen = [0]
    raised = [False]
    armed = [False]  # set once sys.setprofile has returned: its own c_return is not counted

    def hook(frame: types.FrameType, event: str, arg: object) -> None:
        if armed[0] and event in _EVENTS:
            seen[0] += 1
            if seen[0] == point:
                raised[0] = True
                sys.setprofile(None)
                raise Injected(f"delivery point {point}: {event} in {frame.f_code.co_qualname}")

    escaped = False
    sys.setprofile(hook)
    try:
        armed[0] = True
        fn()
    except Injected:
        escaped = True
    finally:
        sys.setprofile(None)
    return raised[0], escaped


def interrupt_everywhere(
    setup: Callable[[], S],
    operation: Callable[[S], object],
    check: Callable[[Interruption[S]], None],
    *,
    limit: int = 5000,
) -> int:
    """For n = 1, 2, ...: state = setup(); run operation(state) interrupted at its n-th delivery
    point; check(...). Stops after the first run that completed without reaching point n
    (checked too, as point 0). Returns the number of points interrupted."""
    point = 1
    while point <= limit:
        state = setup()
        raised, escaped = run_interrupted_at(point, lambda: operation(state))
        if not raised:
            check(Interruption(0, state, False))
            return point - 1
        check(Interruption(point, state, escaped))
        point += 1
    raise AssertionError(f"the operation still had delivery points after {limit}")


# -- UnsafeMap -----------------------------------------------------------------------


class PyKey:
    """A key whose __hash__ and __eq__ are Python code: delivery points inside the dict operation."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __hash__(self) -> int:
        return hash(self.name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PyKey) and other.name == self.name

    def __repr__(self) -> str:
        return f"PyKey({self.name!r})"


def initial() -> dict[Any, Any]:
    return {"a": 1, "b": 2, PyKey("p"): 3, PyKey("q"): 4}


def writes() -> dict[str, Callable[[Any], object]]:
    """Each write applied to a map or a dict (the model): name -> operation."""
    return {
        "set new": lambda m: m.__setitem__("new", 9),
        "set existing": lambda m: m.__setitem__("a", 9),
        "set new PyKey": lambda m: m.__setitem__(PyKey("r"), 9),
        "set existing PyKey": lambda m: m.__setitem__(PyKey("p"), 9),
        "delete": lambda m: m.__delitem__(PyKey("q")),
        "pop": lambda m: m.pop("b"),
        "pop default": lambda m: m.pop(PyKey("zz"), None),
        "setdefault new": lambda m: m.setdefault(PyKey("s"), 7),
        "setdefault existing": lambda m: m.setdefault("a", 7),
        "popitem": lambda m: m.popitem(),
        "update": lambda m: m.update({PyKey("u"): 1, "a": 5, PyKey("p"): 6}),
        "update pairs and kwargs": lambda m: m.update([(PyKey("v"), 1)], w=2),
        "update from an UnsafeMap": lambda m: m.update(UnsafeMap({PyKey("x"): 1})),
        "ior": lambda m: m.__ior__({PyKey("y"): 1}),
        "clear": lambda m: m.clear(),
    }


def reads() -> dict[str, Callable[[Any], object]]:
    return {
        "get": lambda m: m.get(PyKey("p")),
        "getitem": lambda m: m[PyKey("q")],
        "contains": lambda m: PyKey("zz") in m,
        "len": len,
        "iterate": list,
        "iterate items": lambda m: list(m.items()),
        "iterate values reversed": lambda m: list(reversed(m.values())),
        "repr": repr,
        "compare": lambda m: m == initial(),
        "copy": lambda m: m.copy(),
        "or": lambda m: m | {PyKey("o"): 1},
    }


def assert_unclaimed_and_usable(m: UnsafeMap[Any, Any]) -> None:
    """No claim is left: another thread writes and reads without a report."""
    assert 0 not in m._state, f"the write claim leaked: {m._state}"

    def probe() -> None:
        m["probe"] = 1
        assert m["probe"] == 1
        del m["probe"]
        list(m)

    within(10, probe)
    assert m.reports == [], m.reports


def outcomes(operation: Callable[[Any], object]) -> list[dict[Any, Any]]:
    """The contents the model allows after operation was interrupted: before, or after."""
    after = initial()
    with contextlib.suppress(KeyError):
        operation(after)
    return [initial(), after]


@pytest.mark.parametrize("name", list(writes()))
def test_a_write_interrupted_anywhere_leaves_no_claim_and_a_consistent_map(name: str) -> None:
    operation = writes()[name]
    before, after = outcomes(operation)

    def check(run: Interruption[UnsafeMap[Any, Any]]) -> None:
        m = run.state
        assert_unclaimed_and_usable(m)
        content = dict(m.items())
        if not run.escaped:
            assert content == after, f"point {run.point}"
        elif name.startswith("update") or name == "ior":
            # dict.update stores items one by one: some of them went in, each whole.
            assert set(before) <= set(content) <= set(after), f"point {run.point}"
            assert all(v in (before.get(k), after[k]) for k, v in content.items()), f"point {run.point}"
        elif name == "clear":
            assert content in (before, after), f"point {run.point}"
        else:
            assert content in (before, after), f"point {run.point}: {content}"

    points = interrupt_everywhere(lambda: UnsafeMap(initial()), operation, check)
    assert points >= 3, "the operation was never interrupted inside"


@pytest.mark.parametrize("name", list(reads()))
def test_a_read_interrupted_anywhere_changes_nothing(name: str) -> None:
    def check(run: Interruption[UnsafeMap[Any, Any]]) -> None:
        assert_unclaimed_and_usable(run.state)
        assert dict(run.state.items()) == initial()

    assert interrupt_everywhere(lambda: UnsafeMap(initial()), reads()[name], check) >= 2


def test_an_iterator_interrupted_mid_way_can_go_on() -> None:
    def run(m: UnsafeMap[Any, Any]) -> None:
        steps = iter(m.items())
        next(steps)
        m["a"] = 0  # this thread's own write between steps, no size change
        assert len(list(steps)) == 3

    def check(run: Interruption[UnsafeMap[Any, Any]]) -> None:
        assert_unclaimed_and_usable(run.state)
        assert dict(run.state.items()) in (initial(), {**initial(), "a": 0})

    assert interrupt_everywhere(lambda: UnsafeMap(initial()), run, check) >= 5


def reported(fn: Callable[[], object]) -> None:
    with contextlib.suppress(ConcurrentMapError):
        fn()


@pytest.mark.ftmap_races_expected
def test_a_race_report_interrupted_anywhere_leaves_the_race_log_usable() -> None:
    # The report path takes the race log's lock: an exception there must not leak it
    # (another thread then records a report without blocking).
    m: UnsafeMap[Any, Any] = UnsafeMap()
    probe = ConcurrentReadWriteError("probe", ThreadInfo("a", 1), ThreadInfo("b", 2))
    with another_thread_writing(m):
        point = 1
        while True:
            raised, _ = run_interrupted_at(point, lambda: reported(lambda: m.get("k")))
            within(10, lambda: race_log.record(probe))
            if not raised:
                break
            point += 1
    assert point > 5
