"""ftmap._base.dict_get: dict.get's exact answers, without 3.13t's critical section.

The pure maps read their shared dicts through dict_get. On free-threaded 3.13 it is a
subscript (dict.get there parks a thread that reads another thread's objects), elsewhere
dict.get itself; both must answer, raise and run a key's hooks exactly as dict.get does,
and a miss must keep nothing alive.
"""

from __future__ import annotations

import gc
import sys
import sysconfig
import weakref
from typing import Any

import pytest

from ftmap import _base
from ftmap._base import DICT_GET_PARKS, dict_get
from tests.threads import within

GETTERS = {"dict_get": dict_get, "by_subscript": _base._get_by_subscript}


@pytest.fixture(params=list(GETTERS))
def get(request: pytest.FixtureRequest) -> Any:
    return GETTERS[request.param]


class Counted:
    """A key that counts its __hash__ and __eq__ calls, equal to others with the same name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.hashes = 0
        self.eqs = 0

    def __hash__(self) -> int:
        self.hashes += 1
        return hash(self.name)

    def __eq__(self, other: object) -> bool:
        self.eqs += 1
        return isinstance(other, Counted) and other.name == self.name


class HashKeyError:
    def __init__(self, reuse_self: bool) -> None:
        self.reuse_self = reuse_self

    def __hash__(self) -> int:
        raise KeyError(self if self.reuse_self else "refused")

    def __repr__(self) -> str:
        return f"HashKeyError({self.reuse_self})"


class EqKeyError:
    def __hash__(self) -> int:
        return hash("a")

    def __eq__(self, other: object) -> bool:
        raise KeyError(self)

    def __repr__(self) -> str:
        return "EqKeyError()"


def outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "returned", fn(*args)
    except Exception as error:
        return "raised", (type(error), error.args if not isinstance(error, TypeError) else None)


def test_the_selection() -> None:
    parks = bool(sysconfig.get_config_var("Py_GIL_DISABLED")) and sys.version_info < (3, 14)
    assert parks == DICT_GET_PARKS
    assert (dict_get is _base._get_by_subscript) == parks
    assert (dict_get is dict.get) == (not parks)


@pytest.mark.parametrize(
    "args",
    [
        ("a",),
        ("zz",),
        ("zz", 7),
        ("a", 7),
        ("n",),  # stored value None
        (1,),
        (1.0,),
        ([],),
        (HashKeyError(True),),
        (HashKeyError(False),),
        (EqKeyError(),),
    ],
    ids=repr,
)
def test_the_same_answers_and_exceptions_as_dict_get(get: Any, args: tuple[Any, ...]) -> None:
    d: dict[Any, Any] = {"a": 1, "n": None, 1: "one"}
    assert outcome(get, d, *args) == outcome(dict.get, d, *args)
    assert d == {"a": 1, "n": None, 1: "one"}


def test_a_keys_hooks_run_as_often_as_under_dict_get(get: Any) -> None:
    stored = Counted("k")
    d = {stored: 1}
    for name in ("k", "absent"):
        probe, reference = Counted(name), Counted(name)
        assert get(d, probe, 0) == dict.get(d, reference, 0)
        assert (probe.hashes, probe.eqs) == (reference.hashes, reference.eqs)


def test_a_miss_keeps_nothing_alive(get: Any) -> None:
    class Key:
        pass

    class Holder(dict):  # type: ignore[type-arg]  # a dict that can be weakly referenced
        pass

    key, d = Key(), Holder()
    alive_key, alive_dict = weakref.ref(key), weakref.ref(d)
    gc.disable()  # freed by reference counting alone: no cycle through a traceback
    try:
        assert get(d, key, 5) == 5
        del key, d
        assert alive_key() is None, "a miss kept its key alive"
        assert alive_dict() is None, "a miss kept its dict alive"
    finally:
        gc.enable()


def test_from_another_thread_the_same_answers(get: Any) -> None:
    d = {"".join(["k", str(i)]): object() for i in range(100)}
    keys = list(d)

    def read() -> list[Any]:
        probes = ["".join(["k", str(i)]) for i in range(100)] + ["absent"]
        return [get(d, k, None) for k in probes]

    assert within(10, read) == [d[k] for k in keys] + [None]
