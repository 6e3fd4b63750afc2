"""UnsafeMap: the C class against the pure-Python class (the reference), operation by operation.

A hypothesis state machine applies the same random operation sequence to both
variants from ``ftmap._impl.variants("UnsafeMap")``: tests/hostile.py's keys
(raising ``__hash__``/``__eq__``, unhashable, NaN, 1 == 1.0 == True), ftmap's
markers as values, keys whose ``__hash__``/``__eq__`` read or write the map
they are in, and iterators interleaved with writes. Every operation must give
the same result (the same objects), or an exception of the same type with the
same message, and both maps must hold the same items in the same order after
every step. A second test compares the race reports both variants raise for
each kind of operation while another thread is inside a write.

Skipped where the C core cannot be imported (3.11, no compiler).
"""

from __future__ import annotations

import copy
import pickle
import re
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from ftmap import DELETE, MISSING, ConcurrentMapError, _impl
from tests.hostile import CallbackKey, hostile_keys
from tests.hostile import values as plain_values
from tests.threads import InThread, within

VARIANTS = _impl.variants("UnsafeMap")
pytestmark = pytest.mark.skipif("c" not in VARIANTS, reason="no C core here: nothing to compare")
PURE = VARIANTS["python"]
C = VARIANTS.get("c")

# The map the callbacks of CallbackKeys act on: the one an operation is running on.
TARGET: list[Any] = [None]


def read_target() -> None:
    target = TARGET[0]
    if target is not None:
        len(target)
        list(target.items())
        target.get("a")
        "b" in target  # noqa: B015  (the read is the point)


def write_target() -> None:
    target = TARGET[0]
    if target is not None:
        target["side"] = 1


def iterate_and_pop_target() -> None:
    target = TARGET[0]
    if target is not None:
        for _ in target:
            break
        target.pop("side", None)


CALLBACK_KEYS = [
    CallbackKey(name, callback, on_hash=on_hash)
    for name, callback, on_hash in (
        ("reads on hash", read_target, True),
        ("reads on eq", read_target, False),
        ("writes on hash", write_target, True),
        ("writes on eq", write_target, False),
        ("iterates and pops on hash", iterate_and_pop_target, True),
    )
    for _ in range(2)
]


def keys() -> st.SearchStrategy[Any]:
    return st.one_of(hostile_keys(), st.sampled_from(CALLBACK_KEYS))


def values() -> st.SearchStrategy[Any]:
    return st.one_of(plain_values(), st.sampled_from([MISSING, DELETE]))


class Outcome:
    """A result, or an exception's type and message."""

    def __init__(self, target: Any, fn: Callable[[Any], Any]) -> None:
        self.result: Any = None
        self.error: tuple[type[BaseException], str] | None = None
        TARGET[0] = target
        try:
            self.result = fn(target)
        except Exception as error:
            self.error = (type(error), str(error))
        finally:
            TARGET[0] = None

    def __repr__(self) -> str:
        return f"raised {self.error}" if self.error else f"returned {self.result!r}"


def same(a: Any, b: Any) -> bool:
    """The same object, or equal plain results, element by element; maps by their items."""
    if a is b:
        return True
    if isinstance(a, (PURE, C)) and isinstance(b, (PURE, C)):
        return same(list(a.items()), list(b.items())) and type(a).__name__ == type(b).__name__
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, str, bool)):
        return bool(a == b)
    return False


MAKE_ITERATOR: dict[str, Callable[[Any], Any]] = {
    "iter": iter,
    "keys": lambda t: iter(t.keys()),
    "values": lambda t: iter(t.values()),
    "items": lambda t: iter(t.items()),
    "reversed": reversed,
    "rkeys": lambda t: reversed(t.keys()),
    "rvalues": lambda t: reversed(t.values()),
    "ritems": lambda t: reversed(t.items()),
}


