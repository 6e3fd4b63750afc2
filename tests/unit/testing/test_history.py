"""History and Recorder: what each call records, for a map and for any object."""

from __future__ import annotations

import threading

import pytest

from ftmap.testing import MISSING, History, Model, Operation, check_linearizable


def test_mapping_protocol_is_recorded_in_the_models_vocabulary() -> None:
    history = History()
    m = history.recorder({}, thread=1)
    m["a"] = None
    assert m["a"] is None and m.get("a", "default") is None and m.get("b", "default") == "default"
    assert "a" in m and "b" not in m
    with pytest.raises(KeyError):
        m["b"]
    assert m.pop("b", 0) == 0 and m.pop("a") is None
    with pytest.raises(KeyError):
        del m["a"]
    names = [(op.name, op.args, op.result) for op in history]
    assert names[:4] == [
        ("set", ("a", None), None),
        ("get", ("a",), None),
        ("get", ("a",), None),
        ("get", ("b",), MISSING),
    ]
    assert [op.name for op in history][4:] == ["contains", "contains", "get", "pop", "pop", "delete"]
    assert isinstance(history.operations[6].error, KeyError) and history.operations[7].result is MISSING
    assert all(op.thread == 1 and op.call <= op.ret for op in history)
    assert check_linearizable(history).ok


def test_methods_are_recorded_under_their_names_and_errors_are_kept() -> None:
    class Counter:
        value = 0

        def add(self, n: int) -> int:
            if n < 0:
                raise ValueError("negative")
            self.value += n
            return self.value

    history = History()
    counter = history.recorder(Counter())
    assert counter.add(2) == 2
    with pytest.raises(ValueError):
        counter.add(-1)
    assert counter.value == 2  # attributes pass through, unrecorded
    first, second = history.operations
    assert (first.name, first.args, first.result, first.error) == ("add", (2,), 2, None)
    assert second.name == "add" and isinstance(second.error, ValueError)
    assert first.thread == threading.get_ident()
    assert "raised ValueError('negative')" in second.describe()


class CounterModel(Model[int]):
    """A user-defined model: add(n) returns the new total."""

    def init(self) -> int:
        return 0

    def step(self, state: int, op: Operation) -> tuple[bool, int]:
        after = state + op.args[0]
        return op.result == after, after


def test_a_user_defined_model_without_partitions() -> None:
    ok = [Operation(0, "add", (1,), 1, 0, 10), Operation(1, "add", (2,), 3, 0, 10)]
    assert check_linearizable(ok, CounterModel()).ok
    lost = [Operation(0, "add", (1,), 1, 0, 10), Operation(1, "add", (2,), 2, 0, 10)]
    result = check_linearizable(lost, CounterModel())
    assert result.status == "illegal" and len(result.failing) == 2


def test_any_object_with_init_and_step_is_a_model() -> None:
    class Register:
        def init(self) -> int:
            return 0

        def step(self, state: int, op: Operation) -> tuple[bool, int]:
            return (True, op.args[0]) if op.name == "write" else (op.result == state, state)

    history = [Operation(0, "write", (5,), None, 0, 1), Operation(1, "read", (), 5, 2, 3)]
    assert check_linearizable(history, Register()).ok


def test_a_key_error_is_legal_only_for_an_absent_key() -> None:
    missing = KeyError("k")
    absent = [Operation(0, "get", ("k",), None, 0, 1, missing)]
    assert check_linearizable(absent).ok
    present = [Operation(0, "set", ("k", 1), None, 0, 1), Operation(0, "get", ("k",), None, 2, 3, missing)]
    assert check_linearizable(present).status == "illegal"
    other_error = [Operation(0, "get", ("k",), None, 0, 1, ValueError())]
    assert check_linearizable(other_error).status == "illegal"


def test_the_search_gives_up_with_unknown_when_time_runs_out() -> None:
    # 15 concurrent writes and a read of a value none wrote: every order of writes is tried.
    history = [Operation(i, "set", ("k", i), None, 0, 10) for i in range(15)]
    history.append(Operation(99, "get", ("k",), 999, 0, 10))
    assert check_linearizable(history, timeout=0.0).status == "unknown"
    assert check_linearizable(history, timeout=60).status == "illegal"
