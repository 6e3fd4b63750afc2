"""ShardedMapHandle against ShardedMap, operation by operation (issue 12).

One hypothesis state machine drives, with the same random operations: a pure ShardedMap (the
reference), a pure ShardedMapHandle on another pure map and, where the C core imports (even
under FTMAP_PURE_PYTHON=1), a C ShardedMapHandle on a C map. Keys are tests/hostile.py's
(raising ``__hash__``/``__eq__``, unhashable, NaN, 1 == 1.0 == True, keys whose ``__hash__`` or
``__eq__`` reads or writes the target), values include the markers, callbacks read the whole
target, write it (a recursive update), raise or return markers; hashers vary. Each target's
callbacks and hostile keys act on that target itself (the handle for a handle), so re-entrancy
goes through the handle. After every operation: the same result, the same exception type and
message, the same contents in the same order, and no shard lock held or marked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from ftmap import _impl
from tests.threads import within
from tests.unit.test_sharded_differential import HASHERS, SHARDS, Result, callbacks, keys
from tests.unit.test_sharded_model import predicates
from tests.unit.test_sharded_model import values as marker_values
from tests.unit.test_unsafe_model import same

MAPS = _impl.variants("ShardedMap")


def _text(result: Result) -> tuple[type[BaseException], str] | None:
    described = result.describe()
    if described is None:
        return None
    kind, message = described
    # Python's argument-binding errors name the method called: the class name may differ there.
    return kind, message.replace("ShardedMapHandle.", "ShardedMap.")


class HandlesAgainstTheMap(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.setup(None)

    def setup(self, hasher: Callable[[Any], Any] | None) -> None:
        self.reference = MAPS["python"](shards=SHARDS, hasher=hasher)
        self.maps = {name: cls(shards=SHARDS, hasher=hasher) for name, cls in MAPS.items()}
        self.handles = {name: m.handle() for name, m in self.maps.items()}

    def both(self, fn: Callable[[Any], Any]) -> None:
        expected = Result(self.reference, fn)
        for name, handle in self.handles.items():
            got = Result(handle, fn)
            assert _text(got) == _text(expected), f"{name} handle {got}, map {expected}"
            if expected.error is None:
                assert same(got.result, expected.result), f"{name} handle {got}, map {expected}"

    @initialize(hasher=st.sampled_from(list(HASHERS)))
    def construct(self, hasher: str) -> None:
        self.setup(HASHERS[hasher])

    @rule(key=keys(), default=marker_values())
    def reads(self, key: Any, default: Any) -> None:
        self.both(lambda t: t[key])
        self.both(lambda t: t.get(key))
        self.both(lambda t: t.get(key, default))
        self.both(lambda t: key in t)
        self.both(lambda t: t.shard_index(key))

    @rule(key=keys(), value=marker_values())
    def setitem(self, key: Any, value: Any) -> None:
        self.both(lambda t: t.__setitem__(key, value))

    @rule(key=keys())
    def delitem(self, key: Any) -> None:
        self.both(lambda t: t.__delitem__(key))

    @rule(key=keys(), default=marker_values(), with_default=st.booleans())
    def pop(self, key: Any, default: Any, with_default: bool) -> None:
        self.both(lambda t: t.pop(key, default) if with_default else t.pop(key))

    @rule(key=keys(), default=marker_values(), with_default=st.booleans())
    def setdefault(self, key: Any, default: Any, with_default: bool) -> None:
        self.both(lambda t: t.setdefault(key, default) if with_default else t.setdefault(key))

    @rule(key=keys(), value=marker_values())
    def set_if_absent(self, key: Any, value: Any) -> None:
        self.both(lambda t: t.set_if_absent(key, value))

    @rule(key=keys(), old=marker_values(), new=marker_values())
    def replace_and_remove(self, key: Any, old: Any, new: Any) -> None:
        self.both(lambda t: t.replace(key, old, new))
        self.both(lambda t: t.remove(key, old))

    @rule(key=keys(), fn=callbacks())
    def compute(self, key: Any, fn: Callable[..., Any]) -> None:
        self.both(lambda t: t.compute(key, fn))

    @rule(key=keys(), fn=callbacks())
    def compute_if_absent(self, key: Any, fn: Callable[..., Any]) -> None:
        self.both(lambda t: t.compute_if_absent(key, fn))

    @rule(key=keys(), fn=callbacks())
    def compute_if_present(self, key: Any, fn: Callable[..., Any]) -> None:
        self.both(lambda t: t.compute_if_present(key, fn))

    @rule(key=keys(), value=marker_values(), fn=callbacks())
    def merge(self, key: Any, value: Any, fn: Callable[..., Any]) -> None:
        self.both(lambda t: t.merge(key, value, fn))

    @rule(key=keys(), value=marker_values(), fn=callbacks())
    def upsert(self, key: Any, value: Any, fn: Callable[..., Any]) -> None:
        self.both(lambda t: t.upsert(key, value, fn))

    @rule(key=keys(), predicate=predicates())
    def remove_if(self, key: Any, predicate: Callable[..., Any]) -> None:
        self.both(lambda t: t.remove_if(key, predicate))

    @rule()
    def whole_map(self) -> None:
        self.both(lambda t: (len(t), t.shard_sizes(), [id(k) for k in t]))

    @invariant()
    def same_contents_and_nothing_held(self) -> None:
        expected = list(self.reference.items())
        for name, m in self.maps.items():
            assert same(list(m.items()), expected), f"{name}: {list(m.items())}, map {expected}"
            state = m._debug_state()
            assert not state["marked"] and not state["locked"], (name, state)


SETTINGS = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.thread_unsafe(reason="hypothesis runs one state machine at a time")
def test_handles_match_the_map() -> None:
    # On one thread (the handles' owner): the handles take their own fast paths.
    within(600, lambda: run_state_machine_as_test(HandlesAgainstTheMap, settings=SETTINGS))