class CAgainstPure(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pure: Any = PURE()
        self.c: Any = C()
        self.iterators: list[tuple[Any, Any]] = []

    def both(self, fn: Callable[[Any], Any]) -> None:
        expected = Outcome(self.pure, fn)
        got = Outcome(self.c, fn)
        assert got.error == expected.error, f"C {got}, pure {expected}"
        if expected.error is None:
            assert same(got.result, expected.result), f"C {got}, pure {expected}"

    # -- single keys -------------------------------------------------------------------------

    @rule(key=keys())
    def getitem(self, key: Any) -> None:
        self.both(lambda t: t[key])

    @rule(key=keys(), default=values())
    def get(self, key: Any, default: Any) -> None:
        self.both(lambda t: t.get(key))
        self.both(lambda t: t.get(key, default))

    @rule(key=keys(), value=values())
    def contains(self, key: Any, value: Any) -> None:
        self.both(lambda t: key in t)
        self.both(lambda t: key in t.keys())  # noqa: SIM118  (the view is under test)
        self.both(lambda t: (key, value) in t.items())
        self.both(lambda t: value in t.values())

    @rule(key=keys(), value=values())
    def setitem(self, key: Any, value: Any) -> None:
        self.both(lambda t: t.__setitem__(key, value))

    @rule(key=keys())
    def delitem(self, key: Any) -> None:
        self.both(lambda t: t.__delitem__(key))

    @rule(key=keys(), default=values(), with_default=st.booleans())
    def pop(self, key: Any, default: Any, with_default: bool) -> None:
        self.both(lambda t: t.pop(key, default) if with_default else t.pop(key))

    @rule()
    def popitem(self) -> None:
        self.both(lambda t: t.popitem())

    @rule(key=keys(), default=values(), with_default=st.booleans())
    def setdefault(self, key: Any, default: Any, with_default: bool) -> None:
        self.both(lambda t: t.setdefault(key, default) if with_default else t.setdefault(key))

    # -- many keys -----------------------------------------------------------------------------

    @rule(
        pairs=st.lists(st.tuples(keys(), values()), max_size=4),
        kwargs=st.dictionaries(st.sampled_from(["a", "b", "kw"]), values(), max_size=2),
        form=st.sampled_from(["pairs", "kwargs", "ior", "same variant", "bad pairs"]),
    )
    def update(self, pairs: list[tuple[Any, Any]], kwargs: dict[str, Any], form: str) -> None:
        if form == "pairs":
            self.both(lambda t: t.update(pairs, **kwargs))
        elif form == "kwargs":
            self.both(lambda t: t.update(**kwargs))
        elif form == "ior":
            self.both(lambda t: _ior(t, pairs))
        elif form == "bad pairs":
            self.both(lambda t: t.update([*pairs, (1,)]))
        else:
            source = _unarmed_dict(pairs)
            if source is not None:
                self.both(lambda t: t.update(type(t)(source)))

    @rule()
    def clear(self) -> None:
        self.both(lambda t: t.clear())

    @rule(pairs=st.lists(st.tuples(keys(), values()), max_size=3), reflected=st.booleans())
    def union(self, pairs: list[tuple[Any, Any]], reflected: bool) -> None:
        other = _unarmed_dict(pairs)
        if other is not None:
            self.both(lambda t: other | t if reflected else t | other)
        self.both(lambda t: t | 1)  # TypeError from both

    @rule(key_list=st.lists(keys(), max_size=4), value=values())
    def fromkeys(self, key_list: list[Any], value: Any) -> None:
        self.both(lambda t: type(t).fromkeys(key_list, value))

    # -- whole map -------------------------------------------------------------------------------

    @rule(pairs=st.lists(st.tuples(keys(), values()), max_size=3), as_map=st.booleans())
    def equality(self, pairs: list[tuple[Any, Any]], as_map: bool) -> None:
        other = _unarmed_dict(pairs)
        if other is None:
            return
        if as_map:
            self.both(lambda t: t == type(t)(other))
        else:
            self.both(lambda t: t == other)
            self.both(lambda t: t != other)
        self.both(lambda t: t.keys() == set(other))

    @rule()
    def whole(self) -> None:
        self.both(len)
        self.both(bool)
        self.both(repr)
        self.both(lambda t: (len(t.keys()), len(t.values()), len(t.items())))
        self.both(lambda t: t.copy())
        self.both(copy.copy)
        self.both(lambda t: repr(list(pickle.loads(pickle.dumps(t)).items())))
        for make in ITERATE.values():
            self.both(make)

    # -- iterators interleaved with writes -------------------------------------------------------

    @rule(kind=st.sampled_from(sorted(MAKE_ITERATOR)))
    def start_iteration(self, kind: str) -> None:
        make = MAKE_ITERATOR[kind]
        self.iterators.append((make(self.pure), make(self.c)))

    @precondition(lambda self: bool(self.iterators))
    @rule(data=st.data())
    def step_iteration(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.iterators) - 1))
        expected_it, got_it = self.iterators[index]
        expected = Outcome(None, lambda _: next(expected_it))
        got = Outcome(None, lambda _: next(got_it))
        assert got.error == expected.error, f"C {got}, pure {expected}"
        if expected.error is None:
            assert same(got.result, expected.result), f"C {got}, pure {expected}"
        else:
            del self.iterators[index]

    @invariant()
    def same_items_in_the_same_order_and_no_reports(self) -> None:
        got = list(self.c._data.items())
        expected = list(self.pure._data.items())
        assert len(got) == len(expected) and all(
            a is c and b is d for (a, b), (c, d) in zip(got, expected, strict=True)
        ), f"C {got}, pure {expected}"
        assert self.c.reports == [] and self.pure.reports == []
        assert 0 not in self.c._state and 0 not in self.pure._state


