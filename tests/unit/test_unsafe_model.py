"""UnsafeMap against a plain dict, operation by operation (hypothesis stateful testing).

One thread's use of UnsafeMap must be exactly a dict's: the same results, the
same exceptions (type), the same contents in the same order, including the
RuntimeError of a dict whose size changed during its own iteration, for
every operation of the API, with tests/hostile.py's keys (raising
``__hash__``/``__eq__``, unhashable, NaN, 1 == 1.0 == True), ftmap's
markers as ordinary values, and keys whose ``__hash__``/``__eq__`` read or
write the map they are in. It drives whatever ``from ftmap import UnsafeMap``
gives, so the same test checks a compiled core.
"""

from __future__ import annotations

import copy
import pickle
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

from ftmap import DELETE, MISSING, UnsafeMap
from tests.hostile import CallbackKey, hostile_keys
from tests.hostile import values as plain_values
from tests.threads import within

# The structure the callbacks of CallbackKeys act on: the model while an operation
# runs on the model, the map while it runs on the map, nothing otherwise.
TARGET: list[Any] = [None]


def read_target() -> None:
    target = TARGET[0]
    if target is not None:
        len(target)
        list(target)
        target.get("a")
        "b" in target  # noqa: B015  (the read is the point)


def write_target() -> None:
    target = TARGET[0]
    if target is not None:
        target["side"] = 1  # idempotent: the number of calls cannot matter


# Two of each name, so that a stored key and a looked-up one are equal but not identical.
CALLBACK_KEYS = [
    CallbackKey(name, callback, on_hash=on_hash)
    for name, callback, on_hash in (
        ("reads on hash", read_target, True),
        ("reads on eq", read_target, False),
        ("writes on hash", write_target, True),
        ("writes on eq", write_target, False),
    )
    for _ in range(2)
]


def keys() -> st.SearchStrategy[Any]:
    return st.one_of(hostile_keys(), st.sampled_from(CALLBACK_KEYS))


def values() -> st.SearchStrategy[Any]:
    return st.one_of(plain_values(), st.sampled_from([MISSING, DELETE]))


