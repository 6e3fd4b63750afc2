"""ShardedMap against a model, operation by operation (hypothesis stateful testing).

The model (``ShardedModel``) is the specification written plainly: one dict,
and a flag that says an operation is "under the lock". It borrows from the
map only its placement (``shard_index``, public), which decides the order of
iteration (shard by shard, each shard in insertion order), the order in which
``mset`` stores, and which item ``popitem`` takes. Everything else is stated
independently: recursion refused while locked (RecursiveUpdateError), markers
refused as values (ValueError) and meaning "absent" as callback results,
the order of checks (marker, recursion, placement, then the dict operation).

Keys: tests/hostile.py's (raising ``__hash__``/``__eq__``, unhashable, NaN,
1 == 1.0 == True) and keys whose ``__hash__`` or ``__eq__`` read the map, or
whose ``__eq__`` writes it (a key whose ``__hash__`` writes is not here: the
pure-Python map calls ``__hash__`` again under the lock, a C core that hashes
once need not; test_sharded.py checks that one never deadlocks). Callbacks
that read the whole map, write it, raise, or return markers. Results and
exception types must agree, and the contents after every step. The machine
drives whatever ``from ftmap import ShardedMap`` gives.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable, Iterable, Iterator, Mapping
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

from ftmap import DELETE, MISSING, RecursiveUpdateError, ShardedMap, _impl
from ftmap._base import ItemsBackedMap, same_value
from tests.hostile import CallbackKey, HostileError, hostile_keys
from tests.hostile import values as plain_values
from tests.threads import within
from tests.unit.test_unsafe_model import TARGET, Outcome, read_target, same, write_target

SHARDS = 4

CALLBACK_KEYS = [
    CallbackKey(name, callback, on_hash=on_hash)
    for name, callback, on_hash in (
        ("reads on hash", read_target, True),
        ("reads on eq", read_target, False),
        ("writes on eq", write_target, False),
    )
    for _ in range(2)
]


def keys() -> st.SearchStrategy[Any]:
    return st.one_of(hostile_keys(), st.sampled_from(CALLBACK_KEYS))


def values() -> st.SearchStrategy[Any]:
    return st.one_of(plain_values(), st.sampled_from([MISSING, DELETE]))


def unarmed(fn: Callable[[], Any]) -> Any:
    """fn() with the callbacks of CallbackKeys switched off (the model's own bookkeeping)."""
    saved, TARGET[0] = TARGET[0], None
    try:
        return fn()
    finally:
        TARGET[0] = saved


class ShardedModel(ItemsBackedMap[Any, Any]):
    """ShardedMap's semantics over one dict, stated as plainly as possible."""

    def __init__(self, index: Callable[[Any], int], other: Any = (), /, **kwargs: Any) -> None:
        self.d: dict[Any, Any] = {}
        self.index = index  # the map's shard_index: placement, public API
        self.locked: str | None = None
        if other or kwargs:
            self.update(other, **kwargs)

    # -- the rules ----------------------------------------------------------------------

    def _not_locked(self) -> None:
        if self.locked is not None:
            raise RecursiveUpdateError("ShardedMap", "write", self.locked)

    @staticmethod
    def _not_marker(value: Any) -> None:
        if value is MISSING or value is DELETE:
            raise ValueError(f"{value!r} cannot be stored")

    def _write(self, op: str, key: Any, fn: Callable[[], Any]) -> Any:
        self._not_locked()
        hash(key)  # placement: raises as hash((key,)) does, runs __hash__ with no lock
        self.locked = op
        try:
            return fn()
        finally:
            self.locked = None

    def _settle(self, key: Any, old: Any, new: Any) -> Any:
        if new is MISSING or new is DELETE:
            if old is not MISSING:
                del self.d[key]
            return MISSING
        self.d[key] = new
        return new

    # -- reads --------------------------------------------------------------------------

    def __getitem__(self, key: Any) -> Any:
        hash(key)
        return self.d[key]

    def get(self, key: Any, default: Any = None) -> Any:
        hash(key)
        return self.d.get(key, default)

    def __contains__(self, key: object) -> bool:
        hash(key)
        return key in self.d

    def __len__(self) -> int:
        return len(self.d)

    def _items(self) -> Iterator[tuple[Any, Any]]:
        for shard in range(SHARDS):  # each shard copied when the iteration reaches it
            yield from [(k, v) for k, v in list(self.d.items()) if self._shard_of(k) == shard]

    def _shard_of(self, key: Any) -> int:
        return unarmed(lambda: self.index(key))  # type: ignore[no-any-return]

    def _repr_options(self) -> str:
        return f", shards={SHARDS}"

    def copy(self) -> ShardedModel:
        duplicate = ShardedModel(self.index)
        duplicate.mset(dict(self._items()))
        return duplicate

    __copy__ = copy

    # -- single-key writes ------------------------------------------------------------------

    def __setitem__(self, key: Any, value: Any) -> None:
        self._not_marker(value)
        self._write("set", key, lambda: self.d.__setitem__(key, value))

    def __delitem__(self, key: Any) -> None:
        self._write("delete", key, lambda: self.d.__delitem__(key))

    def pop(self, key: Any, *default: Any) -> Any:
        return self._write("pop", key, lambda: self.d.pop(key, *default))

    def setdefault(self, key: Any, default: Any = None) -> Any:
        self._not_marker(default)
        return self._write("setdefault", key, lambda: self.d.setdefault(key, default))

    def set_if_absent(self, key: Any, value: Any) -> bool:
        self._not_marker(value)

        def locked() -> bool:
            if key in self.d:
                return False
            self.d[key] = value
            return True

        return self._write("set_if_absent", key, locked)  # type: ignore[no-any-return]

    def replace(self, key: Any, old: Any, new: Any) -> bool:
        self._not_marker(new)

        def locked() -> bool:
            current = self.d.get(key, MISSING)
            if current is MISSING or not same_value(current, old):
                return False
            self.d[key] = new
            return True

        return self._write("replace", key, locked)  # type: ignore[no-any-return]

    def remove(self, key: Any, old: Any) -> bool:
        def locked() -> bool:
            current = self.d.get(key, MISSING)
            if current is MISSING or not same_value(current, old):
                return False
            del self.d[key]
            return True

        return self._write("remove", key, locked)  # type: ignore[no-any-return]

    # -- compound ----------------------------------------------------------------------------

    def compute(self, key: Any, fn: Callable[[Any], Any]) -> Any:
        def locked() -> Any:
            old = self.d.get(key, MISSING)
            return self._settle(key, old, fn(old))

        return self._write("compute", key, locked)

    def compute_if_absent(self, key: Any, factory: Callable[[Any], Any]) -> Any:
        value = self.get(key, MISSING)  # no lock
        if value is not MISSING:
            return value

        def locked() -> Any:
            value = self.d.get(key, MISSING)
            if value is MISSING:
                value = factory(key)
                if value is MISSING or value is DELETE:
                    return MISSING
                self.d[key] = value
            return value

        return self._write("compute_if_absent", key, locked)

    def compute_if_present(self, key: Any, fn: Callable[[Any], Any]) -> Any:
        def locked() -> Any:
            old = self.d.get(key, MISSING)
            return MISSING if old is MISSING else self._settle(key, old, fn(old))

        return self._write("compute_if_present", key, locked)

    def merge(self, key: Any, value: Any, fn: Callable[[Any, Any], Any]) -> Any:
        self._not_marker(value)

        def locked() -> Any:
            old = self.d.get(key, MISSING)
            if old is MISSING:
                self.d[key] = value
                return value
            return self._settle(key, old, fn(old, value))

        return self._write("merge", key, locked)

    def upsert(self, key: Any, value: Any, cb: Callable[[bool, Any, Any], Any]) -> Any:
        def locked() -> Any:
            old = self.d.get(key, MISSING)
            exists = old is not MISSING
            return self._settle(key, old, cb(exists, old if exists else None, value))

        return self._write("upsert", key, locked)

    def remove_if(self, key: Any, predicate: Callable[[Any, Any, bool], Any]) -> bool:
        def locked() -> bool:
            old = self.d.get(key, MISSING)
            exists = old is not MISSING
            if predicate(key, old if exists else None, exists) and exists:
                del self.d[key]
                return True
            return False

        return self._write("remove_if", key, locked)  # type: ignore[no-any-return]

    # -- many keys ---------------------------------------------------------------------------

    def mset(self, mapping: Mapping[Any, Any]) -> None:
        self._store_all(mapping.items())

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        items = dict(other.items()) if isinstance(other, Mapping) else dict(other)
        items.update(kwargs)
        self._store_all(items.items())

    def _store_all(self, items: Iterable[tuple[Any, Any]]) -> None:
        self._not_locked()
        pairs = list(items)
        for _, value in pairs:
            self._not_marker(value)
        groups: dict[int, list[tuple[Any, Any]]] = {}
        for key, value in pairs:
            groups.setdefault(self.index(key), []).append((key, value))  # placement, armed
        for group in groups.values():
            self.locked = "mset"
            try:
                for key, value in group:
                    self.d[key] = value
            finally:
                self.locked = None

    def __ior__(self, other: Any) -> ShardedModel:
        self.update(other)
        return self

    def __or__(self, other: Any) -> ShardedModel:
        merged = self.copy()
        merged.update(other)
        return merged

    def __ror__(self, other: Any) -> ShardedModel:
        merged = ShardedModel(self.index, other)
        merged.update(self)
        return merged

    def clear(self) -> None:
        self._not_locked()
        self.d.clear()

    def popitem(self) -> tuple[Any, Any]:
        self._not_locked()
        for shard in range(SHARDS):
            in_shard = [k for k in self.d if self._shard_of(k) == shard]
            if in_shard:
                return (in_shard[-1], self.d.pop(in_shard[-1]))
        raise KeyError("popitem(): ShardedMap is empty")


# -- callbacks of compound operations ----------------------------------------------------------


def _reads_everything(target: Any) -> int:
    list(target)
    repr(target)
    target == {}  # noqa: B015  (the read is the point)
    copy.copy(target)
    target.copy()
    return len(dict(target.items())) + len(target) + len(list(target.values()))


def _callback(kind: str, value: Any) -> Callable[..., Any]:
    def callback(*args: Any) -> Any:
        target = TARGET[0]
        if kind == "returns":
            return value
        if kind == "identity":
            return args[0] if args else value
        if kind == "reads the whole map":
            return _reads_everything(target)
        if kind == "writes the map":
            target["written"] = 1
            return value
        if kind == "increments":
            return args[0] + 1 if type(args[0]) is int else value
        raise HostileError("callback refused")

    return callback


def callbacks() -> st.SearchStrategy[Callable[..., Any]]:
    kinds = st.sampled_from(
        ["returns", "identity", "reads the whole map", "writes the map", "increments", "raises"]
    )
    return st.builds(_callback, kinds, values())


def predicates() -> st.SearchStrategy[Callable[..., Any]]:
    return st.sampled_from(
        [
            lambda k, v, exists: exists,
            lambda k, v, exists: not exists,
            lambda k, v, exists: _reads_everything(TARGET[0]) >= 0 and exists,
            lambda k, v, exists: TARGET[0].pop("written", None),
        ]
    )


def _same_content(a: Any, b: Any) -> bool:
    """The same keys (by identity) with the same values, whatever the order."""
    got = {id(k): v for k, v in a.items()}
    expected = {id(k): v for k, v in b.items()}
    return got.keys() == expected.keys() and all(same(got[k], expected[k]) for k in got)


def _unarmed_dict(pairs: list[tuple[Any, Any]]) -> dict[Any, Any] | None:
    try:
        return unarmed(lambda: dict(pairs))
    except Exception:
        return None


class ShardedMapAgainstModel(RuleBasedStateMachine):
    map_class: Any = ShardedMap  # the implementation under test (set per variant below)

    def __init__(self) -> None:
        super().__init__()
        self.map: ShardedMap[Any, Any] = self.map_class(shards=SHARDS)
        self.model = ShardedModel(self.map.shard_index)
        self.iterators: list[tuple[Iterator[Any], Iterator[Any]]] = []

    def both(self, fn: Callable[[Any], Any], compare: Callable[[Any, Any], bool] = same) -> tuple[Any, Any]:
        expected = Outcome(self.model, fn)
        got = Outcome(self.map, fn)
        assert got.error is expected.error, f"map {got}, model {expected}"
        if expected.error is None:
            assert compare(got.result, expected.result), f"map {got}, model {expected}"
        return got.result, expected.result

    @initialize(pairs=st.lists(st.tuples(keys(), values()), max_size=5), kwargs=st.booleans())
    def construct(self, pairs: list[tuple[Any, Any]], kwargs: bool) -> None:
        extra = {"kw": 1} if kwargs else {}
        model = Outcome(None, lambda _: ShardedModel(self.map.shard_index, pairs, **extra))
        built = Outcome(None, lambda _: self.map_class(pairs, SHARDS, **extra))
        assert built.error is model.error, f"map {built}, model {model}"
        if model.error is None:
            assert _same_content(built.result, model.result)
            self.map, self.model = built.result, model.result
            self.model.index = self.map.shard_index

    # -- reads ---------------------------------------------------------------------------------

    @rule(key=keys(), default=values())
    def single_key_reads(self, key: Any, default: Any) -> None:
        self.both(lambda t: t[key])
        self.both(lambda t: t.get(key))
        self.both(lambda t: t.get(key, default))
        self.both(lambda t: key in t)
        self.both(lambda t: key in t.keys())  # noqa: SIM118  (the view is under test)

    @rule(key=keys(), value=values())
    def views(self, key: Any, value: Any) -> None:
        self.both(lambda t: (key, value) in t.items())
        self.both(lambda t: value in t.values())
        self.both(lambda t: (len(t), len(t.keys()), len(t.values()), len(t.items()), bool(t)))

    @rule(pairs=st.lists(st.tuples(keys(), values()), max_size=3))
    def whole_map_reads(self, pairs: list[tuple[Any, Any]]) -> None:
        other = _unarmed_dict(pairs)
        if other is None:
            return
        self.both(lambda t: t == other)
        self.both(lambda t: t != other)
        self.both(lambda t: [id(k) for k in t])
        self.both(lambda t: list(t.items()))
        self.both(lambda t: list(t.values()))
        self.both(lambda t: len(repr(t)) - len(type(t).__name__))
        self.both(lambda t: t.copy(), compare=_same_content)
        self.both(copy.copy, compare=_same_content)

    @rule()
    def pickles(self) -> None:
        got = Outcome(self.map, lambda t: pickle.loads(pickle.dumps(t)))
        if got.error is None:
            assert len(got.result) == len(self.map) and got.result.shards == SHARDS
        assert sum(self.map.shard_sizes()) == len(self.model)

    # -- single-key writes -------------------------------------------------------------------------

    @rule(key=keys(), value=values())
    def setitem(self, key: Any, value: Any) -> None:
        self.both(lambda t: t.__setitem__(key, value))

    @rule(key=keys())
    def delitem(self, key: Any) -> None:
        self.both(lambda t: t.__delitem__(key))

    @rule(key=keys(), default=values(), with_default=st.booleans())
    def pop(self, key: Any, default: Any, with_default: bool) -> None:
        self.both(lambda t: t.pop(key, default) if with_default else t.pop(key))

    @rule(key=keys(), default=values(), with_default=st.booleans())
    def setdefault(self, key: Any, default: Any, with_default: bool) -> None:
        self.both(lambda t: t.setdefault(key, default) if with_default else t.setdefault(key))

    @rule(key=keys(), value=values())
    def set_if_absent(self, key: Any, value: Any) -> None:
        self.both(lambda t: t.set_if_absent(key, value))

    @rule(key=keys(), old=values(), new=values())
    def replace_and_remove(self, key: Any, old: Any, new: Any) -> None:
        self.both(lambda t: t.replace(key, old, new))
        self.both(lambda t: t.remove(key, old))

    @rule()
    def popitem(self) -> None:
        self.both(lambda t: t.popitem())

    # -- compound operations -------------------------------------------------------------------------

    @rule(key=keys(), fn=callbacks())
    def compute(self, key: Any, fn: Callable[..., Any]) -> None:
        self.both(lambda t: t.compute(key, fn))

    @rule(key=keys(), fn=callbacks())
    def compute_if_absent(self, key: Any, fn: Callable[..., Any]) -> None:
        self.both(lambda t: t.compute_if_absent(key, fn))

    @rule(key=keys(), fn=callbacks())
    def compute_if_present(self, key: Any, fn: Callable[..., Any]) -> None:
        self.both(lambda t: t.compute_if_present(key, fn))

    @rule(key=keys(), value=values(), fn=callbacks())
    def merge(self, key: Any, value: Any, fn: Callable[..., Any]) -> None:
        self.both(lambda t: t.merge(key, value, fn))

    @rule(key=keys(), value=values(), fn=callbacks())
    def upsert(self, key: Any, value: Any, fn: Callable[..., Any]) -> None:
        self.both(lambda t: t.upsert(key, value, fn))

    @rule(key=keys(), predicate=predicates())
    def remove_if(self, key: Any, predicate: Callable[..., Any]) -> None:
        self.both(lambda t: t.remove_if(key, predicate))

    # -- many keys ------------------------------------------------------------------------------------

    @rule(
        pairs=st.lists(st.tuples(keys(), values()), max_size=4),
        kwargs=st.dictionaries(st.sampled_from(["a", "b", "kw"]), values(), max_size=2),
        form=st.sampled_from(["mset", "pairs", "dict", "sharded map", "ior"]),
    )
    def bulk(self, pairs: list[tuple[Any, Any]], kwargs: dict[str, Any], form: str) -> None:
        if form == "pairs":
            self.both(lambda t: t.update(pairs, **kwargs))
            return
        source = _unarmed_dict(pairs)
        if source is None:
            return
        if form == "mset":
            self.both(lambda t: t.mset(source))
        elif form == "dict":
            self.both(lambda t: t.update(source, **kwargs))
        elif form == "sharded map":
            other = Outcome(None, lambda _: unarmed(lambda: ShardedMap(source, 2)))
            if other.error is None:
                self.both(lambda t: t.update(other.result))
        else:
            self.both(lambda t: _ior(t, source), compare=lambda a, b: a is self.map and b is self.model)

    @rule(pairs=st.lists(st.tuples(keys(), values()), max_size=3), reflected=st.booleans())
    def union(self, pairs: list[tuple[Any, Any]], reflected: bool) -> None:
        other = _unarmed_dict(pairs)
        if other is not None:
            self.both(lambda t: (other | t) if reflected else (t | other), compare=_same_content)

    @rule()
    def clear(self) -> None:
        self.both(lambda t: t.clear())

    # -- iteration interleaved with writes ------------------------------------------------------------

    @rule(kind=st.sampled_from(["keys", "values", "items"]))
    def start_iteration(self, kind: str) -> None:
        make: Callable[[Any], Iterator[Any]] = {
            "keys": iter,
            "values": lambda t: iter(t.values()),
            "items": lambda t: iter(t.items()),
        }[kind]
        self.iterators.append((make(self.model), make(self.map)))

    @precondition(lambda self: bool(self.iterators))
    @rule(data=st.data())
    def step_iteration(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.iterators) - 1))
        expected_it, got_it = self.iterators[index]
        expected = Outcome(None, lambda _: next(expected_it))
        got = Outcome(None, lambda _: next(got_it))
        assert got.error is expected.error, f"map {got}, model {expected}"
        if expected.error is None:
            assert same(got.result, expected.result), f"map {got}, model {expected}"
        else:
            del self.iterators[index]

    # -- always ---------------------------------------------------------------------------------------

    @invariant()
    def same_contents_and_nothing_held(self) -> None:
        got, expected = list(self.map.items()), list(self.model.items())
        # the same pairs in the same (shard by shard) order
        assert same(got, expected), f"map {got}, model {expected}"
        assert self.map.shard_sizes() == [
            sum(1 for k in self.model.d if unarmed(lambda k=k: self.map.shard_index(k)) == shard)
            for shard in range(SHARDS)
        ]
        # Both implementations' test hook: no thread marked as holding a shard lock, none held.
        state = self.map._debug_state()
        assert not state["marked"] and not state["locked"], state

    def teardown(self) -> None:
        # No shard is left locked: another thread writes every one of them.
        m = self.map
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


def _ior(target: Any, source: dict[Any, Any]) -> Any:
    target |= source
    return target


SETTINGS = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.thread_unsafe(reason="hypothesis runs one state machine at a time")
@pytest.mark.parametrize("implementation", list(_impl.variants("ShardedMap")))
def test_sharded_map_matches_its_model(implementation: str) -> None:
    # Every implementation importable here (C and pure), whichever ftmap selected.
    machine = type(
        f"ShardedMapAgainstModel_{implementation}",
        (ShardedMapAgainstModel,),
        {"map_class": _impl.variants("ShardedMap")[implementation]},
    )
    # On another thread with a timeout: a deadlock fails this test instead of hanging the run.
    within(600, lambda: run_state_machine_as_test(machine, settings=SETTINGS))
