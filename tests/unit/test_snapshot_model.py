"""SnapshotMap against a model: a plain dict, a version counter and a history (hypothesis, stateful).

Every operation runs on the map and on a copy of the model dict; both must give
the same result or raise the same exception type, a failed write publishes
nothing, and a successful one exactly one version. After every step: the same
keys (the very same key objects, in the same order), the same values (frozen),
version = publishes + 1, the history's versions, every reader current, every
subscriber has seen each version published while it was subscribed, once, in
order, with a correct Change. Keys include tests/hostile.py's (raising
__hash__/__eq__, unhashable, NaN, 1 == 1.0 == True); values include ones whose
== raises; transforms re-enter the map.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from ftmap import Change, RecursiveUpdateError, Snapshot, SnapshotMap, _impl
from ftmap._snapshot import SnapshotMap as PureSnapshotMap
from tests.hostile import HostileError, hostile_keys, plain_keys, values

HISTORY = 4


class ValueEqRaises:
    """A value whose == raises (hashable by identity)."""

    def __eq__(self, other: object) -> bool:
        raise HostileError("value __eq__ refused")

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return "ValueEqRaises()"


def model_values() -> st.SearchStrategy[Any]:
    return st.one_of(values(), st.builds(ValueEqRaises))


def model_freeze(value: Any) -> Any:
    """What freeze makes of the values() strategy's values: lists become tuples."""
    return tuple(model_freeze(v) for v in value) if isinstance(value, list) else value


def same_value(a: Any, b: Any) -> bool:
    return a is b or (type(a) is type(b) and bool(a == b))


def found(snapshot: Snapshot[Any, Any], key: Any) -> bool:
    try:
        return key in snapshot
    except Exception:
        return False


def outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except Exception as error:
        return "raised", type(error)