ITERATE: dict[str, Callable[[Any], Any]] = {
    "list": list,
    "keys": lambda t: list(t.keys()),
    "values": lambda t: list(t.values()),
    "items": lambda t: list(t.items()),
    "reversed": lambda t: list(reversed(t)),
    "reversed items": lambda t: list(reversed(t.items())),
}


def _ior(target: Any, pairs: list[tuple[Any, Any]]) -> Any:
    target |= pairs
    return target


def _unarmed_dict(pairs: list[tuple[Any, Any]]) -> dict[Any, Any] | None:
    """A dict of pairs, built while no callback acts; None if the keys refuse."""
    try:
        return dict(pairs)
    except Exception:
        return None


SETTINGS = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.thread_unsafe(reason="hypothesis runs one state machine at a time")
def test_the_c_map_matches_the_pure_map() -> None:
    within(600, lambda: run_state_machine_as_test(CAgainstPure, settings=SETTINGS))


# -- the race reports ----------------------------------------------------------------------------


class BlockingKey:
    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __hash__(self) -> int:
        self.entered.set()
        assert self.release.wait(10), "never released"
        return 1

    def __repr__(self) -> str:
        return "BlockingKey()"


OPERATIONS: dict[str, Callable[[Any], object]] = {
    "getitem": lambda m: m[("k", 1)],
    "get": lambda m: m.get("a"),
    "contains": lambda m: "a" in m,
    "len": len,
    "repr": repr,
    "compare": lambda m: m == {},
    "copy": lambda m: m.copy(),
    "pickle": pickle.dumps,
    "values contains": lambda m: 1 in m.values(),
    "items contains": lambda m: ("a", 1) in m.items(),
    "iterate": list,
    "iterate keys": lambda m: list(m.keys()),
    "iterate values": lambda m: list(reversed(m.values())),
    "iterate items": lambda m: list(m.items()),
    "write": lambda m: m.__setitem__(["unhashable"], 1),
    "delete": lambda m: m.__delitem__("a"),
    "pop": lambda m: m.pop("a", None),
    "popitem": lambda m: m.popitem(),
    "setdefault": lambda m: m.setdefault("new", 1),
    "update": lambda m: m.update(new=1),
    "ior": lambda m: m.__ior__({"new": 1}),
    "clear": lambda m: m.clear(),
}


def report_while_another_thread_writes(cls: Any, operation: Callable[[Any], object]) -> tuple[Any, ...]:
    m = cls(a=1)
    key = BlockingKey()
    writer = InThread(lambda: m.__setitem__(key, "blocked"), name="writer")
    assert key.entered.wait(10)
    try:
        with pytest.raises(ConcurrentMapError) as caught:
            operation(m)
    finally:
        key.release.set()
        writer.join()
    error = caught.value
    assert error.other_thread.ident == writer.thread.ident and error.thread.ident == threading.get_ident()
    assert m.reports == [error] and 0 not in m._state
    # The writer's ident differs between the two runs: compare the message without idents.
    message = re.sub(r"\(ident \d+\)", "(ident N)", str(error))
    return type(error), message, error.operation, error.has_key, error.key, error.thread.name, repr(m._data)


@pytest.mark.ftmap_races_expected
@pytest.mark.parametrize("name", list(OPERATIONS))
def test_the_c_map_reports_races_as_the_pure_map_does(name: str) -> None:
    operation = OPERATIONS[name]
    got = report_while_another_thread_writes(C, operation)
    expected = report_while_another_thread_writes(PURE, operation)
    assert got == expected
