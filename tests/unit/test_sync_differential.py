"""SyncMap's C variant against the pure-Python one (the reference), by differential testing.

Both classes from ``_impl.variants("SyncMap")`` run the same random operation sequences
(Go's API and the MutableMapping protocol, hostile keys from tests/hostile.py: raising
__hash__/__eq__, unhashable, NaN, 1 == 1.0 == True; re-entrant keys whose hooks read or
write the map; values whose __eq__ re-enters it; markers as values). After every
operation they must agree exactly: the result (the same objects), the exception type and
message, whether a hook's write took effect; and after every step their internals must
match: the read and the dirty map (keys, liveness, values, expunged marks), misses,
promotions, amended (so misses and promotion are counted exactly as the pure map does).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from ftmap import DELETE, MISSING, _impl
from tests.threads import within
from tests.unit.test_sync import check_invariants
from tests.unit.test_sync_model import HOOKS, KEYS, VALUES

VARIANTS = _impl.variants("SyncMap")
pytestmark = pytest.mark.skipif("c" not in VARIANTS, reason="the C core is not built")

Op = Callable[[Any, Any, Any, Any], Any]


def _delitem(m: Any, k: Any) -> None:
    del m[k]


def _range(m: Any, stop_after: int) -> list[tuple[Any, Any]]:
    seen: list[tuple[Any, Any]] = []

    def fn(k: Any, v: Any) -> bool:
        seen.append((k, v))
        return len(seen) < stop_after

    m.range(fn)
    return seen


OPS: dict[str, Op] = {
    "load": lambda m, k, v, w: m.load(k),
    "store": lambda m, k, v, w: m.store(k, v),
    "setitem": lambda m, k, v, w: m.__setitem__(k, v),
    "getitem": lambda m, k, v, w: m[k],
    "get": lambda m, k, v, w: m.get(k),
    "get_default": lambda m, k, v, w: m.get(k, v),
    "contains": lambda m, k, v, w: k in m,
    "delitem": lambda m, k, v, w: _delitem(m, k),
    "pop": lambda m, k, v, w: m.pop(k),
    "pop_default": lambda m, k, v, w: m.pop(k, v),
    "load_or_store": lambda m, k, v, w: m.load_or_store(k, v),
    "setdefault": lambda m, k, v, w: m.setdefault(k, v),
    "load_and_delete": lambda m, k, v, w: m.load_and_delete(k),
    "delete": lambda m, k, v, w: m.delete(k),
    "swap": lambda m, k, v, w: m.swap(k, v),
    "compare_and_swap": lambda m, k, v, w: m.compare_and_swap(k, v, w),
    "compare_and_delete": lambda m, k, v, w: m.compare_and_delete(k, v),
    "len": lambda m, k, v, w: len(m),
    "bool": lambda m, k, v, w: bool(m),
    "clear": lambda m, k, v, w: m.clear(),
    "items": lambda m, k, v, w: list(m.items()),
    "keys": lambda m, k, v, w: list(m),
    "values": lambda m, k, v, w: list(m.values()),
    "popitem": lambda m, k, v, w: m.popitem(),
    "range": lambda m, k, v, w: _range(m, 2),
    "update": lambda m, k, v, w: m.update({k: v, "u": w}),
    "stats": lambda m, k, v, w: tuple(m.stats()),
    "repr": lambda m, k, v, w: repr(m).split("(", 1)[1],
    "eq": lambda m, k, v, w: m == {k: v},
}

VALUES_AND_MARKERS = st.one_of(VALUES, st.sampled_from([MISSING, DELETE]))


def same(a: Any, b: Any) -> bool:
    """The same result: the same objects (values and keys come back as stored), element by element."""
    if isinstance(a, (tuple, list)) and type(a) is type(b):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if a is b:
        return True
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and isinstance(a, (int, str, float)) and a == b


def run(m: Any, op: Op, key: Any, value: Any, other: Any) -> tuple[Any, Any, bool]:
    """(result or None, (exception type, message) or None, whether a hook's write took effect)."""
    HOOKS.map = m
    HOOKS.side_effect = False
    HOOKS.armed = True
    try:
        return op(m, key, value, other), None, HOOKS.side_effect
    except Exception as error:
        return None, (type(error), str(error)), HOOKS.side_effect
    finally:
        HOOKS.armed = False


def internals(m: Any) -> tuple[Any, ...]:
    """What must match: the read and dirty maps entry by entry (not ids), amended, misses, promotions."""
    state = m._debug_state()

    def entries(es: Any) -> Any:
        return None if es is None else [(e.key, e.live, e.value, e.expunged, e.lock_held) for e in es]

    return (entries(state.read), state.amended, entries(state.dirty), state.misses, state.promotions)


class Differential(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.py = VARIANTS["python"]()
        self.c = VARIANTS["c"]()

    @rule(name=st.sampled_from(sorted(OPS)), key=KEYS, value=VALUES_AND_MARKERS, other=VALUES_AND_MARKERS)
    def operation(self, name: str, key: Any, value: Any, other: Any) -> None:
        expected = run(self.py, OPS[name], key, value, other)
        got = run(self.c, OPS[name], key, value, other)
        assert got[1] == expected[1], f"{name}: C raised {got[1]}, Python {expected[1]}"
        assert got[2] == expected[2], f"{name}: a hook's write took effect in one variant only"
        assert same(got[0], expected[0]), f"{name}: C returned {got[0]!r}, Python {expected[0]!r}"

    @rule(n=st.integers(1, 30))
    def misses(self, n: int) -> None:
        for m in (self.py, self.c):
            for i in range(n):
                assert m.load(("absent", i)) == (None, False)

    @invariant()
    def agree(self) -> None:
        check_invariants(self.py)
        check_invariants(self.c)
        assert same(internals(self.c), internals(self.py)), (internals(self.c), internals(self.py))


SETTINGS = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_c_syncmap_behaves_exactly_as_the_pure_one() -> None:
    within(600, lambda: run_state_machine_as_test(Differential, settings=SETTINGS))


def test_the_differential_check_can_fail() -> None:
    # A C map that misses a store (here: one store the pure map gets and the C map does not)
    # must be caught by the comparison of internals.
    py, c = VARIANTS["python"](), VARIANTS["c"]()
    py.store("k", 1)
    assert not same(internals(c), internals(py))


CALLS = [
    "m.load()",
    "m.load('a', 2)",
    "m.load(key='a')",
    "m.load('a', key=1)",
    "m.load(x=1)",
    "m.store()",
    "m.store('b')",
    "m.store(key='b', value=2)",
    "m.store('b', 2, 3)",
    "m.get()",
    "m.get('a', 2, 3)",
    "m.get(key='a')",
    "m.get('zz', default=2)",
    "m.get('zz', 5)",
    "m.swap(key='a', value=3)",
    "m.load_or_store('a')",
    "m.compare_and_swap('a', 1)",
    "m.pop()",
    "m.setdefault('q', default=1)",
]


@pytest.mark.parametrize("call", CALLS)
def test_calls_bind_their_arguments_as_the_pure_methods_do(call: str) -> None:
    # The C methods take keywords where the pure ones do and raise the same TypeErrors.
    def outcome(cls: Any) -> tuple[Any, ...]:
        m = cls(a=1)
        try:
            result = eval(call, {"m": m})
        except TypeError as error:
            return ("TypeError", str(error), sorted(m.items()))
        return (result, sorted(m.items()))

    assert outcome(VARIANTS["c"]) == outcome(VARIANTS["python"])


# -- the C entries' private corners (review findings) ------------------------------------------


def test_swapping_deleted_into_an_expunged_entry_returns_without_touching_it() -> None:
    # _SyncEntry.try_swap(_SYNC_DELETED) on an expunged entry decref'd NULL (a crash).
    m = VARIANTS["c"]()
    m.store("k", 1)
    list(m)  # promote: "k" is in the read map
    m.delete("k")
    m.store("other", 2)  # builds the dirty map: "k" (deleted) becomes expunged
    assert [e.expunged for e in m._debug_state().read if e.key == "k"] == [True]
    entry = m._read[0]["k"]
    core = _impl._any_core()  # the C variant runs under FTMAP_PURE_PYTHON=1 too
    assert core is not None
    assert entry.try_swap(core._SYNC_DELETED) is not True
    assert "k" not in m and m["other"] == 2


def test_a_read_map_assigned_by_hand_is_never_read_as_entries() -> None:
    m = VARIANTS["c"]()
    m._read = ({"a": 1}, False)
    with pytest.raises(TypeError, match="not an entry"):
        m["a"]