class SnapshotMapMachine(RuleBasedStateMachine):
    map_class: type[SnapshotMap[Any, Any]] = SnapshotMap  # each implementation in turn (below)

    def __init__(self) -> None:
        super().__init__()
        self.map: SnapshotMap[Any, Any] = self.map_class(history=HISTORY)
        self.model: dict[Any, Any] = {}
        self.version = 1
        self.contents: dict[int, dict[Any, Any]] = {1: {}}  # every version's content
        self.reader = self.map.reader()
        # [records, unsubscribe function, first version expected, last version expected or None]
        self.subscriptions: list[list[Any]] = []

    # -- the comparison of one operation -------------------------------------------------

    def apply(
        self, on_map: Callable[[], Any], on_model: Callable[[dict[Any, Any]], Any], publishes: Any
    ) -> None:
        """Run the operation on the map and on a copy of the model; publishes(result) says
        whether a successful run publishes a version."""
        work = dict(self.model)
        expected = outcome(lambda: on_model(work))
        got = outcome(on_map)
        if expected[0] == "raised":
            assert got == expected, f"model raised {expected[1].__name__}, map gave {got}"
            assert self.map.version == self.version, "a failed write published"
            return
        assert got[0] == "ok", f"map raised {got[1].__name__}, model returned {expected[1]!r}"
        assert same_value(got[1], expected[1]) or got[1] == expected[1], (got[1], expected[1])
        if publishes(expected[1]):
            self.publish(work)
        assert self.map.version == self.version

    def publish(self, content: dict[Any, Any]) -> None:
        self.model = content
        self.version += 1
        self.contents[self.version] = dict(content)

    def history(self) -> list[int]:
        return list(range(max(1, self.version - HISTORY + 1), self.version + 1))

    # -- writes ---------------------------------------------------------------------------------

    @rule(key=hostile_keys(), value=model_values())
    def set(self, key: Any, value: Any) -> None:
        def on_model(d: dict[Any, Any]) -> None:
            d[key] = model_freeze(value)

        self.apply(lambda: self.map.__setitem__(key, value), on_model, lambda _: True)

    @rule(key=hostile_keys())
    def delete(self, key: Any) -> None:
        def on_model(d: dict[Any, Any]) -> None:
            del d[key]

        self.apply(lambda: self.map.__delitem__(key), on_model, lambda _: True)

    @rule(key=hostile_keys(), with_default=st.booleans())
    def pop(self, key: Any, with_default: bool) -> None:
        default = ("default",)
        args = (key, default) if with_default else (key,)
        self.apply(lambda: self.map.pop(*args), lambda d: d.pop(*args), lambda result: result is not default)

    @rule()
    def popitem(self) -> None:
        self.apply(self.map.popitem, lambda d: d.popitem(), lambda _: True)

    @rule(key=hostile_keys(), value=model_values())
    def setdefault(self, key: Any, value: Any) -> None:
        present = outcome(lambda: key in self.model) == ("ok", True)
        self.apply(
            lambda: self.map.setdefault(key, value),
            lambda d: d.setdefault(key, model_freeze(value)),
            lambda _: not present,
        )

    @rule(pairs=st.lists(st.tuples(hostile_keys(), model_values()), max_size=4))
    def update(self, pairs: list[tuple[Any, Any]]) -> None:
        # The batch is built first (as dict(pairs)), then merged: one version.
        self.apply(
            lambda: self.map.update(pairs),
            lambda d: d.update({k: model_freeze(v) for k, v in dict(pairs).items()}),
            lambda _: True,
        )

    @rule()
    def clear(self) -> None:
        self.apply(self.map.clear, lambda d: d.clear(), lambda _: True)

    @rule(content=st.dictionaries(plain_keys(), model_values(), max_size=5))
    def replace(self, content: dict[Any, Any]) -> None:
        def on_model(d: dict[Any, Any]) -> int:
            d.clear()
            d.update({k: model_freeze(v) for k, v in content.items()})
            return self.version + 1

        self.apply(lambda: self.map.replace(content), on_model, lambda _: True)

    @rule(stale=st.booleans(), content=st.dictionaries(plain_keys(), model_values(), max_size=3))
    def compare_and_replace(self, stale: bool, content: dict[Any, Any]) -> None:
        expected_version = self.version - 1 if stale else self.version

        def on_model(d: dict[Any, Any]) -> bool:
            if stale:
                return False
            d.clear()
            d.update({k: model_freeze(v) for k, v in content.items()})
            return True

        self.apply(lambda: self.map.compare_and_replace(expected_version, content), on_model, bool)

    @rule(back=st.integers(0, HISTORY + 1))
    def rollback(self, back: int) -> None:
        target = self.version - back

        def on_model(d: dict[Any, Any]) -> int:
            if target not in self.history():
                raise ValueError(target)
            d.clear()
            d.update(self.contents[target])
            return self.version + 1

        self.apply(lambda: self.map.rollback(target), on_model, lambda _: True)

    @rule(kind=st.sampled_from(["add", "drop", "identity", "raise", "reenter", "reenter-caught", "reads"]))
    def transform(self, kind: str) -> None:
        m = self.map
        version_before, history_before = self.version, self.history()

        def add(s: dict[Any, Any]) -> dict[Any, Any]:
            return {**s, "t": len(s)}

        def drop(s: dict[Any, Any]) -> dict[Any, Any]:
            return {k: v for k, v in s.items() if type(k) is not int}

        def fail(s: dict[Any, Any]) -> dict[Any, Any]:
            raise HostileError("transform refused")

        def reenter(s: dict[Any, Any]) -> dict[Any, Any]:
            m["inner"] = 1
            return dict(s)

        def reenter_caught(s: dict[Any, Any]) -> dict[Any, Any]:
            try:
                m.pop("t", None)
            except RecursiveUpdateError:
                return {**s, "caught": True}
            raise AssertionError("a write from inside a transform went through")

        def reads(s: dict[Any, Any]) -> dict[Any, Any]:
            assert m.version == version_before and m.history_versions() == history_before
            assert m.snapshot() is s and m.reader().snapshot() is s
            return s

        fn: Callable[[dict[Any, Any]], dict[Any, Any]] = {
            "add": add,
            "drop": drop,
            "identity": dict,
            "raise": fail,
            "reenter": reenter,
            "reenter-caught": reenter_caught,
            "reads": reads,
        }[kind]
        # What each transform does to the model (pure: it never touches the map).
        model_fn: Callable[[dict[Any, Any]], dict[Any, Any]] = {
            "add": add,
            "drop": drop,
            "identity": dict,
            "raise": fail,
            "reenter": lambda s: _raise(RecursiveUpdateError("SnapshotMap", "set", "transform")),
            "reenter-caught": lambda s: {**s, "caught": True},
            "reads": dict,
        }[kind]

        def on_model(d: dict[Any, Any]) -> int:
            result = model_fn(dict(d))
            d.clear()
            d.update(result)
            return self.version + 1

        self.apply(lambda: m.transform(fn), on_model, lambda _: True)

    # -- subscriptions --------------------------------------------------------------------------

    @rule()
    def subscribe(self) -> None:
        records: list[Change] = []
        unsubscribe = self.map.subscribe(records.append)
        self.subscriptions.append([records, unsubscribe, self.version + 1, None])

    @rule(data=st.data())
    def unsubscribe(self, data: st.DataObject) -> None:
        active = [s for s in self.subscriptions if s[3] is None]
        if active:
            chosen = data.draw(st.sampled_from(active))
            chosen[1]()
            chosen[3] = self.version

    # -- reads ------------------------------------------------------------------------------

    @rule(key=hostile_keys())
    def read(self, key: Any) -> None:
        expected = outcome(lambda: self.model[key])
        for read in (lambda: self.map[key], lambda: self.reader[key]):
            got = outcome(read)
            assert got[0] == expected[0] and same_value(got[1], expected[1]), (got, expected)
        expected_get = outcome(lambda: self.model.get(key, "absent"))
        for get in (lambda: self.map.get(key, "absent"), lambda: self.reader.get(key, "absent")):
            got = outcome(get)
            assert got[0] == expected_get[0] and same_value(got[1], expected_get[1]), (got, expected_get)
        expected_in = outcome(lambda: key in self.model)
        assert outcome(lambda: key in self.map) == expected_in == outcome(lambda: key in self.reader)

    # -- after every step -----------------------------------------------------------------------

    @invariant()
    def same_content(self) -> None:
        snapshot = self.map.snapshot()
        assert self.map.version == snapshot.version == self.version
        if type(self.map) is PureSnapshotMap:  # the pure map publishes the snapshot's own get
            assert self.map.get.__self__ is snapshot  # type: ignore[attr-defined]
        got, want = list(snapshot.items()), list(self.model.items())
        assert len(got) == len(want), (got, want)
        for (gk, gv), (wk, wv) in zip(got, want, strict=True):
            assert gk is wk, f"key {gk!r} is not the model's {wk!r}"
            assert same_value(gv, wv), (gk, gv, wv)

    @invariant()
    def history_is_contiguous(self) -> None:
        assert self.map.history_versions() == self.history()

    @invariant()
    def readers_are_current(self) -> None:
        assert len(self.reader) == len(self.model)
        for key, value in self.model.items():
            assert same_value(self.reader[key], value)

    @invariant()
    def subscribers_saw_every_version_once_in_order(self) -> None:
        assert self.map.flush(), "changes left pending"
        for records, _, first, until in self.subscriptions:
            last = self.version if until is None else until
            assert [c.new.version for c in records] == list(range(first, last + 1))
            for change in records:
                assert change.old.version + 1 == change.new.version
                old, new = change.old, change.new
                assert change.added == {k for k in new if not found(old, k)}
                assert change.removed == {k for k in old if not found(new, k)}
                assert change.changed == {
                    k for k in new if found(old, k) and not _same_or_equal(old[k], new[k])
                }


def _same_or_equal(a: Any, b: Any) -> bool:
    try:
        return a is b or bool(a == b)
    except Exception:
        return False


def _raise(error: BaseException) -> Any:
    raise error


@pytest.mark.parallel_threads(1)  # a long single-threaded model run: four copies at once add only time
@pytest.mark.parametrize("implementation", sorted(_impl.variants("SnapshotMap")))
def test_snapshot_map_behaves_as_its_model(implementation: str) -> None:
    machine = type(
        f"SnapshotMapMachine_{implementation}",
        (SnapshotMapMachine,),
        {"map_class": _impl.variants("SnapshotMap")[implementation]},
    )
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=150,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