def same(a: Any, b: Any) -> bool:
    """Identity, or equality of plain results (ints, bools, strings), element by element."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, str, bool)):
        return bool(a == b)
    return False


class Outcome:
    """What running a function gave: a result, or the type of exception it raised."""

    def __init__(self, target: Any, fn: Callable[[Any], Any]) -> None:
        self.result: Any = None
        self.error: type[BaseException] | None = None
        TARGET[0] = target
        try:
            self.result = fn(target)
        except Exception as error:
            self.error = type(error)
        finally:
            TARGET[0] = None

    def __repr__(self) -> str:
        return f"raised {self.error.__name__}" if self.error else f"returned {self.result!r}"


class UnsafeMapAgainstDict(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.model: dict[Any, Any] = {}
        self.map: UnsafeMap[Any, Any] = UnsafeMap()
        self.iterators: list[tuple[Any, Any]] = []

    def both(
        self,
        fn: Callable[[Any], Any],
        compare: Callable[[Any, Any], bool] = same,
        *,
        copies_first: bool = False,
    ) -> tuple[Any, Any]:
        """fn on the model, then on the map: the same exception type, or results that compare.

        copies_first: the map reads itself as one copy before the operation, where the dict
        iterates itself live. A key callback that writes the map during the operation then
        makes the dict raise RuntimeError ("changed size during iteration") while the map
        completes from its copy: the only divergence allowed, and only there.
        """
        expected = Outcome(self.model, fn)
        got = Outcome(self.map, fn)
        if copies_first and expected.error is RuntimeError and got.error is None:
            return got.result, None
        assert got.error is expected.error, f"map {got}, dict {expected}"
        if expected.error is None:
            assert compare(got.result, expected.result), f"map {got}, dict {expected}"
        return got.result, expected.result

    # -- single-key reads ---------------------------------------------------------------

    @rule(key=keys())
    def getitem(self, key: Any) -> None:
        self.both(lambda t: t[key])

    @rule(key=keys(), default=values())
    def get(self, key: Any, default: Any) -> None:
        self.both(lambda t: t.get(key))
        self.both(lambda t: t.get(key, default))

    @rule(key=keys())
    def contains(self, key: Any) -> None:
        self.both(lambda t: key in t)
        self.both(lambda t: key in t.keys())  # noqa: SIM118  (the view is under test)

    @rule(key=keys(), value=values())
    def item_and_value_in_views(self, key: Any, value: Any) -> None:
        self.both(lambda t: (key, value) in t.items())
        self.both(lambda t: value in t.values())

    @rule()
    def sizes(self) -> None:
        self.both(len)
        self.both(bool)
        self.both(lambda t: (len(t.keys()), len(t.values()), len(t.items())))

    # -- single-key writes ----------------------------------------------------------------

    @rule(key=keys(), value=values())
    def setitem(self, key: Any, value: Any) -> None:
        self.both(lambda t: t.__setitem__(key, value))

    @rule(key=keys())
    def delitem(self, key: Any) -> None:
        self.both(lambda t: t.__delitem__(key))

    @rule(key=keys(), default=values(), with_default=st.booleans())
    def pop(self, key: Any, default: Any, with_default: bool) -> None:
        if with_default:
            self.both(lambda t: t.pop(key, default))
        else:
            self.both(lambda t: t.pop(key))

    @rule()
    def popitem(self) -> None:
        self.both(lambda t: t.popitem())

    @rule(key=keys(), default=values(), with_default=st.booleans())
    def setdefault(self, key: Any, default: Any, with_default: bool) -> None:
        if with_default:
            self.both(lambda t: t.setdefault(key, default))
        else:
            self.both(lambda t: t.setdefault(key))

    # -- many keys --------------------------------------------------------------------------

    @rule(
        pairs=st.lists(st.tuples(keys(), values()), max_size=4),
        kwargs=st.dictionaries(st.sampled_from(["a", "b", "kw"]), values(), max_size=2),
        form=st.sampled_from(["pairs", "dict", "unsafe map", "kwargs", "ior"]),
    )
    def update(self, pairs: list[tuple[Any, Any]], kwargs: dict[str, Any], form: str) -> None:
        if form == "pairs":
            self.both(lambda t: t.update(pairs, **kwargs))
        elif form == "kwargs":
            self.both(lambda t: t.update(**kwargs))
        else:
            source = _unarmed_dict(pairs)
            if source is None:
                return
            if form == "dict":
                self.both(lambda t: t.update(source))
            elif form == "unsafe map":
                # An UnsafeMap is a dict: its counterpart in the model is the plain dict.
                self.both(lambda t: t.update(UnsafeMap(source) if t is self.map else source))
            else:
                self.both(lambda t: _ior(t, source), compare=lambda a, b: a is self.map and b is self.model)

    @rule()
    def clear(self) -> None:
        self.both(lambda t: t.clear())

    @rule(pairs=st.lists(st.tuples(keys(), values()), max_size=3), reflected=st.booleans())
    def union(self, pairs: list[tuple[Any, Any]], reflected: bool) -> None:
        other = _unarmed_dict(pairs)
        if other is None:
            return
        if reflected:
            # dict | dict iterates the right operand live; UnsafeMap.__ror__ copies itself first.
            got, _ = self.both(lambda t: other | t, compare=_same_items, copies_first=True)
        else:
            got, _ = self.both(lambda t: t | other, compare=_same_items)
        if got is not None:
            assert type(got) is UnsafeMap

    @rule(key_list=st.lists(keys(), max_size=4), value=values())
    def fromkeys(self, key_list: list[Any], value: Any) -> None:
        expected = Outcome(None, lambda _: dict.fromkeys(key_list, value))
        got = Outcome(None, lambda _: UnsafeMap.fromkeys(key_list, value))
        assert got.error is expected.error
        if expected.error is None:
            assert type(got.result) is UnsafeMap and _same_items(got.result, expected.result)

    # -- whole-map reads ----------------------------------------------------------------------

    @rule(pairs=st.lists(st.tuples(keys(), values()), max_size=3), as_unsafe_map=st.booleans())
    def equality(self, pairs: list[tuple[Any, Any]], as_unsafe_map: bool) -> None:
        other = _unarmed_dict(pairs)
        if other is None:
            return
        if as_unsafe_map:
            # An UnsafeMap is a dict: its counterpart in the model is the plain dict.
            self.both(lambda t: t == (UnsafeMap(other) if t is self.map else other))
        else:
            self.both(lambda t: t == other)
            self.both(lambda t: t != other)
        self.both(lambda t: t == dict(t.items()))
        self.both(lambda t: t.keys() == set(other))

    @rule()
    def representation(self) -> None:
        self.both(repr, compare=lambda a, b: a == f"UnsafeMap({b})")

    @rule()
    def copies(self) -> None:
        for make in (lambda t: t.copy(), copy.copy):
            got, _ = self.both(make, compare=_same_items)
            assert type(got) is UnsafeMap and got is not self.map

    @rule()
    def pickles(self) -> None:
        self.both(lambda t: repr(dict(pickle.loads(pickle.dumps(t)).items())), compare=lambda a, b: a == b)

    @rule(kind=st.sampled_from(["list", "keys", "values", "items", "reversed"]))
    def whole_iteration(self, kind: str) -> None:
        self.both(ITERATE[kind])

    # -- iteration interleaved with writes ----------------------------------------------------

    @rule(kind=st.sampled_from(list(STEPPERS := ["iter", "keys", "values", "items", "reversed", "rvalues"])))
    def start_iteration(self, kind: str) -> None:
        make = MAKE_ITERATOR[kind]
        self.iterators.append((make(self.model), make(self.map)))

    @precondition(lambda self: bool(self.iterators))
    @rule(data=st.data())
    def step_iteration(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.iterators) - 1))
        expected_it, got_it = self.iterators[index]
        expected = Outcome(None, lambda _: next(expected_it))
        got = Outcome(None, lambda _: next(got_it))
        # StopIteration is an Exception: Outcome records it like any other.
        assert got.error is expected.error, f"map {got}, dict {expected}"
        if expected.error is None:
            assert same(got.result, expected.result), f"map {got}, dict {expected}"
        else:
            del self.iterators[index]

    # -- the two always agree -------------------------------------------------------------------

    @invariant()
    def same_contents_in_the_same_order(self) -> None:
        got = list(self.map.items())  # iteration hashes nothing: no callback runs
        expected = list(self.model.items())
        assert len(got) == len(expected) and all(
            a is c and b is d for (a, b), (c, d) in zip(got, expected, strict=True)
        ), f"map {got}, dict {expected}"
        assert self.map.reports == []


ITERATE: dict[str, Callable[[Any], Any]] = {
    "list": list,
    "keys": lambda t: list(t.keys()),
    "values": lambda t: list(t.values()),
    "items": lambda t: list(t.items()),
    "reversed": lambda t: list(reversed(t)),
}

MAKE_ITERATOR: dict[str, Callable[[Any], Any]] = {
    "iter": iter,
    "keys": lambda t: iter(t.keys()),
    "values": lambda t: iter(t.values()),
    "items": lambda t: iter(t.items()),
    "reversed": reversed,
    "rvalues": lambda t: reversed(t.values()),
}


def _ior(target: Any, source: dict[Any, Any]) -> Any:
    target |= source
    return target


def _unarmed_dict(pairs: list[tuple[Any, Any]]) -> dict[Any, Any] | None:
    """A dict of pairs, built while no callback acts; None if the keys refuse."""
    try:
        return dict(pairs)
    except Exception:
        return None


def _same_items(a: Any, b: Any) -> bool:
    got, expected = list(a.items()), list(b.items())
    return len(got) == len(expected) and all(
        x is z and y is w for (x, y), (z, w) in zip(got, expected, strict=True)
    )


SETTINGS = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.thread_unsafe(reason="hypothesis runs one state machine at a time")
def test_unsafe_map_matches_a_dict() -> None:
    # On another thread with a timeout: a deadlock fails this test instead of hanging the run.
    within(600, lambda: run_state_machine_as_test(UnsafeMapAgainstDict, settings=SETTINGS))
