"""ShardedMap: the C implementation against the pure-Python one, operation by operation (issue 11).

One hypothesis state machine drives ``_impl.variants("ShardedMap")["c"]`` and the pure class
with the same operations (every method, tests/hostile.py's keys: raising ``__hash__``/``__eq__``,
unhashable, NaN, 1 == 1.0 == True; keys whose ``__hash__`` or ``__eq__`` reads or writes the map
under test; markers as values; callbacks that read the whole map, write it, raise or return
markers; custom hashers, one of which fails for some keys) and asserts after every operation:
the same result, the same exception type AND message, the same contents in the same (shard by
shard) order, the same ``shard_index`` and ``shard_sizes``, and no shard lock held or marked.
Skipped where the C core cannot be imported.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from ftmap import DELETE, MISSING, _impl
from tests.hostile import CallbackKey, hostile_keys
from tests.threads import within
from tests.unit.test_sharded_model import _callback, _ior, predicates
from tests.unit.test_sharded_model import values as marker_values
from tests.unit.test_unsafe_model import TARGET, read_target, same, write_target

VARIANTS = _impl.variants("ShardedMap")
pytestmark = pytest.mark.skipif("c" not in VARIANTS, reason="the C core is not importable here")

SHARDS = 4

# Two of each name: a stored key and a looked-up one are equal but not identical. Unlike the
# model test, keys whose __hash__ writes the map are in: both implementations hash once for the
# placement (no lock) and again inside the dict operation (under the lock), so both refuse.
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


def callbacks() -> st.SearchStrategy[Callable[..., Any]]:
    kinds = st.sampled_from(
        ["returns", "identity", "reads the whole map", "writes the map", "increments", "raises"]
    )
    return st.builds(_callback, kinds, marker_values())


def _shifted(key: Any) -> int:
    return hash(key) >> 3


def _float_for_strings(key: Any) -> Any:
    return 1.5 if isinstance(key, str) else hash(key)


HASHERS: dict[str, Callable[[Any], Any] | None] = {
    "default (FNV)": None,
    "shifted hash": _shifted,
    "float for strings": _float_for_strings,
}


class Result:
    """What running fn gave: a result, or an exception (type and message)."""

    def __init__(self, target: Any, fn: Callable[[Any], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        TARGET[0] = target
        try:
            self.result = fn(target)
        except Exception as error:
            self.error = error
        finally:
            TARGET[0] = None

    def describe(self) -> tuple[type[BaseException], str] | None:
        return None if self.error is None else (type(self.error), str(self.error))

    def __repr__(self) -> str:
        return f"raised {self.error!r}" if self.error is not None else f"returned {self.result!r}"


def _same_items(a: Any, b: Any) -> bool:
    return same(list(a.items()), list(b.items()))


def _same_reprs(a: Any, b: Any) -> bool:
    return sorted(map(repr, a.items())) == sorted(map(repr, b.items())) and a.shards == b.shards


class CAgainstPure(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.hasher: Callable[[Any], Any] | None = None
        self.pure = VARIANTS["python"](shards=SHARDS)
        self.c = VARIANTS["c"](shards=SHARDS)
        self.iterators: list[tuple[Iterator[Any], Iterator[Any]]] = []

    def both(self, fn: Callable[[Any], Any], compare: Callable[[Any, Any], bool] = same) -> None:
        expected = Result(self.pure, fn)
        got = Result(self.c, fn)
        assert got.describe() == expected.describe(), f"C {got}, pure {expected}"
        if expected.error is None:
            assert compare(got.result, expected.result), f"C {got}, pure {expected}"

    @initialize(
        pairs=st.lists(st.tuples(keys(), marker_values()), max_size=5),
        kwargs=st.booleans(),
        hasher=st.sampled_from(list(HASHERS)),
    )
    def construct(self, pairs: list[tuple[Any, Any]], kwargs: bool, hasher: str) -> None:
        extra = {"kw": 1} if kwargs else {}
        self.hasher = HASHERS[hasher]
        pure = Result(None, lambda _: VARIANTS["python"](pairs, SHARDS, hasher=self.hasher, **extra))
        c = Result(None, lambda _: VARIANTS["c"](pairs, SHARDS, hasher=self.hasher, **extra))
        assert c.describe() == pure.describe(), f"C {c}, pure {pure}"
        if pure.error is None:
            assert _same_items(c.result, pure.result)
            self.pure, self.c = pure.result, c.result

    # -- reads --------------------------------------------------------------------------------

    @rule(key=keys(), default=marker_values())
    def single_key_reads(self, key: Any, default: Any) -> None:
        self.both(lambda t: t[key])
        self.both(lambda t: t.get(key))
        self.both(lambda t: t.get(key, default))
        self.both(lambda t: key in t)
        self.both(lambda t: t.shard_index(key))

    @rule()
    def whole_map_reads(self) -> None:
        self.both(lambda t: [id(k) for k in t])
        self.both(lambda t: list(t.values()))
        self.both(lambda t: (len(t), bool(t), t.shard_sizes(), t.shards))
        self.both(lambda t: repr(t).split("(", 1)[1])
        self.both(lambda t: t.copy(), compare=_same_items)
        self.both(copy.copy, compare=_same_items)
        self.both(lambda t: t == dict(self.pure.items()))

    @rule()
    def pickles(self) -> None:
        # Unpickled keys and values are copies: a NaN is no longer itself, and its hash (its id)
        # places it anywhere. Compare the items' reprs, in any order.
        self.both(lambda t: pickle.loads(pickle.dumps(t)), compare=_same_reprs)

    # -- single-key writes --------------------------------------------------------------------

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

    @rule()
    def popitem(self) -> None:
        self.both(lambda t: t.popitem())

    # -- compound operations ------------------------------------------------------------------

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

    # -- many keys ----------------------------------------------------------------------------

    @rule(
        pairs=st.lists(st.tuples(keys(), marker_values()), max_size=4),
        kwargs=st.dictionaries(st.sampled_from(["a", "b", "kw"]), marker_values(), max_size=2),
        form=st.sampled_from(["mset", "pairs", "ior", "or", "ror"]),
    )
    def bulk(self, pairs: list[tuple[Any, Any]], kwargs: dict[str, Any], form: str) -> None:
        if form == "pairs":
            self.both(lambda t: t.update(pairs, **kwargs))
            return
        try:
            TARGET[0] = None
            source = dict(pairs)
        except Exception:
            return
        if form == "mset":
            self.both(lambda t: t.mset(source))
        elif form == "ior":
            self.both(lambda t: _ior(t, source) is t)
        elif form == "or":
            self.both(lambda t: t | source, compare=_same_items)
        else:
            self.both(lambda t: source | t, compare=_same_items)

    @rule()
    def clear(self) -> None:
        self.both(lambda t: t.clear())

    # -- iteration interleaved with writes ----------------------------------------------------

    @rule(kind=st.sampled_from(["keys", "values", "items"]))
    def start_iteration(self, kind: str) -> None:
        make: Callable[[Any], Iterator[Any]] = {
            "keys": iter,
            "values": lambda t: iter(t.values()),
            "items": lambda t: iter(t.items()),
        }[kind]
        self.iterators.append((make(self.pure), make(self.c)))

    @precondition(lambda self: bool(self.iterators))
    @rule(data=st.data())
    def step_iteration(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.iterators) - 1))
        pure_it, c_it = self.iterators[index]
        expected = Result(None, lambda _: next(pure_it))
        got = Result(None, lambda _: next(c_it))
        assert got.describe() == expected.describe(), f"C {got}, pure {expected}"
        if expected.error is None:
            assert same(got.result, expected.result), f"C {got}, pure {expected}"
        else:
            del self.iterators[index]

    # -- always -------------------------------------------------------------------------------

    @invariant()
    def same_contents_and_nothing_held(self) -> None:
        assert _same_items(self.c, self.pure), f"C {list(self.c.items())}, pure {list(self.pure.items())}"
        assert self.c.shard_sizes() == self.pure.shard_sizes()
        for state in (self.c._debug_state(), self.pure._debug_state()):
            assert not state["marked"] and not state["locked"], state

    def teardown(self) -> None:
        m = self.c  # another thread writes every shard: none is left locked
        probes: dict[int, int] = {}
        i = 10_000
        while len(probes) < m.shards:
            probes.setdefault(m.shard_index(i), i)
            i += 1

        def probe() -> None:
            for key in probes.values():
                m[key] = 1
                del m[key]

        within(10, probe)


SETTINGS = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.thread_unsafe(reason="hypothesis runs one state machine at a time")
def test_c_sharded_map_matches_the_pure_one() -> None:
    within(600, lambda: run_state_machine_as_test(CAgainstPure, settings=SETTINGS))


def test_shard_index_agrees_between_implementations() -> None:
    families: list[Any] = [*range(-500, 500), *(f"k{i}" for i in range(500)), *(i << 40 for i in range(200))]
    families += [(i, "x") for i in range(200)] + [i / 8 for i in range(200)] + [MISSING, DELETE, None, True]
    for shards in (1, 2, 32, 1024, 1 << 20):
        pure, c = VARIANTS["python"](shards=shards), VARIANTS["c"](shards=shards)
        assert [c.shard_index(k) for k in families] == [pure.shard_index(k) for k in families], shards
