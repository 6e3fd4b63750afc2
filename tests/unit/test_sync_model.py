"""SyncMap against a dict, by model-based (stateful) testing (issue 13's harness).

Every operation (Go's API and the MutableMapping protocol) runs on a SyncMap and on a
dict model; results, exception types and contents must match, and SyncMap's internal
invariants must hold after every step. Keys include tests/hostile.py's (raising
__hash__/__eq__, unhashable, NaN, 1 == 1.0 == True) and re-entrant ones whose
__hash__/__eq__ read or write the map; values include ones whose __eq__ re-enters.
Promotions come from iteration and from miss-heavy sequences.

Where SyncMap may differ from a dict, by design:
- A deleted key stays in the read map (as Go's nil or expunged entry) until the next
  promotion, so a lookup that collides with it may run its __eq__: with EqRaises keys,
  SyncMap may raise HostileError where the dict does not. It must then change nothing.
- A write from a key hook that the map runs under its mutex raises RecursiveUpdateError
  (caught by the "caught" writer keys, which record whether their write happened; the
  "uncaught" ones let it fail the operation, which must then change nothing).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from ftmap import RecursiveUpdateError, SyncMap
from tests.hostile import CallbackKey, EqRaises, HostileError, hostile_keys, values
from tests.threads import within
from tests.unit.test_sync import check_invariants

_NO_RESULT = object()


class Hooks(threading.local):
    """What the re-entrant keys and values do when called; active only around a SyncMap operation.

    Thread-local: under pytest-run-parallel several state machines run at once.
    """

    def __init__(self) -> None:
        self.map: SyncMap[Any, Any] | None = None
        self.armed = False
        self.active = False  # a hook's own lookups may run hooks: no recursion
        self.side_effect = False  # a writer's store of ("side", 1) took effect

    def read(self) -> None:
        m = self.map
        if not self.armed or self.active or m is None:
            return
        self.active = True
        try:
            m.get("a")  # collides with CallbackKey("a")
            len(m)
            bool(m)
            list(m.items())
        finally:
            self.active = False

    def write(self, *, catch: bool) -> None:
        m = self.map
        if not self.armed or self.active or m is None:
            return
        self.active = True
        try:
            m.store("side", 1)
        except RecursiveUpdateError:
            if not catch:
                raise
        else:
            self.side_effect = True
        finally:
            self.active = False


HOOKS = Hooks()


class EqCallsBack:
    """A value whose __eq__ re-enters the map (the compare operations run it outside every lock)."""

    def __init__(self, n: int, *, writes: bool) -> None:
        self.n = n
        self.writes = writes

    def __eq__(self, other: object) -> bool:
        if self.writes:
            HOOKS.write(catch=False)  # never under the mutex: must always work
        else:
            HOOKS.read()
        return isinstance(other, EqCallsBack) and other.n == self.n

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"EqCallsBack({self.n}, writes={self.writes})"


def reentrant_keys() -> st.SearchStrategy[Any]:
    """CallbackKeys named like plain keys (so they collide with them), whose hooks re-enter the map."""
    callbacks = st.sampled_from(
        [
            ("reader", HOOKS.read),
            ("writer", lambda: HOOKS.write(catch=True)),
            ("writer-uncaught", lambda: HOOKS.write(catch=False)),
        ]
    )
    return st.builds(
        lambda name, cb, on_hash: CallbackKey(f"{name}", cb[1], on_hash=on_hash),
        st.sampled_from(["a", "b", "k"]),
        callbacks,
        st.booleans(),
    )


KEYS = st.one_of(hostile_keys(), reentrant_keys())
VALUES = st.one_of(values(), st.builds(EqCallsBack, st.integers(0, 2), writes=st.booleans()))


def dict_pop(d: dict[Any, Any], key: Any, *default: Any) -> Any:
    """d.pop, hashing the key first: dict.pop of an empty dict skips hashing, and SyncMap never does."""
    hash(key)
    return d.pop(key, *default)


def same_value(a: object, b: object) -> bool:
    return a is b or bool(a == b)


def outcome(fn: Any) -> tuple[Any, type[BaseException] | None]:
    try:
        return fn(), None
    except Exception as error:
        return _NO_RESULT, type(error)


class SyncMapModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.map: SyncMap[Any, Any] = SyncMap()
        self.model: dict[Any, Any] = {}
        self.eq_raises_hashes: set[int] = set()  # hashes of EqRaises keys ever stored
        HOOKS.map = self.map
        HOOKS.armed = False

    # -- running one operation on both ----------------------------------------------------

    def check(self, key: Any, on_map: Any, on_model: Any, *, compare: Any = None) -> Any:
        """Run on_map() with the hooks armed, on_model(model) on a copy; compare; adopt the model."""
        HOOKS.side_effect = False
        HOOKS.armed = True
        try:
            got, got_error = outcome(on_map)
        finally:
            HOOKS.armed = False
        model = dict(self.model)
        if HOOKS.side_effect:
            model["side"] = 1
        expected, expected_error = outcome(lambda: on_model(model))
        if got_error is not None and got_error is not expected_error:
            # Allowed only where SyncMap's lingering deleted entries or its re-entrancy rule
            # make it refuse; then the operation must have changed nothing.
            assert got_error is RecursiveUpdateError or (
                got_error is HostileError and self.may_collide_with_eq_raises(key)
            ), f"SyncMap raised {got_error.__name__}, the dict {expected_error}"
            model = dict(self.model)
            if HOOKS.side_effect:
                model["side"] = 1
        else:
            assert got_error is expected_error, f"SyncMap: {got_error}, dict: {expected_error}"
            if got_error is None:
                if compare is not None:
                    compare(got, expected)
                else:
                    assert self.same_result(got, expected), f"SyncMap returned {got!r}, the dict {expected!r}"
        self.model = model
        return got

    def may_collide_with_eq_raises(self, key: Any) -> bool:
        if isinstance(key, EqRaises):
            return True
        try:
            return hash(key) in self.eq_raises_hashes
        except Exception:
            return False

    @staticmethod
    def same_result(got: Any, expected: Any) -> bool:
        if isinstance(got, tuple) and isinstance(expected, tuple) and len(got) == len(expected):
            return all(same_value(a, b) for a, b in zip(got, expected, strict=True))
        return same_value(got, expected)

    def note_key(self, key: Any) -> None:
        if isinstance(key, EqRaises):
            self.eq_raises_hashes.add(hash(key))

    # -- Go's API ---------------------------------------------------------------------------

    @rule(key=KEYS)
    def load(self, key: Any) -> None:
        self.check(key, lambda: self.map.load(key), lambda d: (d[key], True) if key in d else (None, False))

    @rule(key=KEYS, value=VALUES)
    def store(self, key: Any, value: Any) -> None:
        self.note_key(key)
        self.check(key, lambda: self.map.store(key, value), lambda d: d.__setitem__(key, value))

    @rule(key=KEYS, value=VALUES)
    def setitem(self, key: Any, value: Any) -> None:
        self.note_key(key)

        def on_map() -> None:
            self.map[key] = value

        self.check(key, on_map, lambda d: d.__setitem__(key, value))

    @rule(key=KEYS, value=VALUES)
    def load_or_store(self, key: Any, value: Any) -> None:
        self.note_key(key)

        def on_model(d: dict[Any, Any]) -> tuple[Any, bool]:
            if key in d:
                return d[key], True
            d[key] = value
            return value, False

        self.check(key, lambda: self.map.load_or_store(key, value), on_model)

    @rule(key=KEYS, value=VALUES)
    def setdefault(self, key: Any, value: Any) -> None:
        self.note_key(key)
        self.check(key, lambda: self.map.setdefault(key, value), lambda d: d.setdefault(key, value))

    @rule(key=KEYS)
    def load_and_delete(self, key: Any) -> None:
        self.check(
            key,
            lambda: self.map.load_and_delete(key),
            lambda d: (dict_pop(d, key), True) if key in d else (None, False),
        )

    @rule(key=KEYS)
    def delete(self, key: Any) -> None:
        def on_model(d: dict[Any, Any]) -> None:
            dict_pop(d, key, None)

        self.check(key, lambda: self.map.delete(key), on_model)

    @rule(key=KEYS, value=VALUES)
    def swap(self, key: Any, value: Any) -> None:
        self.note_key(key)

        def on_model(d: dict[Any, Any]) -> tuple[Any, bool]:
            previous = (d[key], True) if key in d else (None, False)
            d[key] = value
            return previous

        self.check(key, lambda: self.map.swap(key, value), on_model)

    @rule(key=KEYS, old=VALUES, new=VALUES)
    def compare_and_swap(self, key: Any, old: Any, new: Any) -> None:
        def on_model(d: dict[Any, Any]) -> bool:
            if key in d and same_value(d[key], old):
                d[key] = new
                return True
            return False

        self.check(key, lambda: self.map.compare_and_swap(key, old, new), on_model)

    @rule(key=KEYS, old=VALUES)
    def compare_and_delete(self, key: Any, old: Any) -> None:
        def on_model(d: dict[Any, Any]) -> bool:
            if key in d and same_value(d[key], old):
                del d[key]
                return True
            return False

        self.check(key, lambda: self.map.compare_and_delete(key, old), on_model)

    @rule(stop_after=st.integers(0, 4))
    def range(self, stop_after: int) -> None:
        seen: list[tuple[Any, Any]] = []

        def fn(k: Any, v: Any) -> bool:
            seen.append((k, v))
            return len(seen) < stop_after

        self.check(None, lambda: self.map.range(fn), lambda d: None)
        assert len(seen) == min(max(stop_after, 1), len(self.model))
        for k, v in seen:
            assert k in self.model and same_value(self.model[k], v)

    @rule()
    def clear(self) -> None:
        self.check(None, self.map.clear, lambda d: d.clear())

    # -- the MutableMapping protocol ------------------------------------------------------

    @rule(key=KEYS)
    def getitem(self, key: Any) -> None:
        self.check(key, lambda: self.map[key], lambda d: d[key])

    @rule(key=KEYS, default=VALUES)
    def get(self, key: Any, default: Any) -> None:
        self.check(key, lambda: self.map.get(key, default), lambda d: d.get(key, default))

    @rule(key=KEYS)
    def contains(self, key: Any) -> None:
        self.check(key, lambda: key in self.map, lambda d: key in d)

    @rule(key=KEYS)
    def delitem(self, key: Any) -> None:
        def on_map() -> None:
            del self.map[key]

        self.check(key, on_map, lambda d: d.__delitem__(key))

    @rule(key=KEYS, default=st.one_of(st.none(), VALUES))
    def pop(self, key: Any, default: Any) -> None:
        if default is None:
            self.check(key, lambda: self.map.pop(key), lambda d: dict_pop(d, key))
        else:
            self.check(key, lambda: self.map.pop(key, default), lambda d: dict_pop(d, key, default))

    @rule()
    def popitem(self) -> None:
        got = self.check(
            None, self.map.popitem, lambda d: None if d else d.popitem(), compare=lambda g, e: None
        )
        if got is not _NO_RESULT:
            key, value = got
            assert key in self.model and same_value(self.model[key], value)
            del self.model[key]

    @rule(items=st.dictionaries(st.sampled_from(["a", "b", 1, 2.0, (0,)]), VALUES, max_size=3))
    def update(self, items: dict[Any, Any]) -> None:
        # A sequence of stores, not one atomic change: one refused by the re-entrancy rule
        # (or raising on a lingering EqRaises) stops it after a prefix of the items.
        HOOKS.side_effect = False
        HOOKS.armed = True
        try:
            self.map.update(items)
            error: Exception | None = None
        except (RecursiveUpdateError, HostileError) as caught:
            error = caught
        finally:
            HOOKS.armed = False
        if HOOKS.side_effect:
            self.model["side"] = 1
        pairs = list(items.items())
        if error is None:
            self.model.update(pairs)
            return
        assert isinstance(error, RecursiveUpdateError) or any(
            self.may_collide_with_eq_raises(k) for k in items
        )
        content = dict(self.map.items())
        for n in range(len(pairs)):
            if {**self.model, **dict(pairs[:n])} == content:
                self.model.update(pairs[:n])
                return
        raise AssertionError(f"update raised {error!r} after storing no prefix of {pairs}")

    @rule()
    def len_and_bool(self) -> None:
        self.check(None, lambda: (len(self.map), bool(self.map)), lambda d: (len(d), bool(d)))

    @rule()
    def views(self) -> None:
        def compare(got: Any, expected: Any) -> None:
            keys, items, values_ = got
            assert len(keys) == len(expected) and all(k in expected for k in keys)
            assert all(k in expected and same_value(expected[k], v) for k, v in items)
            assert len(items) == len(expected)
            assert Counter(map(repr, values_)) == Counter(map(repr, expected.values()))

        self.check(
            None,
            lambda: (list(self.map), list(self.map.items()), list(self.map.values())),
            dict,
            compare=compare,
        )

    @rule()
    def copy_and_equality(self) -> None:
        # Hooks disarmed: copying hashes every key, into another map.
        copy = self.map.copy()
        assert isinstance(copy, SyncMap) and copy == self.model and self.map == copy
        assert self.map != {**self.model, ("not", "there"): 0}

    # -- the promotion machinery --------------------------------------------------------------

    @rule(n=st.integers(1, 40))
    def misses(self, n: int) -> None:
        """Loads of absent keys: each counts a miss once the map is amended; enough of them promote."""
        for i in range(n):
            assert self.map.load(("absent", i)) == (None, False)

    @rule()
    def promote(self) -> None:
        list(self.map)
        assert not self.map.stats().amended

    # -- after every step --------------------------------------------------------------------

    @invariant()
    def consistent(self) -> None:
        check_invariants(self.map)
        assert dict(self.map.items()) == self.model  # NaN: one object, equal to itself by identity
        assert len(self.map) == len(self.model)


SETTINGS = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_sync_map_behaves_as_a_dict() -> None:
    # On another thread with a timeout: a deadlock fails this test instead of hanging the run.
    within(600, lambda: run_state_machine_as_test(SyncMapModel, settings=SETTINGS))
