"""Keys and values a hostile user would pass: for model-based and regression tests of every map.

Each class raises or calls back from exactly one hook, so a test says which
hook misbehaves. ``HostileError`` is what they raise: an Exception, so the
maps must pass it through to the caller and stay consistent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

__all__ = [
    "NAN",
    "CallbackKey",
    "EqRaises",
    "HashRaises",
    "HostileError",
    "hostile_keys",
    "plain_keys",
    "values",
]

NAN = math.nan  # one NaN object: equal to itself by identity only


class HostileError(Exception):
    """Raised on purpose by a hostile key or value."""


class HashRaises:
    """A key whose ``__hash__`` raises: the map must raise HostileError and stay unchanged."""

    def __hash__(self) -> int:
        raise HostileError("__hash__ refused")

    def __repr__(self) -> str:
        return "HashRaises()"


class EqRaises:
    """A key that hashes like ``target`` and whose ``__eq__`` raises when compared with anything else.

    Two of these with the same ``target`` collide, so a lookup of one where the other
    is stored runs the raising ``__eq__``.
    """

    def __init__(self, target: int = 0) -> None:
        self.target = target

    def __hash__(self) -> int:
        return hash(self.target)

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        raise HostileError("__eq__ refused")

    def __repr__(self) -> str:
        return f"EqRaises({self.target})"


class CallbackKey:
    """A key whose ``__hash__`` (and, on a collision, ``__eq__``) first calls ``callback()``.

    The callback is where a test makes the key re-enter the map under test: read
    it, write it, iterate it. Equal to another CallbackKey with the same ``name``.
    """

    def __init__(self, name: str, callback: Callable[[], Any], *, on_hash: bool = True) -> None:
        self.name = name
        self.callback = callback
        self.on_hash = on_hash

    def __hash__(self) -> int:
        if self.on_hash:
            self.callback()
        return hash(self.name)

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        self.callback()
        return isinstance(other, CallbackKey) and other.name == self.name

    def __repr__(self) -> str:
        return f"CallbackKey({self.name!r})"


def plain_keys() -> st.SearchStrategy[Any]:
    """A small pool of ordinary keys, so that operations often meet the same key; NaN included."""
    return st.one_of(
        st.integers(min_value=-3, max_value=8),
        st.sampled_from(["a", "b", "c", "ab", ""]),
        st.just(NAN),
        st.just(1.0),  # == 1 and hashes like it: the same key as the int 1
        st.just(True),  # == 1 as well
        st.tuples(st.integers(0, 2)),
    )


def hostile_keys() -> st.SearchStrategy[Any]:
    """plain_keys, plus keys whose __hash__ or __eq__ raises, and unhashable ones."""
    return st.one_of(
        plain_keys(),
        st.builds(HashRaises),
        st.builds(EqRaises, st.integers(0, 2)),
        st.just([]),  # unhashable
    )


def values() -> st.SearchStrategy[Any]:
    """Values to store: None is a value like any other; NaN is not equal to itself."""
    return st.one_of(
        st.integers(-2, 5), st.none(), st.just(NAN), st.text(max_size=2), st.lists(st.integers(), max_size=2)
    )
